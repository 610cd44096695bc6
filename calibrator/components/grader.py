"""The grader (Learn-to-Ask's LLM judge): does a candidate pharmacist turn ask for the target information?

Inputs are the dialogue so far, the micro-goal (`field: value` items) and the candidate turn;
outputs are content_score and format_score, each 0, 0.5 or 1. The output type is a Literal so
engines that decode against a JSON schema can only produce valid labels.
"""

from typing import Any, Literal

import dspy

from calibrator.components.base import Component, Neighbours, Prediction
from calibrator.goldset import GraderRow
from calibrator.metrics import OrdinalScores, PairedComparison, paired_bootstrap, quadratic_weighted_kappa, score_ordinal

Score = Literal[0.0, 0.5, 1.0]
DEMO_CONTEXT_TURNS = 2  # demos keep the last turns only: enough to show the rubric, cheap for a small model


class GradeTurn(dspy.Signature):
    """Score the candidate pharmacist turn against the target information."""

    context: str = dspy.InputField(desc="the consultation so far, one `patient:` / `pharmacist:` turn per line")
    target_info: str = dspy.InputField(desc="what the expert asked about next, `field: value` items separated by `;`")
    candidate: str = dspy.InputField(desc="the proposed next pharmacist turn")
    content_score: Score = dspy.OutputField(desc="1 asks a target field directly, 0.5 related but not direct, 0 irrelevant")
    format_score: Score = dspy.OutputField(desc="1 one question, 0.5 two questions, 0 three or more or none")


class GraderPrediction(Prediction):
    content_score: float | None = None
    format_score: float | None = None


class GraderScores(OrdinalScores):
    format_accuracy: float | None = None


def _score(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number in (0.0, 0.5, 1.0) else None


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


class Grader(Component):
    name = "grader"
    row_model = GraderRow
    signature = GradeTurn
    selection_metric = "qwk"
    secondary_metric = "accuracy"
    retrieval_key_choices = (("candidate",), ("target_info", "candidate"), ("context", "target_info", "candidate"))

    def inputs_of(self, row: GraderRow, *, demo: bool = False) -> dict[str, Any]:
        context = "\n".join(row.context.split("\n")[-DEMO_CONTEXT_TURNS:]) if demo else row.context
        return {"context": context, "target_info": row.target_text, "candidate": row.candidate}

    def gold_of(self, row: GraderRow) -> dict[str, Any]:
        gold: dict[str, Any] = {"content_score": row.content_score}
        if row.format_score is not None:
            gold["format_score"] = row.format_score
        return gold

    def parse(self, out: dspy.Prediction) -> GraderPrediction:
        content = _score(out.get("content_score"))
        return GraderPrediction(content_score=content, format_score=_score(out.get("format_score")),
                                error=None if content is not None else f"parse: content_score={out.get('content_score')!r}")

    def failed(self, error: str) -> GraderPrediction:
        return GraderPrediction(error=error)

    def metric(self, example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> float:
        """Ordinal closeness: 1 exact, 0.5 one step off, 0 two steps off or unparsed."""
        predicted = _score(pred.get("content_score")) if pred is not None else None
        if predicted is None:
            return 0.0
        return 1.0 - abs(predicted - float(example.content_score))

    def feedback(self, example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> dspy.Prediction:
        gold = float(example.content_score)
        predicted = _score(pred.get("content_score")) if pred is not None else None
        if predicted is None:
            text = f"no valid content_score (gold {gold:g}): answer 0, 0.5 or 1"
        elif predicted == gold:
            text = f"scored {predicted:g}, gold {gold:g}: correct"
        else:
            direction = "too lenient" if predicted > gold else "too strict"
            text = f"scored {predicted:g}, gold {gold:g}: {direction} for target {example.target_info!r}"
        return dspy.Prediction(score=self.metric(example, pred), feedback=text)

    def score(self, rows: list[GraderRow], preds: list[GraderPrediction], *, seed: int = 0, n_boot: int = 1000) -> GraderScores:
        scores = score_ordinal([r.content_score for r in rows], [p.content_score for p in preds], seed=seed, n_boot=n_boot)
        pairs = [(r.format_score, p.format_score) for r, p in zip(rows, preds) if r.format_score is not None]
        fmt = sum(g == p for g, p in pairs) / len(pairs) if pairs else None
        return GraderScores(**scores.model_dump(), format_accuracy=fmt)

    def compare(self, rows: list[GraderRow], baseline: list[GraderPrediction], calibrated: list[GraderPrediction], *,
                seed: int = 0) -> PairedComparison:
        return paired_bootstrap([r.content_score for r in rows], [p.content_score for p in baseline],
                                [p.content_score for p in calibrated], metric="qwk", seed=seed)

    def loo_score(self, rows: list[GraderRow], neighbours: Neighbours) -> float:
        """qwk of a similarity-weighted vote of the neighbours' content scores."""
        gold = [r.content_score for r in rows]
        votes = []
        for near in neighbours:
            weight: dict[float, float] = {}
            for j, similarity in near:
                weight[gold[j]] = weight.get(gold[j], 0.0) + similarity
            votes.append(max(weight, key=weight.get))
        return quadratic_weighted_kappa(gold, votes)

    def csv_values(self, item: GraderRow | GraderPrediction) -> dict[str, str]:
        return {"": _cell(item.content_score), "format": _cell(item.format_score)}


GRADER = Grader()
