"""The model-free floor of a run: the component's reference predictors, fitted on train only, scored on val and test,
the best on val compared with the judged prompt on test.

A prompt's agreement means little on its own: qwk 0.16 is a success if nothing model-free does better and a failure
if a few lines of embedding arithmetic reach 0.4. The floor tells a bad prompt from a model below any useful floor.
"""

from typing import Any, Literal

from pydantic import BaseModel

from calibrator.components import Component, Prediction
from calibrator.gold.goldset import GoldRow
from calibrator.agreement.metrics import Interval, PairedComparison

FLOOR_ADVICE = "use a stronger --lm, add gold rows, or check the label balance"
Standing = Literal["beats", "below", "does not beat", "level"]


def standing(comparison: PairedComparison) -> Standing:
    """Where the judged prompt stands against the floor on test: the paired verdict, and the sign of the gap when there is
    no significant difference (a prompt below the floor's point estimate does not beat it). The sentence, the report's
    banner and the run index all say this one thing."""
    if comparison.verdict == "improved":
        return "beats"
    if comparison.verdict == "worse":
        return "below"
    return "does not beat" if comparison.delta < 0 else "level"


class FloorRecord(BaseModel):
    """One reference predictor as run.json keeps it."""

    description: str
    fitted_on: list[str]  # the train ids it was fitted on, to prove it never saw val or test
    scores: dict[str, Any]  # split -> the component's split scores


class FloorResult(BaseModel):
    floors: dict[str, FloorRecord]
    chosen: str  # best on val by the selection metric (ties: the first listed); the one the verdict compares with
    comparison: PairedComparison | None  # judged prompt - chosen floor on test
    sentence: str
    predictions: dict[str, Prediction]  # the chosen floor's predictions by row id, for predictions.csv


def judge_floor(component: Component, train: list[GoldRow], splits: dict[str, list[GoldRow]], judged_test: list[Prediction],
                *, subject: str, seed: int = 0) -> FloorResult | None:
    """Fit every floor on `train`, score each on the given splits, choose on val, compare with `judged_test` (the judged
    prompt's predictions on splits["test"]). None when the component has no floor or train is empty."""
    floors = component.floors()
    if not floors or not train:
        return None
    metric = component.selection_metric
    records, preds = {}, {}
    for floor in floors:
        floor.fit(train)
        preds[floor.name] = {s: floor.predict(rows) for s, rows in splits.items() if rows}
        records[floor.name] = FloorRecord(description=floor.describe(), fitted_on=list(floor.fitted_ids), scores={
            s: component.score(splits[s], p, seed=seed).model_dump() for s, p in preds[floor.name].items()})
    ranked = [f.name for f in floors]
    chosen = max(ranked, key=lambda n: (records[n].scores.get("val", {}).get(metric, float("-inf")), -ranked.index(n)))
    test = splits.get("test") or []
    comparison = component.compare(test, preds[chosen]["test"], judged_test, seed=seed) if test else None
    by_id = {row.id: p for s, rows in splits.items() for row, p in zip(rows, preds[chosen].get(s, []))}
    return FloorResult(floors=records, chosen=chosen, comparison=comparison, predictions=by_id,
                       sentence=floor_sentence(comparison, chosen, records[chosen].scores.get("test"), metric, subject))


def _figure(metric: str, scores: dict[str, Any] | None) -> str:
    if not scores:
        return f"{metric} –"
    low, high = scores[f"{metric}_ci"]
    return f"{metric} {scores[metric]:.2f} [{low:.2f}, {high:.2f}]"


def _delta(ci: Interval, delta: float) -> str:
    return f"{delta:+.2f}, 95% CI [{ci[0]:+.2f}, {ci[1]:+.2f}]"


def floor_sentence(comparison: PairedComparison | None, name: str, test: dict[str, Any] | None, metric: str, subject: str) -> str:
    """One plain clause for the verdict line: is `subject` above, below or level with the model-free floor on test?"""
    floor = f"the model-free floor ({name}: {_figure(metric, test)} on test)"
    if comparison is None:
        return f"{subject} has no test rows to compare with {floor}"
    if comparison.verdict == "too few examples":
        return f"too few test rows to compare {subject} with {floor}"
    gap = _delta(comparison.delta_ci, comparison.delta)
    return {"beats": f"{subject} beats {floor}, {gap}",
            "below": f"{subject} is below {floor}, {gap}: {FLOOR_ADVICE}",
            "does not beat": f"{subject} does not beat {floor}, {gap}: the LM adds nothing measurable over it; {FLOOR_ADVICE}",
            "level": f"{subject} is level with {floor}, {gap}: no significant difference"}[standing(comparison)]
