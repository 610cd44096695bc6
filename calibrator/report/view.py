"""What a run report shows, computed from run.json and predictions.csv alone (so any run folder re-renders).

Numbers are passed to the template with the run.json path they come from, and the page carries
that path and the exact value beside the rounded figure: a test checks each against run.json.
Confusion counts are recomputed from predictions.csv, not copied, so the two files cross-check.
"""

import difflib
import re
from typing import Any

from pydantic import BaseModel

from calibrator.calibration import disagreements as core_disagreements
from calibrator.components import COMPONENTS, Component, Disagreement
from calibrator.components.base import Strong
from calibrator.calibration.floor import standing
from calibrator.agreement.metrics import PairedComparison
from calibrator.calibration.record import judged_side

MIN_TEST = 10
MAX_PARSE_FAILURES = 0.05


class Number(BaseModel):
    path: str
    value: float | None


def get_path(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


class ScoreRow(BaseModel):
    """One row of the metrics table: a prompt (or a floor) on one split, and where its scores sit in run.json."""

    label: str
    path: str
    scores: dict[str, Any]


def score_rows(record: dict[str, Any]) -> list[ScoreRow]:
    """Baseline and calibrated per split, then every model-free floor per split (the chosen one marked)."""
    rows = [ScoreRow(label=f"{side} · {split}", path=f"{side}.{split}", scores=scores)
            for side in ("baseline", "calibrated") for split, scores in (record.get(side) or {}).items()]
    for name, floor in (record.get("floors") or {}).items():
        chosen = "" if name != record.get("floor") else " (chosen on val)" if "val" in floor["scores"] else " (compared: no val rows)"
        rows += [ScoreRow(label=f"floor: {name}{chosen} · {split}", path=f"floors.{name}.scores.{split}", scores=scores)
                 for split, scores in floor["scores"].items()]
    return rows


def numbers(row: ScoreRow, component: Component) -> list[tuple[str, Number, Number, Number]]:
    out = []
    for key, title in component.report_metrics:
        base, ci = f"{row.path}.{key}", row.scores[f"{key}_ci"] or (None, None)  # no CI: nothing to score (no gold format_score)
        out.append((title, Number(path=base, value=row.scores[key]), Number(path=f"{base}_ci.0", value=ci[0]),
                    Number(path=f"{base}_ci.1", value=ci[1])))
    return out


def counts(row: ScoreRow, component: Component) -> list[Number]:
    return [Number(path=f"{row.path}.{key}", value=row.scores[key]) for key, _ in component.report_counts]


def floor_banner(record: dict[str, Any]) -> str | None:
    """When the judged prompt does no better than the model-free floor on test: say so, and what to do."""
    comparison = record.get("floor_comparison")
    if not comparison or comparison["verdict"] == "too few examples" or standing(PairedComparison(**comparison)) not in ("below", "does not beat"):
        return None
    return (f"The LM does no better than a predictor with no LM at all: {record['floor_sentence']}. A better prompt cannot fix a "
            f"model below this floor.")


def component_note(record: dict[str, Any], component: Component) -> list[dict[str, Any] | Number] | None:
    """The component's paragraph under the metrics: text pieces (bold or not), and its (path, value) figures as Numbers the
    page carries with their path."""
    note = component.report_note(record)
    if note is None:
        return None
    return [{"text": str(p), "strong": isinstance(p, Strong)} if isinstance(p, str) else Number(path=p[0], value=p[1]) for p in note]


def focus_split(record: dict[str, Any]) -> str:
    """The held-out split a run or an eval is judged on: test, never all rows (train and val shaped the prompt)."""
    return "test"


def banners(record: dict[str, Any]) -> list[str]:
    out = []
    split = focus_split(record)
    n = record["baseline"].get(split, {}).get("n", 0)
    if n < MIN_TEST:
        out.append(f"Only {n} held-out examples: too few for any verdict. Add gold rows before trusting this run.")
    floor = floor_banner(record)
    if floor:
        out.append(floor)
    out += record.get("warnings", [])
    for side in ("baseline", "calibrated"):
        for name, scores in (record.get(side) or {}).items():
            if scores["parse_failure_rate"] > MAX_PARSE_FAILURES:
                out.append(f"{side} · {name}: {scores['parse_failure_rate']:.0%} of answers did not parse (over 5%): "
                           f"the scores measure the format as much as the judgement.")
    return out


def prediction_sides(record: dict[str, Any], rows: list[dict[str, str]]) -> list[str]:
    """The prediction column sets of predictions.csv: baseline, calibrated, and the chosen floor's when it is there."""
    sides = [s for s in ("baseline", "calibrated") if record.get(s)]
    return sides + (["floor"] if rows and "floor_error" in rows[0] else [])


def confusion(rows: list[dict[str, str]], component: Component, side: str) -> tuple[tuple[str, ...], list[list[int]]]:
    """Gold x predicted counts from predictions.csv, with an `unparsed` column so each row sums to its gold count."""
    labels = component.confusion_labels
    suffix = f"_{component.confusion_column}" if component.confusion_column else ""
    table = [[0] * (len(labels) + 1) for _ in labels]
    for row in rows:
        g = labels.index(component.confusion_label(row[f"gold{suffix}"]))
        p = row[f"{side}{suffix}"]
        table[g][labels.index(component.confusion_label(p)) if p != "" else len(labels)] += 1
    return labels, table


def focus_rows(record: dict[str, Any], rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["split"] == focus_split(record)]


def disagreements(record: dict[str, Any], rows: list[dict[str, str]], side: str | None = None) -> list[Disagreement]:
    """The judged prompt's disagreements on the held-out split, largest error first (computed by the core)."""
    component = COMPONENTS[record["component"]]
    return core_disagreements.disagreements(component, rows, side or judged_side(record), splits=(focus_split(record),))


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """(op, text) runs: ' ' same, '-' removed, '+' added; whitespace kept so the page reads like the prompt."""
    a, b = re.split(r"(\s+)", before), re.split(r"(\s+)", after)
    out: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append((" ", "".join(a[i1:i2])))
        if op in ("delete", "replace"):
            out.append(("-", "".join(a[i1:i2])))
        if op in ("insert", "replace"):
            out.append(("+", "".join(b[j1:j2])))
    return out


def trajectory(record: dict[str, Any]) -> list[dict[str, Any]]:
    """One chart per trial metric: the points in order and the best score so far."""
    trials = (record.get("optimization") or {}).get("trials", [])
    groups: dict[str, list[dict[str, Any]]] = {}
    for t in trials:
        groups.setdefault(t["metric"], []).append(t)
    charts = []
    for metric, group in groups.items():
        best, line = None, []
        for t in group:
            best = t["score"] if best is None else max(best, t["score"])
            line.append(best)
        charts.append({"metric": metric, "trials": group, "best": line, "svg": svg_series([t["score"] for t in group], line)})
    return charts


def svg_series(points: list[float], best: list[float], width: int = 520, height: int = 160, *, low: float | None = None,
               high: float | None = None) -> dict[str, Any]:
    """Coordinates for an inline SVG: dots for each score, a stepped best-so-far line (`low`/`high`: a shared y range)."""
    finite = [p for p in points if p == p]
    low = min([0.0, *finite]) if low is None else low
    high = max([1.0, *finite]) if high is None else high
    pad = 28

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * (i / max(1, len(points) - 1))

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * ((v - low) / ((high - low) or 1))

    steps = []
    for i, v in enumerate(best):
        if i:
            steps.append(f"{x(i):.1f},{y(best[i - 1]):.1f}")
        steps.append(f"{x(i):.1f},{y(v):.1f}")
    return {"width": width, "height": height, "dots": [(round(x(i), 1), round(y(v), 1), v) for i, v in enumerate(points)],
            "line": " ".join(steps), "low": low, "high": high, "y_low": y(low), "y_high": y(high), "pad": pad}
