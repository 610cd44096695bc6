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
from pydantic import BaseModel, field_validator

from calibrator.components.base import (DIALOGUE_CELL, ITEMS_CELL, Component, Disagreement, Floor, Neighbours, Prediction, Strong,
                                        neighbour_votes,
                                        TemplateColumn, TemplateSheet)
from calibrator.components.extractor import DEFAULT_FIELDS, FIELD_HINTS
from calibrator.components.floors import NeighbourVote, ScoreCuts, target_similarity
from calibrator.gold.goldset import GoldRow, dialogue_lines, parse_label, target_items
from calibrator.agreement.items import normalise as normalise_text
from calibrator.agreement.metrics import Interval, OrdinalScores, PairedComparison, paired_bootstrap, quadratic_weighted_kappa, score_ordinal

Score = Literal[0.0, 0.5, 1.0]
DEMO_CONTEXT_TURNS = 2  # demos keep the last turns only: enough to show the rubric, cheap for a small model


class GradeTurn(dspy.Signature):
    """Score the candidate pharmacist turn against the target information."""

    context: str = dspy.InputField(desc="the consultation so far, one `patient:` / `pharmacist:` turn per line")
    target_info: str = dspy.InputField(desc="what the expert asked about next, `field: value` items separated by `;`")
    candidate: str = dspy.InputField(desc="the proposed next pharmacist turn")
    content_score: Score = dspy.OutputField(desc="1 asks a target field directly, 0.5 related but not direct, 0 irrelevant")
    format_score: Score = dspy.OutputField(desc="1 one question, 0.5 two questions, 0 three or more or none")


class GraderRow(GoldRow):
    """One labelled grader example: would an expert say this candidate asks for the target info?"""

    required = ("context", "target_info", "candidate", "content_score")
    optional = ("id", "format_score", "note", "annotator", "labelled_at")
    id_fields = ("context", "target_info", "candidate")
    adjudicated = "content_score"
    annotator_prefix = "content_score_"

    context: str
    target_info: list[str]
    candidate: str
    content_score: float
    format_score: float | None = None
    annotations: dict[str, float] = {}  # annotator -> content_score, when several people labelled the row

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, value: Any) -> str:
        return "\n".join(dialogue_lines(value, "context"))

    @field_validator("target_info", mode="before")
    @classmethod
    def _target_info(cls, value: Any) -> list[str]:
        items = target_items(value)
        if not items:
            raise ValueError("target_info is empty: give at least one `field: value` item, separated by `;`")
        return items

    @field_validator("candidate", mode="before")
    @classmethod
    def _candidate(cls, value: Any) -> str:
        text = str(value or "").strip()
        if not text:
            raise ValueError("candidate is empty: give the proposed pharmacist turn")
        return text

    @field_validator("content_score", mode="before")
    @classmethod
    def _content(cls, value: Any) -> float:
        if value is None or str(value).strip() == "":
            raise ValueError("content_score is empty: label it 0, 0.5 or 1")
        return parse_label(value)

    @field_validator("format_score", mode="before")
    @classmethod
    def _format(cls, value: Any) -> float | None:
        return None if value is None or str(value).strip() == "" else parse_label(value)

    @field_validator("annotations", mode="before")
    @classmethod
    def _annotations(cls, value: dict[str, Any]) -> dict[str, float]:
        return {name: parse_label(v) for name, v in value.items()}

    @property
    def target_text(self) -> str:
        return "; ".join(self.target_info)

    @property
    def label(self) -> float:
        return self.content_score

    def labels_text(self) -> str:
        return f"content_score {self.content_score:g}" + (f", format_score {self.format_score:g}" if self.format_score is not None else "")

    def case_key(self) -> str:
        return normalise_text(self.candidate) + "|" + normalise_text(self.target_text)


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


class ContentSource(BaseModel):
    """Where the reward's content term comes from, chosen on val agreement with the humans: the calibrated LM, or a
    model-free floor fitted on the same train split (`similarity`, `neighbours`)."""

    source: str  # "lm" or a floor's name
    reason: str
    lm_val_qwk: float | None = None
    floor_val_qwk: float | None = None  # the best floor's


def choose_content_source(calibration: Any) -> ContentSource:
    """The LM only if its val qwk is strictly higher than every floor's; the best floor otherwise (a tie goes to the
    floor: deterministic, free, no LM call). A record without floors (made before they were recorded) keeps the LM."""
    if calibration is None or not calibration.floors:
        return ContentSource(source="lm", reason="no floor in the calibration record: the LM grades content")
    lm = calibration.val.get("qwk")
    floors = {name: (f.get("val") or {}).get("qwk") for name, f in calibration.floors.items()}
    best = max((n for n in floors if floors[n] is not None), key=lambda n: floors[n], default=None)
    if best is None or (lm is not None and lm > floors[best]):
        figure = "no floor val qwk" if best is None else f"floor {best} {floors[best]:.2f}"
        return ContentSource(source="lm", reason=f"content agreement on val: LM qwk {lm:.2f} > {figure}" if lm is not None
                             else "no val qwk recorded for the LM", lm_val_qwk=lm, floor_val_qwk=floors.get(best))
    relation = "no LM figure" if lm is None else f"LM {lm:.2f}"
    return ContentSource(source=best, reason=f"content agreement on val: floor {best} qwk {floors[best]:.2f} >= {relation}; "
                         f"the floor grades content (no LM call)", lm_val_qwk=lm, floor_val_qwk=floors[best])


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


TEMPLATE = TemplateSheet(
    columns=[
        TemplateColumn(name="context", width=60, wrapped=True, help=f"The consultation so far, {DIALOGUE_CELL}."),
        TemplateColumn(name="target_info", width=45, wrapped=True,
                       help=f"What the expert pharmacist actually asked for next, with the patient's answer: {ITEMS_CELL}. "
                            "At least one item."),
        TemplateColumn(name="candidate", width=50, wrapped=True, help="The proposed next pharmacist turn that you are scoring."),
        TemplateColumn(name="content_score", width=14, choices=("0", "0.5", "1"),
                       help="0, 0.5 or 1 (pick from the dropdown): how well the candidate asks for the target information."),
        TemplateColumn(name="format_score", width=14, choices=("0", "0.5", "1"),
                       help="Optional. 0, 0.5 or 1: how many questions the candidate asks."),
    ],
    rubric=[
        ("content_score 1", "The candidate asks directly for at least one target item (its field). "
                            "Target `duration: 3 days`, candidate \"How long have you had the cough?\"."),
        ("content_score 0.5", "Close to a target item but not asking for it directly: a neighbouring aspect of the "
                              "same topic, too vague to draw the item out, or a yes/no question that covers it only in part."),
        ("content_score 0", "Nothing to do with any target item: asks about something else, asks again for something "
                            "the context already answered, gives advice or recommends a product instead, or is small talk."),
        ("format_score", "1 = exactly one question; 0.5 = exactly two; 0 = three or more, or none at all."),
    ],
    fields_title="Field names for target_info (use these where they fit)",
    fields=[(f, FIELD_HINTS.get(f, "")) for f in DEFAULT_FIELDS],
    examples=[
        ("context", "target_info", "candidate", "content_score", "format_score", "why"),
        ("\n".join(["patient: I've got an itchy rash on my arm, I think it's the new washing powder.",
                    "pharmacist: How long has it been there?", "patient: Since Saturday."]),
         "previous treatment: nothing yet", "Have you put anything on it so far?", "1", "1",
         "Asks directly for the target field (previous treatment); one question."),
        ("patient: My little boy's teething and really grumpy, can I get some gel for him?",
         "age group: 5 months", "Is he under two? Has he got a temperature with it?", "0.5", "0.5",
         "The yes/no question covers his age only in part; two questions."),
        ("\n".join(["patient: I've had heartburn on and off for a couple of weeks, mostly at night.",
                    "pharmacist: Are you taking any other medicines?", "patient: Just my blood pressure tablets."]),
         "symptom: no trouble swallowing, no weight loss",
         "Gaviscon Advance after meals and at bedtime should settle it.", "0", "0",
         "Recommends a product instead of asking about the red-flag symptoms; no question at all."),
    ],
    sections=[("Two labellers", [
        "To measure how far two labellers agree, each scores the rows without seeing the other's scores,",
        "in a column of their own named content_score_<name>, e.g. content_score_anna and content_score_ben.",
        "The agreed score still goes in content_score. "
        "Reports then show the labellers' agreement: the most any prompt can reach."])],
    widths=(30, 45, 45, 14, 14, 50),
)


class Grader(Component):
    name = "grader"
    help_line = "scores a candidate question against what the expert asked next (content 0 / 0.5 / 1, format)"
    label_kind = "ordinal"
    row_model = GraderRow
    signature = GradeTurn
    selection_metric = "qwk"
    secondary_metric = "accuracy"
    retrieval_key_choices = (("candidate",), ("target_info", "candidate"), ("context", "target_info", "candidate"))
    ordinal_field = "content_score"
    ordinal_labels = (0.0, 0.5, 1.0)
    scores_model = GraderScores
    report_metrics = (("accuracy", "accuracy"), ("qwk", "qwk"), ("mae", "MAE"), ("format_accuracy", "format, LM"),
                      ("format_rule_accuracy", "format, rule"))
    report_counts = (("format_n", "format rows"),)
    report_caption = ("Format: exact agreement with the gold format_score over the rows that have one (format rows), for the LM's "
                      "answer (an unparsed answer counts as wrong) and for the question-count rule, which needs no LM")
    confusion_labels = ("0", "0.5", "1")
    review_columns = {"content_score": "", "format_score": "format"}
    adjudication_choices = ("0", "0.5", "1")
    adjudication_hint = "0, 0.5 or 1"
    template = TEMPLATE

    def confusion_label(self, cell: str) -> str:
        return f"{float(cell):g}"

    def signature_for(self, prompt: Any) -> type[dspy.Signature]:
        """target_scope rest: the target is what the patient revealed in the whole rest of the dialogue, and content 1
        means asking about any of it (the reference's rubric)."""
        signature = super().signature_for(prompt)
        if prompt.target_scope != "rest":
            return signature
        return signature.with_updated_fields(
            "target_info", desc="what the patient revealed in the rest of the real consultation, `field: value` items").with_updated_fields(
            "content_score", desc="1 asks directly about any target item, 0.5 highly relevant to one, 0 irrelevant")

    def report_note(self, record: dict[str, Any]) -> list[str | tuple[str, float | None]] | None:
        """Where the trainer will take its format term from, decided by the same function on the val figures the calibration
        record keeps."""
        if not (record.get("calibrated") or {}).get("val"):
            return None
        choice = choose_format_source(record["calibrated"]["val"])
        start = ["The trainer takes its format term from the ", Strong("question-count rule" if choice.source == "rule" else "LM"), ": "]
        if choice.lm_val_accuracy is None or choice.rule_val_accuracy is None:
            return [*start, "no val row has a gold format_score, and the rule agrees with every shipped one."]
        return [*start, "chosen by format agreement on val (rule ", ("calibrated.val.format_rule_accuracy", choice.rule_val_accuracy),
                ", LM ", ("calibrated.val.format_accuracy", choice.lm_val_accuracy),
                "; a tie goes to the rule, which is deterministic and free), never on test."]

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
        return quadratic_weighted_kappa(gold, neighbour_votes(gold, neighbours))

    def csv_values(self, item: GraderRow | GraderPrediction) -> dict[str, str]:
        return {"": _cell(item.content_score), "format": _cell(item.format_score)}

    def disagreement(self, row: dict[str, str], side: str) -> Disagreement | None:
        """|predicted - gold| on content_score; an unparsed answer is off by the whole scale."""
        gold, pred = row["gold"], row[side]
        if pred != "" and float(pred) == float(gold):
            return None
        shown = {"target info": row.get("target_info", ""), "candidate": row.get("candidate", ""),
                 "format gold / predicted": f"{row.get('gold_format') or '–'} / {row.get(side + '_format') or '–'}"}
        return Disagreement(id=row["id"], gold=gold, predicted=pred or "unparsed", error=1.0 if pred == "" else abs(float(pred) - float(gold)),
                            context=row.get("context", ""), shown=shown, note=row.get(f"{side}_error", ""))

    def floors(self) -> list[Floor]:
        return [ScoreCuts("similarity", "MiniLM similarity of target info and candidate", target_similarity, _floor_prediction,
                          self.ordinal_labels),
                NeighbourVote(_floor_prediction, self.ordinal_labels, text=lambda r: r.candidate, on="candidate")]

    def summary(self, scores: GraderScores, n: int) -> dict[str, Any]:
        """Also both format agreements, so the trainer can choose its format source on val."""
        fmt = {k: getattr(scores, k) for k in ("format_n", "format_accuracy", "format_rule_accuracy")}
        cis = {k: list(v) if (v := getattr(scores, k)) is not None else None for k in ("format_accuracy_ci", "format_rule_accuracy_ci")}
        return super().summary(scores, n) | fmt | cis


GRADER = Grader()
