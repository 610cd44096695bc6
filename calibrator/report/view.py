"""What a run report shows, computed from run.json and predictions.csv alone (so any run folder re-renders).

Numbers are passed to the template with the run.json path they come from, and the page carries
that path and the exact value beside the rounded figure: a test checks each against run.json.
Confusion counts are recomputed from predictions.csv, not copied, so the two files cross-check.
"""

import csv
import difflib
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from calibrator.components.grader import choose_format_source
from calibrator.items import item_f1

GRADER_LABELS = ("0", "0.5", "1")
DECISIONS = ("continue", "stop")
METRICS = {
    "grader": [("accuracy", "accuracy"), ("qwk", "qwk"), ("mae", "MAE"), ("format_accuracy", "format, LM"),
               ("format_rule_accuracy", "format, rule")],
    "extractor": [("item_precision", "item precision"), ("item_recall", "item recall"), ("item_f1", "item F1"),
                  ("decision_accuracy", "decision accuracy")],
}
COUNTS = {"grader": [("format_n", "format rows")], "extractor": []}  # beside n: rows a metric is computed over
MAIN_METRIC = {"grader": "qwk", "extractor": "item_f1"}
MIN_TEST = 10
MAX_PARSE_FAILURES = 0.05


class Number(BaseModel):
    path: str
    value: float | None


class Disagreement(BaseModel):
    id: str
    gold: str
    predicted: str
    error: float
    context: str
    shown: dict[str, str]  # other inputs and outputs worth reading, by column title
    note: str = ""


def read_predictions(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: _untext(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _untext(value: str | None) -> str:
    """predictions.csv guards cells that would start a formula with a leading quote; show the real text."""
    value = value or ""
    return value[1:] if value[:1] == "'" and value[1:2] in ("=", "+", "-", "@") else value


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


def numbers(row: ScoreRow, component: str) -> list[tuple[str, Number, Number, Number]]:
    out = []
    for key, title in METRICS[component]:
        base, ci = f"{row.path}.{key}", row.scores[f"{key}_ci"] or (None, None)  # no CI: nothing to score (no gold format_score)
        out.append((title, Number(path=base, value=row.scores[key]), Number(path=f"{base}_ci.0", value=ci[0]),
                    Number(path=f"{base}_ci.1", value=ci[1])))
    return out


def counts(row: ScoreRow, component: str) -> list[Number]:
    return [Number(path=f"{row.path}.{key}", value=row.scores[key]) for key, _ in COUNTS[component]]


def floor_banner(record: dict[str, Any]) -> str | None:
    """When the judged prompt does no better than the model-free floor on test: say so, and what to do."""
    comparison = record.get("floor_comparison")
    if not comparison or comparison["verdict"] == "too few examples" or comparison["delta"] >= 0 and comparison["verdict"] != "worse":
        return None
    return (f"The LM does no better than a predictor with no LM at all: {record['floor_sentence']}. A better prompt cannot fix a "
            f"model below this floor.")


def format_choice(record: dict[str, Any]) -> dict[str, Any] | None:
    """For a grader run with a calibrated prompt: where the trainer will take its format term from, decided by
    the same function on the same val figures the calibration record keeps."""
    if record["component"] != "grader" or not (record.get("calibrated") or {}).get("val"):
        return None
    choice = choose_format_source(record["calibrated"]["val"])
    if choice.lm_val_accuracy is None or choice.rule_val_accuracy is None:
        return {"source": choice.source, "lm": None, "rule": None}  # no gold format_score on val
    return {"source": choice.source, "lm": Number(path="calibrated.val.format_accuracy", value=choice.lm_val_accuracy),
            "rule": Number(path="calibrated.val.format_rule_accuracy", value=choice.rule_val_accuracy)}


def focus_split(record: dict[str, Any]) -> str:
    """The held-out split a run or an eval is judged on: test, never all rows (train and val shaped the prompt)."""
    return "test"


def predicted_side(record: dict[str, Any]) -> str:
    return "calibrated" if record.get("calibrated") else "baseline"


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


def confusion(rows: list[dict[str, str]], component: str, side: str) -> tuple[tuple[str, ...], list[list[int]]]:
    """Gold x predicted counts from predictions.csv, with an `unparsed` column so each row sums to its gold count."""
    labels = GRADER_LABELS if component == "grader" else DECISIONS
    gold_col, pred_col = ("gold", side) if component == "grader" else ("gold_decision", f"{side}_decision")
    table = [[0] * (len(labels) + 1) for _ in labels]
    for row in rows:
        g = labels.index(_label(row[gold_col], component))
        p = row[pred_col]
        table[g][labels.index(_label(p, component)) if p != "" else len(labels)] += 1
    return labels, table


def _label(value: str, component: str) -> str:
    return f"{float(value):g}" if component == "grader" else value


def focus_rows(record: dict[str, Any], rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [r for r in rows if r["split"] == focus_split(record)]


def disagreements(record: dict[str, Any], rows: list[dict[str, str]], side: str | None = None,
                  held_out_only: bool = True) -> list[Disagreement]:
    """Rows where `side` (default: the judged prompt) differs from gold, largest error first."""
    component, side = record["component"], side or predicted_side(record)
    out = []
    for row in focus_rows(record, rows) if held_out_only else rows:
        error = row.get(f"{side}_error", "")
        if component == "grader":
            gold, pred = row["gold"], row[side]
            if pred != "" and float(pred) == float(gold):
                continue
            size = 1.0 if pred == "" else abs(float(pred) - float(gold))
            shown = {"target info": row.get("target_info", ""), "candidate": row.get("candidate", ""),
                     "format gold / predicted": f"{row.get('gold_format') or '–'} / {row.get(side + '_format') or '–'}"}
            out.append(Disagreement(id=row["id"], gold=gold, predicted=pred or "unparsed", error=size, context=row.get("context", ""),
                                    shown=shown, note=error))
        else:
            gold_items = [i for i in row["gold_items"].split("; ") if i]
            pred_items = [i for i in row[f"{side}_items"].split("; ") if i]
            decision_ok = row[f"{side}_decision"] == row["gold_decision"]
            f1 = item_f1(gold_items, pred_items)
            if decision_ok and f1 == 1.0:
                continue
            size = 1.0 - (0.5 * decision_ok + 0.5 * f1)
            shown = {"future": row.get("future", ""), "gold items": row["gold_items"] or "(none)",
                     "predicted items": row[f"{side}_items"] or "(none)"}
            out.append(Disagreement(id=row["id"], gold=row["gold_decision"], predicted=row[f"{side}_decision"] or "unparsed",
                                    error=round(size, 3), context=row.get("context", ""), shown=shown, note=error))
    return sorted(out, key=lambda d: -d.error)


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
