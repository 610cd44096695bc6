"""The grader (Learn-to-Ask's LLM judge): does a candidate pharmacist turn ask for the target information?

Inputs are the dialogue so far, the micro-goal (`field: value` items) and the candidate turn;
outputs are content_score and format_score, each 0, 0.5 or 1. The output type is a Literal so
engines that decode against a JSON schema can only produce valid labels.

format_score is also computed without the LM, by counting questions (`format_by_rule`): on every shipped
gold row the human format_score is exactly that count. Both are scored against the gold column, and the
trainer takes whichever agrees better on val (`choose_format_source`).
"""

import re
from collections.abc import Mapping
from typing import Any, Literal

import dspy
from pydantic import BaseModel

from calibrator.components.base import Component, Neighbours, Prediction
from calibrator.components.floors import Floor, NeighbourVote, SimilarityCuts
from calibrator.goldset import GraderRow
from calibrator.metrics import Interval, OrdinalScores, PairedComparison, paired_bootstrap, quadratic_weighted_kappa, score_ordinal

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
    """content_score agreement (the inherited fields) plus format_score agreement of the LM and of the rule,
    over the `format_n` rows that have a gold format_score (None when none has)."""

    format_n: int = 0
    format_accuracy: float | None = None  # the LM's answers; an unparsed answer counts as wrong
    format_accuracy_ci: Interval | None = None
    format_rule_accuracy: float | None = None  # format_by_rule on the candidate
    format_rule_accuracy_ci: Interval | None = None


QUESTION = re.compile(r"[?!]*\?[?!]*")  # a run of ? and ! with at least one ?
FORMAT_BY_QUESTIONS = {1: 1.0, 2: 0.5}  # any other count (none, three or more) scores 0


def count_questions(text: str) -> int:
    """Runs of question marks, each run one question: "??", "?!", "!?" and "?!?" count once. It reads
    punctuation, not meaning: a quoted question counts (telling a quoted from an asked one would also zero a
    turn wrapped in quotes), and a question written without "?" does not."""
    return len(QUESTION.findall(text))


def format_by_rule(candidate: str) -> float:
    """The rubric's format_score without an LM: 1 for exactly one question, 0.5 for two, 0 otherwise."""
    return FORMAT_BY_QUESTIONS.get(count_questions(candidate), 0.0)


FormatSourceName = Literal["rule", "lm"]


class FormatSource(BaseModel):
    """Which scorer gives the trainer's format term, and the val agreements it was chosen on (never test)."""

    source: FormatSourceName
    reason: str
    val_n: int | None = None
    lm_val_accuracy: float | None = None
    lm_val_accuracy_ci: list[float] | None = None
    rule_val_accuracy: float | None = None
    rule_val_accuracy_ci: list[float] | None = None


def choose_format_source(val: Mapping[str, Any] | None) -> FormatSource:
    """From a calibration record's val figures (`Grader.summary`, or a run's val scores): the LM only if its
    format agreement with the gold labels is strictly higher than the rule's; the rule wins ties because it
    is deterministic and free. Without val figures, the rule: it agrees with every shipped gold row."""
    if val is None:
        return FormatSource(source="rule", reason="the grader prompt has no calibration record; the question-count rule "
                            "agrees with every shipped gold format_score")
    figures = {"val_n": val.get("format_n"), "lm_val_accuracy": val.get("format_accuracy"),
               "lm_val_accuracy_ci": _as_list(val.get("format_accuracy_ci")), "rule_val_accuracy": val.get("format_rule_accuracy"),
               "rule_val_accuracy_ci": _as_list(val.get("format_rule_accuracy_ci"))}
    lm, rule = figures["lm_val_accuracy"], figures["rule_val_accuracy"]
    if lm is None or rule is None:
        return FormatSource(source="rule", reason="the calibration record has no format agreement on val (no gold format_score "
                            "there, or recorded before it was measured); the question-count rule agrees with every shipped "
                            "gold format_score", **figures)
    if lm > rule:
        return FormatSource(source="lm", reason=f"format agreement on val ({figures['val_n']} rows): LM {lm:.2f} > rule {rule:.2f}",
                            **figures)
    relation = "=" if lm == rule else ">"
    return FormatSource(source="rule", reason=f"format agreement on val ({figures['val_n']} rows): rule {rule:.2f} {relation} LM "
                        f"{lm:.2f}" + ("; a tie goes to the rule, which is deterministic and free" if lm == rule else ""), **figures)


def _as_list(interval: Any) -> list[float] | None:
    return None if interval is None else [float(x) for x in interval]


def _score(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number in (0.0, 0.5, 1.0) else None


def _cell(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def _floor_prediction(row: GraderRow, content: float) -> GraderPrediction:
    return GraderPrediction(content_score=content, format_score=format_by_rule(row.candidate))


class Grader(Component):
    name = "grader"
    row_model = GraderRow
    signature = GradeTurn
    selection_metric = "qwk"
    secondary_metric = "accuracy"
    retrieval_key_choices = (("candidate",), ("target_info", "candidate"), ("context", "target_info", "candidate"))
    ordinal_field = "content_score"
    ordinal_labels = (0.0, 0.5, 1.0)

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
        graded = [(r, p) for r, p in zip(rows, preds) if r.format_score is not None]
        if not graded:
            return GraderScores(**scores.model_dump())
        gold = [r.format_score for r, _ in graded]
        # same seed and n: both bootstraps resample the same rows, so the two intervals are comparable
        lm = score_ordinal(gold, [p.format_score for _, p in graded], seed=seed, n_boot=n_boot)
        rule = score_ordinal(gold, [format_by_rule(r.candidate) for r, _ in graded], seed=seed, n_boot=n_boot)
        return GraderScores(**scores.model_dump(), format_n=len(graded), format_accuracy=lm.accuracy, format_accuracy_ci=lm.accuracy_ci,
                            format_rule_accuracy=rule.accuracy, format_rule_accuracy_ci=rule.accuracy_ci)

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

    def floors(self) -> list[Floor]:
        return [SimilarityCuts(_floor_prediction, self.ordinal_labels), NeighbourVote(_floor_prediction, self.ordinal_labels)]

    def summary(self, scores: GraderScores, n: int) -> dict[str, Any]:
        """Also both format agreements, so the trainer can choose its format source on val."""
        fmt = {k: getattr(scores, k) for k in ("format_n", "format_accuracy", "format_rule_accuracy")}
        cis = {k: list(v) if (v := getattr(scores, k)) is not None else None for k in ("format_accuracy_ci", "format_rule_accuracy_ci")}
        return super().summary(scores, n) | fmt | cis


GRADER = Grader()
