"""The stop judge: has the expert gathered enough to recommend, or should they ask more?

Input is the consultation so far (ending where the pharmacist speaks next); output is `continue` (ask another
question) or `stop` (recommend, refer or hand off now). Learn-to-Ask reads the stop point off the logs' structure; a
judge of it is what a deployment needs when the logs' endings are unreliable (patients say thanks, pharmacists explain
after the decision), and it is the trainer's termination signal made explicit.

Metrics: accuracy and Cohen's kappa, each with a 95% bootstrap interval. With two labels, kappa with quadratic weights
is Cohen's kappa exactly, so the ordinal machinery of calibrator/agreement/metrics.py scores it (continue = 0, stop = 1).
"""

from typing import Any, Literal

import dspy
from pydantic import BaseModel, field_validator

from calibrator.components.base import (DIALOGUE_CELL, Component, Disagreement, Floor, Neighbours, Prediction, TemplateColumn,
                                        TemplateSheet, neighbour_votes)
from calibrator.components.floors import NeighbourVote, ScoreCuts
from calibrator.components.grader import count_questions
from calibrator.gold.goldset import GoldRow, patient_context
from calibrator.agreement.items import normalise as normalise_text
from calibrator.agreement.metrics import Interval, PairedComparison, paired_bootstrap, quadratic_weighted_kappa, score_ordinal

Decision = Literal["continue", "stop"]
VALUE = {"continue": 0.0, "stop": 1.0}  # kappa over two labels needs them as numbers
DECISION = {v: k for k, v in VALUE.items()}
DEMO_CONTEXT_LINES = 8  # a demonstration keeps its last turns; the judged context is shown whole (the decision rests on all of it)


class StopRow(GoldRow):
    """One labelled stop decision: the consultation so far, and whether the pharmacist had gathered enough to recommend."""

    required = ("context", "decision")
    optional = ("id", "note", "annotator", "labelled_at")
    id_fields = ("context",)
    adjudicated = "decision"

    context: str
    decision: Decision

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, value: Any) -> str:
        return patient_context(value, "there is nothing to decide on before the patient has spoken")

    @field_validator("decision", mode="before")
    @classmethod
    def _decision(cls, value: Any) -> str:
        decision = str(value or "").strip().lower()
        if decision not in VALUE:
            raise ValueError(f"decision must be `continue` or `stop`, got {str(value or '').strip()!r}")
        return decision

    @property
    def label(self) -> str:
        return self.decision

    def labels_text(self) -> str:
        return f"decision {self.decision}"

    def case_key(self) -> str:
        return normalise_text(self.context)


class JudgeStop(dspy.Signature):
    """Read the consultation so far and decide the pharmacist's next move: ask another question, or stop asking and recommend."""

    context: str = dspy.InputField(desc="the consultation so far, one `patient:` / `pharmacist:` turn per line; the pharmacist speaks next")
    decision: Decision = dspy.OutputField(desc="stop when the pharmacist knows enough to recommend, refer or hand off safely; "
                                                "continue when something they need is still unknown")


class StopPrediction(Prediction):
    decision: Decision | None = None


class StopScores(BaseModel):
    """Agreement of the stop decisions with gold on one split; an unparsed answer counts as wrong in accuracy and is left
    out of kappa (its rate beside)."""

    n: int
    n_parsed: int
    accuracy: float
    accuracy_ci: Interval
    kappa: float
    kappa_ci: Interval
    parse_failure_rate: float
    confusion: list[list[int]]


def _value(decision: str | None) -> float | None:
    return VALUE.get(decision) if decision else None


def pharmacist_questions(context: str) -> int:
    """Questions the pharmacist has asked so far, counted in their lines as the grader's format rule counts them."""
    return sum(count_questions(line) for line in context.split("\n") if line.lower().startswith("pharmacist:"))


def _floor_prediction(row: StopRow, value: float) -> StopPrediction:
    return StopPrediction(decision=DECISION[value])


TEMPLATE = TemplateSheet(
    columns=[
        TemplateColumn(name="context", width=60, wrapped=True,
                       help=f"The consultation up to the pharmacist's next turn, {DIALOGUE_CELL}. It needs at least one `patient:` line."),
        TemplateColumn(name="decision", width=12, choices=("continue", "stop"), help="`continue` or `stop` (pick from the dropdown)."),
    ],
    rubric=[
        ("stop", "The pharmacist knows enough to act safely: who it is for, what the problem is and how long it has gone on, "
                 "and the safety questions the product needs (other medicines, conditions, pregnancy, allergies) are answered "
                 "or not needed. The right next move is to recommend, refer or hand off."),
        ("continue", "Something the pharmacist needs before recommending is still unknown: the next move is a question."),
        ("judge the need, not the habit", "Label what a careful pharmacist should do next, not what a chatty one might: a "
                                          "question that adds nothing the recommendation depends on is not a reason to continue."),
    ],
    examples=[
        ("context", "decision", "why"),
        ("\n".join(["patient: Have you got anything for a tickly cough?", "pharmacist: Is it for you? How long has it been going on?",
                    "patient: Yes, about four days. It's dry, nothing coming up."]),
         "continue", "Other medicines and conditions are still unknown, and they decide which linctus is safe."),
        ("\n".join(["patient: Can I get something for hay fever? My eyes are streaming.", "pharmacist: Is it for you, and are you "
                    "taking anything else?", "patient: Just me, and no, nothing else.", "pharmacist: Any glaucoma or pregnancy?",
                    "patient: No, neither."]),
         "stop", "Who, what, other medicines and the cautions for antihistamine drops are answered: recommend."),
    ],
    widths=(30, 60, 12, 50),
)


class StopJudge(Component):
    name = "stop"
    help_line = "decides from the consultation so far whether the expert knows enough to recommend (continue / stop)"
    label_kind = "categorical"
    row_model = StopRow
    signature = JudgeStop
    selection_metric = "kappa"
    secondary_metric = "accuracy"
    retrieval_key_choices = (("context",),)
    scores_model = StopScores
    report_metrics = (("accuracy", "accuracy"), ("kappa", "Cohen's kappa"))
    confusion_labels = ("continue", "stop")
    review_columns = {"decision": ""}
    adjudication_choices = ("continue", "stop")
    adjudication_hint = "continue or stop"
    template = TEMPLATE

    def inputs_of(self, row: Any, *, demo: bool = False) -> dict[str, Any]:
        return {"context": "\n".join(row.context.split("\n")[-DEMO_CONTEXT_LINES:]) if demo else row.context}

    def gold_of(self, row: StopRow) -> dict[str, Any]:
        return {"decision": row.decision}

    def parse(self, out: dspy.Prediction) -> StopPrediction:
        decision = str(out.get("decision") or "").strip().lower()
        if decision not in VALUE:
            return StopPrediction(error=f"parse: decision={out.get('decision')!r}")
        return StopPrediction(decision=decision)

    def failed(self, error: str) -> StopPrediction:
        return StopPrediction(error=error)

    def metric(self, example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> float:
        return 1.0 if pred is not None and self.parse(pred).decision == example.decision else 0.0

    def feedback(self, example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> dspy.Prediction:
        said = self.parse(pred).decision if pred is not None else None
        if said is None:
            text = f"no valid decision (gold {example.decision}): answer continue or stop"
        elif said == example.decision:
            text = f"said {said}: correct"
        else:
            text = (f"said {said}, gold {example.decision}: "
                    + ("stopped too early, something needed was still unknown" if said == "stop" else "asked on when enough was known"))
        return dspy.Prediction(score=self.metric(example, pred), feedback=text)

    def score(self, rows: list[StopRow], preds: list[StopPrediction], *, seed: int = 0, n_boot: int = 1000) -> StopScores:
        s = score_ordinal([VALUE[r.decision] for r in rows], [_value(p.decision) for p in preds], seed=seed, n_boot=n_boot,
                          labels=(0.0, 1.0))
        return StopScores(n=s.n, n_parsed=s.n_parsed, accuracy=s.accuracy, accuracy_ci=s.accuracy_ci, kappa=s.qwk, kappa_ci=s.qwk_ci,
                          parse_failure_rate=s.parse_failure_rate, confusion=s.confusion)

    def compare(self, rows: list[StopRow], baseline: list[StopPrediction], calibrated: list[StopPrediction], *,
                seed: int = 0) -> PairedComparison:
        c = paired_bootstrap([VALUE[r.decision] for r in rows], [_value(p.decision) for p in baseline],
                             [_value(p.decision) for p in calibrated], metric="qwk", seed=seed, labels=(0.0, 1.0))
        return c.model_copy(update={"metric": "kappa"})

    def loo_score(self, rows: list[StopRow], neighbours: Neighbours) -> float:
        """Cohen's kappa of a similarity-weighted vote of the neighbours' decisions."""
        gold = [VALUE[r.decision] for r in rows]
        return quadratic_weighted_kappa(gold, neighbour_votes(gold, neighbours), (0.0, 1.0))

    def csv_values(self, item: StopRow | StopPrediction) -> dict[str, str]:
        return {"": item.decision or ""}

    def disagreement(self, row: dict[str, str], side: str) -> Disagreement | None:
        if row[side] == row["gold"]:
            return None
        return Disagreement(id=row["id"], gold=row["gold"], predicted=row[side] or "unparsed", error=1.0, context=row.get("context", ""),
                            shown={}, note=row.get(f"{side}_error", ""))

    def floors(self) -> list[Floor]:
        return [ScoreCuts("questions", "questions the pharmacist has asked so far", lambda rows: [pharmacist_questions(r.context) for r in rows],
                          _floor_prediction, (0.0, 1.0), label_value=VALUE.__getitem__),
                NeighbourVote(_floor_prediction, (0.0, 1.0), text=lambda r: r.context, on="context", label_value=VALUE.__getitem__)]


STOP = StopJudge()
