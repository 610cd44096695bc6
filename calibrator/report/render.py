"""Render a run folder (run.json + predictions.csv) as one self-contained HTML page, and a folder of runs as
an index with a trend per component. No network: styles, the small sorting script and SVG charts are inline.
"""

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from calibrator.prompt import write_atomic
from calibrator.report import view

_env = Environment(loader=PackageLoader("calibrator.report", "templates"), autoescape=select_autoescape(default=True),
                   undefined=StrictUndefined)
_env.filters["num"] = lambda v, digits=2: "–" if v is None else f"{v:.{digits}f}"


def render_run(record: dict[str, Any], rows: list[dict[str, str]]) -> str:
    component, side = record["component"], view.predicted_side(record)
    sides = [s for s in ("baseline", "calibrated") if record.get(s)]
    focus = view.focus_rows(record, rows)
    metric_rows = [(s, split, view.numbers(record, s, split, component)) for s in sides for split in record[s]]
    pf = {f"{s}.{split}": view.Number(path=f"{s}.{split}.parse_failure_rate", value=record[s][split]["parse_failure_rate"])
          for s in sides for split in record[s]}
    counts = {f"{s}.{split}": view.counts(record, s, split, component) for s in sides for split in record[s]}
    split = view.focus_split(record)
    verdict = (record.get("comparison") or {}).get("verdict", "")
    prompts = record["prompt"]
    diff = view.word_diff(prompts["baseline"]["instructions"], prompts["calibrated"]["instructions"]) if "calibrated" in prompts else None
    return _env.get_template("run.html").render(
        r=record, goldset_name=Path(record["goldset"]["path"]).name, banners=view.banners(record),
        verdict_class={"worse": "worse", "improved": ""}.get(verdict, "flat" if record["kind"] == "run" else ""),
        metric_titles=[t for _, t in view.METRICS[component]], metric_rows=metric_rows, pf=pf,
        count_titles=[t for _, t in view.COUNTS[component]], counts=counts, format_choice=view.format_choice(record),
        human=view.Number(path="goldset.human_qwk", value=record["goldset"].get("human_qwk")),
        focus="the test split",
        confusions=[(s, *view.confusion(focus, component, s)) for s in sides],
        per_field=[(s, record[s][split]["per_field"]) for s in sides if "per_field" in record[s].get(split, {})],
        charts=view.trajectory(record), diff=diff, side=side,
        disagreements=view.disagreements(record, rows),
        gold_labels=view.GRADER_LABELS if component == "grader" else view.DECISIONS,
    )


def write_report(run_dir: Path) -> Path:
    """(Re)write `run_dir/index.html` from the folder's run.json and predictions.csv."""
    from calibrator.runs import RunRecord  # runs renders through this module; import here to keep one direction

    record = RunRecord.model_validate_json((run_dir / "run.json").read_text(encoding="utf-8")).model_dump(mode="json")
    rows = view.read_predictions(run_dir / "predictions.csv")
    target = run_dir / "index.html"
    write_atomic(target, render_run(record, rows))
    return target


def headline(record: dict[str, Any]) -> dict[str, Any]:
    """The figure a run is remembered by: the judged prompt's main metric on the held-out split."""
    metric = view.MAIN_METRIC[record["component"]]
    scores = record[view.predicted_side(record)].get(view.focus_split(record))
    if scores is None:
        return {"metric": metric, "value": None, "ci": [None, None], "n": 0}
    return {"metric": metric, "value": scores[metric], "ci": scores[f"{metric}_ci"], "n": scores["n"]}


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
        trends.append({"component": component, "metric": view.MAIN_METRIC[component], "runs": mine,
                       "svg": view.svg_series(values, values)})
    target = out / "index.html"
    write_atomic(target, _env.get_template("index.html").render(runs=list(reversed(runs)), trends=trends))
    return target
