"""Render a run folder (run.json + predictions.csv) as one self-contained HTML page, and a folder of runs as
an index with a trend per component. No network: styles, the small sorting script and SVG charts are inline.
"""

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from calibrator.components import COMPONENTS
from calibrator.calibration.disagreements import read_predictions
from calibrator.calibration.floor import standing
from calibrator.agreement.metrics import PairedComparison
from calibrator.prompt import write_atomic
from calibrator.calibration.record import RunRecord, judged_side
from calibrator.report import view

_env = Environment(loader=PackageLoader("calibrator.report", "templates"), autoescape=select_autoescape(default=True),
                   undefined=StrictUndefined)
_env.filters["num"] = lambda v, digits=2: "–" if v is None else f"{v:.{digits}f}"


def render_run(record: dict[str, Any], rows: list[dict[str, str]]) -> str:
    component, side = COMPONENTS[record["component"]], judged_side(record)
    sides = [s for s in ("baseline", "calibrated") if record.get(s)]
    focus = view.focus_rows(record, rows)
    score_rows = view.score_rows(record)
    metric_rows = [(row, view.numbers(row, component)) for row in score_rows]
    pf = {row.path: view.Number(path=f"{row.path}.parse_failure_rate", value=row.scores["parse_failure_rate"]) for row in score_rows}
    counts = {row.path: view.counts(row, component) for row in score_rows}
    floor_label = f"floor: {record['floor']}" if record.get("floor") else "floor"
    split = view.focus_split(record)
    verdict = (record.get("comparison") or {}).get("verdict", "")
    prompts = record["prompt"]
    diff = view.word_diff(prompts["baseline"]["instructions"], prompts["calibrated"]["instructions"]) if "calibrated" in prompts else None
    return _env.get_template("run.html").render(
        r=record, goldset_name=Path(record["goldset"]["path"]).name, banners=view.banners(record),
        verdict_class={"worse": "worse", "improved": ""}.get(verdict, "flat" if record["kind"] == "run" else ""),
        metric_titles=[t for _, t in component.report_metrics], metric_rows=metric_rows, pf=pf,
        count_titles=[t for _, t in component.report_counts], counts=counts, note=view.component_note(record, component),
        caption=component.report_caption, label_kind=component.label_kind,
        human=view.Number(path="goldset.human_qwk", value=record["goldset"].get("human_qwk")),
        focus="the test split",
        confusions=[(floor_label if s == "floor" else s, *view.confusion(focus, component, s)) for s in view.prediction_sides(record, rows)],
        per_field=[(s, record[s][split]["per_field"]) for s in sides if "per_field" in record[s].get(split, {})],
        charts=view.trajectory(record), diff=diff, side=side,
        disagreements=view.disagreements(record, rows),
        gold_labels=component.confusion_labels,
    )


def write_report(run_dir: Path) -> Path:
    """(Re)write `run_dir/index.html` from the folder's run.json and predictions.csv."""
    record = RunRecord.model_validate_json((run_dir / "run.json").read_text(encoding="utf-8")).model_dump(mode="json")
    rows = read_predictions(run_dir / "predictions.csv")
    target = run_dir / "index.html"
    write_atomic(target, render_run(record, rows))
    return target


def headline(record: dict[str, Any]) -> dict[str, Any]:
    """The figure a run is remembered by: the judged prompt's main metric on the held-out split, and the model-free
    floor's beside it."""
    metric = COMPONENTS[record["component"]].selection_metric
    split = view.focus_split(record)
    scores = record[judged_side(record)].get(split)
    floor = ((record.get("floors") or {}).get(record.get("floor") or "") or {}).get("scores", {}).get(split)
    comparison = record.get("floor_comparison")
    floor_figures = {"floor": floor[metric] if floor else None,
                     "floor_standing": standing(PairedComparison(**comparison)) if comparison else None}
    if scores is None:
        return {"metric": metric, "value": None, "ci": [None, None], "n": 0, **floor_figures}
    return {"metric": metric, "value": scores[metric], "ci": scores[f"{metric}_ci"], "n": scores["n"], **floor_figures}


def write_index(out: Path) -> Path:
    """`out/index.html`: one row per finished run folder, newest first, and a trend chart per component."""
    runs = []
    for path in sorted(out.glob("*/run.json")):
        if path.parent.name.startswith("."):
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            runs.append({"folder": path.parent.name, "r": record, "h": headline(record)})
        except (OSError, ValueError, KeyError):
            continue  # a folder from an older or foreign tool: listed nowhere rather than breaking the index
    runs.sort(key=lambda run: run["r"]["created"])
    trends = []
    for component in sorted({run["r"]["component"] for run in runs}):
        mine = [run for run in runs if run["r"]["component"] == component and run["h"]["value"] is not None]
        values = [run["h"]["value"] for run in mine]
        floors = [run["h"]["floor"] for run in mine]
        known = [v for v in values + floors if v is not None]
        low, high = min([0.0, *known]), max([1.0, *known])  # one y range for the prompt and the floor
        svg = view.svg_series(values, values, low=low, high=high)
        floor_dots = view.svg_series([float("nan") if f is None else f for f in floors], values, low=low, high=high)["dots"]
        svg["floor"] = [dot for dot in floor_dots if dot[2] == dot[2]]  # runs without a floor (older records) have none
        trends.append({"component": component, "metric": COMPONENTS[component].selection_metric, "runs": mine, "svg": svg})
    target = out / "index.html"
    write_atomic(target, _env.get_template("index.html").render(runs=list(reversed(runs)), trends=trends))
    return target
