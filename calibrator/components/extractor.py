"""The extractor (Learn-to-Ask's hindsight labeller): from the observed future, name what the expert asked.

Inputs are the dialogue before a pharmacist run and the observed future; outputs are the decision
(did the patient speak again: `continue`, or did the pharmacist stop asking: `stop`) and the items
the run asked for, as `field: value` strings whose value is the patient's answer. The field
vocabulary lives in the prompt file (`fields:`), so users extend it without touching code.

The model sees the recent history only and the future up to the end of the patient's reply:
later turns cannot change what this run asked, and every token costs a small CPU model time.
"""

import re
from typing import Any, Literal

import dspy
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler, ValidationInfo, field_validator
from pydantic_core import core_schema

from calibrator.components.base import (DIALOGUE_CELL, ITEMS_CELL, Component, Disagreement, Floor, Neighbours, Prediction,
                                        TemplateColumn, TemplateSheet)
from calibrator.components.floors import LexicalFields
from calibrator.gold.goldset import GoldRow, dialogue_lines, patient_context, target_items
from calibrator.agreement.items import ItemScores, item_f1, match_items, paired_items, score_items, split_item
from calibrator.agreement.items import normalise as normalise_text
from calibrator.agreement.metrics import PairedComparison

DEFAULT_FIELDS = ("symptom", "nature", "location", "severity", "trigger", "duration",
                  "allergies", "current medication", "pregnancy/breastfeeding", "age group", "chronic conditions",
                  "previous treatment")
FIELD_HINTS = {"symptom": "other or red-flag symptoms, present or absent", "nature": "what it looks or feels like",
               "location": "where it is", "severity": "how bad it is", "trigger": "what brings it on or caused it",
               "duration": "how long, or when it started", "allergies": "allergies to medicines or anything else",
               "current medication": "medicines the patient takes now", "pregnancy/breastfeeding": "pregnant or breastfeeding",
               "age group": "who it is for and how old", "chronic conditions": "long-term illnesses",
               "previous treatment": "what has been tried already"}
VALUE_CHARS = 60  # an answer in a few words; also stops a small model repeating itself inside one item
MAX_ITEMS = 4  # a pharmacist turn asks one or two things; the cap stops a runaway list
REST_MAX_ITEMS = 12  # target_scope rest: everything the patient goes on to reveal
REST_FUTURE_LINES = 60  # target_scope rest: the remaining dialogue shown, at most (a GP consultation runs to hundreds)
CONTEXT_LINES = 12  # the history the model reads: enough to tell a new question from one already answered
DEMO_CONTEXT_LINES = 2


class ExtractTarget(dspy.Signature):
    """Read the consultation and what happened next; say whether the pharmacist went on asking and what they asked for."""

    context: str = dspy.InputField(desc="the consultation before the pharmacist's next turn, one `patient:` / `pharmacist:` turn per line")
    future: str = dspy.InputField(desc="what happened next: the pharmacist's turn, then the patient's reply if there was one")
    decision: Literal["continue", "stop"] = dspy.OutputField(desc="stop when no patient line follows the pharmacist's turn, else continue")
    target_info: list[str] = dspy.OutputField(desc="each thing the pharmacist's turn asked for, as `field: value` with the patient's answer as value; [] when stop")


def items_type(fields: list[str] | tuple[str, ...], max_items: int = MAX_ITEMS) -> type[list]:
    """list[str] whose JSON schema pins each item to `<known field>: <short value>`, so engines that decode
    against the schema (llama.cpp, vLLM, OpenAI) can only name fields of the vocabulary. Parsing stays
    lenient: an answer from an engine without schema decoding is scored, not rejected."""
    alternatives = "|".join(re.escape(f).replace("\\ ", " ") for f in fields)
    pattern = rf"^({alternatives}): [^;:|]{{1,{VALUE_CHARS}}}$"

    class FieldItems(list):
        @classmethod
        def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
            return core_schema.list_schema(core_schema.str_schema())

        @classmethod
        def __get_pydantic_json_schema__(cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler) -> dict[str, Any]:
            return {"type": "array", "items": {"type": "string", "pattern": pattern}, "maxItems": max_items}

    return FieldItems


Decision = Literal["continue", "stop"]


class ExtractorRow(GoldRow):
    """One labelled extractor example: a dialogue cut before a pharmacist run, what that run asked, and
    whether the pharmacist went on asking. The decision must agree with the future shown."""

    required = ("context", "future", "target_info", "decision")
    optional = ("id", "note", "annotator", "labelled_at", "target_scope")
    id_fields = ("context", "future")
    adjudicated = "target_info"

    context: str
    future: str
    target_info: list[str]
    decision: Decision
    target_scope: Literal["rest"] | None = None  # labelled from the whole rest of the dialogue; None: from the next run

    @field_validator("target_scope", mode="before")
    @classmethod
    def _scope(cls, value: Any) -> str | None:
        """`next` (or an empty cell) is the default and kept as None, so a gold set that says it hashes as one that does not."""
        scope = str(value).strip().lower() if value is not None else ""
        if scope not in ("", "next", "rest"):
            raise ValueError(f"target_scope must be next or rest, not {value!r}")
        return scope if scope == "rest" else None

    @field_validator("context", mode="before")
    @classmethod
    def _context(cls, value: Any) -> str:
        return patient_context(value, "a sample starts after the patient has spoken")

    @field_validator("future", mode="before")
    @classmethod
    def _future(cls, value: Any) -> str:
        lines = dialogue_lines(value, "future")
        if not lines[0].lower().startswith("pharmacist:"):
            raise ValueError("future must start with the pharmacist's run (`pharmacist:` lines)")
        return "\n".join(lines)

    @field_validator("target_info", mode="before")
    @classmethod
    def _target_info(cls, value: Any) -> list[str]:
        return target_items(value)

    @field_validator("decision", mode="before")
    @classmethod
    def _decision(cls, value: Any, info: ValidationInfo) -> str:
        decision = str(value or "").strip().lower()
        if decision not in ("continue", "stop"):
            raise ValueError(f"decision must be `continue` or `stop`, got {str(value or '').strip()!r}")
        future, items = info.data.get("future"), info.data.get("target_info")
        if future is not None:
            answered = any(line.lower().startswith("patient:") for line in future.split("\n"))
            if decision == "stop" and answered:
                raise ValueError("decision is `stop` but the future has a `patient:` line after the run: that is `continue`")
            if decision == "continue" and not answered:
                raise ValueError("decision is `continue` but no `patient:` line follows the run in future: that is `stop`")
        if items is not None:
            if decision == "stop" and items:
                raise ValueError("a `stop` sample has no target_info: the pharmacist stopped asking; leave it empty")
            if decision == "continue" and not items:
                raise ValueError("a `continue` sample needs at least one target_info item (`field: value`, separated by `;`)")
        return decision

    @property
    def target_text(self) -> str:
        return "; ".join(self.target_info)

    @property
    def label(self) -> str:
        return self.decision

    def labels_text(self) -> str:
        return f"decision {self.decision}, target_info [{'; '.join(self.target_info)}]"

    def case_key(self) -> str:
        return normalise_text(self.context) + "|" + normalise_text(self.future)


class ExtractorPrediction(Prediction):
    target_info: list[str] | None = None
    decision: Literal["continue", "stop"] | None = None


def observed_future(future: str) -> str:
    """The pharmacist run and the patient reply that follows it; nothing after."""
    lines = future.split("\n")
    end, seen_patient = len(lines), False
    for i, line in enumerate(lines):
        patient = line.lower().startswith("patient:")
        if seen_patient and not patient:
            end = i
            break
        seen_patient = seen_patient or patient
    return "\n".join(lines[:end])


def _items(value: Any) -> list[str]:
    raw = value if isinstance(value, list) else str(value or "").split(";")
    return [" ".join(str(item).split()) for item in raw if str(item).strip()]


def _field_f1(gold: set[str], predicted: set[str]) -> float:
    if not gold and not predicted:
        return 1.0
    both = len(gold & predicted)
    return 2 * both / (len(gold) + len(predicted))


TEMPLATE = TemplateSheet(
    columns=[
        TemplateColumn(name="context", width=60, wrapped=True,
                       help=f"The dialogue before the pharmacist's run, {DIALOGUE_CELL}. It needs at least one `patient:` line."),
        TemplateColumn(name="future", width=60, wrapped=True,
                       help="The run (one or more `pharmacist:` lines in a row) first, then whatever followed it, "
                            "in the same one-turn-per-line format."),
        TemplateColumn(name="target_info", width=45, wrapped=True,
                       help=f"What the run asked, with the patient's answer as value: {ITEMS_CELL}. "
                            "Leave it empty for `stop`; at least one item for `continue`."),
        TemplateColumn(name="decision", width=12, choices=("continue", "stop"), help="`continue` or `stop` (pick from the dropdown)."),
    ],
    rubric=[
        ("stop", "No `patient:` line follows the run: the pharmacist stopped asking (recommended something, referred "
                 "the patient on, or handed off with the message `<med_search>`). target_info stays empty."),
        ("continue", "At least one `patient:` line follows the run. "
                     "target_info has one `field: value` item per thing the run asked."),
        ("value", "The patient's answer in a few words, close to their own wording (values are matched by word overlap)."),
        ("what counts", "Only what this run asked. Not what the patient volunteered unasked, not questions already "
                        "answered in context, not questions of later runs further down future."),
        ("one or two items", "Two questions about the same thing make one item; "
                             "two different things (in one message or two) make two items."),
    ],
    fields_title="Field names for target_info",
    fields=[(f, FIELD_HINTS.get(f, "")) for f in DEFAULT_FIELDS],
    examples=[
        ("context", "future", "target_info", "decision", "why"),
        ("pharmacist: Hello, how can I help?\npatient: I've got a sore throat, it's really painful to swallow.",
         "\n".join(["pharmacist: Oh dear. How long has it been like that?",
                    "pharmacist: And have you had a temperature with it?", "patient: Since Monday, so three days.",
                    "patient: I felt shivery last night but didn't check.",
                    "pharmacist: Okay. Are you taking any other medicines?", "patient: No, nothing."]),
         "duration: since Monday, three days; symptom: felt shivery last night", "continue",
         "The run is the two pharmacist messages before the reply: two different questions, two items, in the "
         "patient's words. The medicines question is a later run: not labelled."),
        ("\n".join(["patient: Can I have something for athlete's foot?", "pharmacist: Is it for yourself?",
                    "patient: Yes, it's between my little toes, itchy and peeling.",
                    "pharmacist: Do you have diabetes or any circulation problems?", "patient: No, nothing like that."]),
         "pharmacist: Then a terbinafine cream is a good choice. Apply it once or twice a day for a week "
         "and keep between your toes dry.",
         "(leave empty)", "stop",
         "No patient line follows the run: the pharmacist recommended a product and stopped asking. "
         "target_info stays empty."),
    ],
    widths=(30, 50, 45, 12, 50),
)


class Extractor(Component):
    name = "extractor"
    help_line = "names what the expert asked next, and whether they stopped, from a dialogue's observed future"
    label_kind = "items"
    row_model = ExtractorRow
    signature = ExtractTarget
    selection_metric = "item_f1"
    secondary_metric = "decision_accuracy"
    retrieval_key_choices = (("future",), ("context", "future"))
    scores_model = ItemScores
    report_metrics = (("item_precision", "item precision"), ("item_recall", "item recall"), ("item_f1", "item F1"),
                      ("decision_accuracy", "decision accuracy"))
    confusion_column = "decision"
    confusion_labels = ("continue", "stop")
    review_columns = {"target_info": "items", "decision": "decision"}
    template = TEMPLATE
    adjudication_hint = "the corrected target_info (`field: value; ...`); the decision follows from the dialogue itself"

    def inputs_of(self, row: Any, *, demo: bool = False) -> dict[str, Any]:
        """target_scope rest (a row that says so: `extract` with a rest prompt) shows the remaining dialogue, else the
        run and the patient's reply."""
        keep = DEMO_CONTEXT_LINES if demo else CONTEXT_LINES
        rest = getattr(row, "target_scope", None) == "rest"  # a row built in code (a bench's) may not say
        future = "\n".join(row.future.split("\n")[:REST_FUTURE_LINES]) if rest else observed_future(row.future)
        return {"context": "\n".join(row.context.split("\n")[-keep:]), "future": future}

    def prompt_mismatch(self, prompt: Any, rows: list[Any]) -> str | None:
        """A rest prompt is measured on rows labelled from the rest of the dialogue (and shown it), a next prompt on rows
        labelled from the next run: scored against the other scope's labels, every recall or precision would be wrong."""
        scope = prompt.target_scope or "next"
        other = sorted({r.id for r in rows if (r.target_scope or "next") != scope})
        if not other:
            return None
        return (f"the prompt's target_scope is {scope}, but {len(other)} of {len(rows)} gold rows are labelled for another "
                f"scope (column target_scope; {', '.join(other[:5])}{' …' if len(other) > 5 else ''}): use a gold set "
                f"labelled for {scope}, or a prompt of the rows' scope")

    def gold_of(self, row: ExtractorRow) -> dict[str, Any]:
        return {"decision": row.decision, "target_info": list(row.target_info)}

    def signature_for(self, prompt: Any) -> type[dspy.Signature]:
        fields = prompt.fields or DEFAULT_FIELDS
        signature = super().signature_for(prompt)
        if prompt.target_scope == "rest":
            signature = signature.with_updated_fields(
                "future", desc="the rest of the consultation from the pharmacist's next turn on, one turn per line").with_updated_fields(
                "target_info", desc="each thing the patient reveals in that rest of the consultation, as `field: value`; [] when stop")
        described = signature.output_fields["target_info"].json_schema_extra["desc"]
        most = REST_MAX_ITEMS if prompt.target_scope == "rest" else MAX_ITEMS
        return signature.with_updated_fields(
            "target_info", type_=items_type(fields, most), desc=f"{described}; field is one of: {', '.join(fields)}")

    def parse(self, out: dspy.Prediction) -> ExtractorPrediction:
        decision = str(out.get("decision") or "").strip().lower()
        if decision not in ("continue", "stop"):
            return ExtractorPrediction(error=f"parse: decision={out.get('decision')!r}")
        return ExtractorPrediction(decision=decision, target_info=_items(out.get("target_info")))

    def failed(self, error: str) -> ExtractorPrediction:
        return ExtractorPrediction(error=error)

    def metric(self, example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> float:
        """Half for the decision, half for the items (per-sample F1 under the matcher)."""
        if pred is None:
            return 0.0
        parsed = self.parse(pred)
        if parsed.decision is None:
            return 0.0
        decision = 1.0 if parsed.decision == example.decision else 0.0
        return 0.5 * decision + 0.5 * item_f1(list(example.target_info), parsed.target_info or [])

    def feedback(self, example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> dspy.Prediction:
        parsed = self.parse(pred) if pred is not None else self.failed("no answer")
        if parsed.decision is None:
            return dspy.Prediction(score=0.0, feedback=f"no valid decision (gold {example.decision}): answer continue or stop")
        gold, predicted = list(example.target_info), parsed.target_info or []
        matched = match_items(gold, predicted)
        missed = [gold[i] for i in range(len(gold)) if i not in {i for i, _ in matched}]
        invented = [predicted[j] for j in range(len(predicted)) if j not in {j for _, j in matched}]
        notes = [f"decision {parsed.decision}, gold {example.decision}" + ("" if parsed.decision == example.decision else ": wrong")]
        if missed:
            notes.append("missed: " + "; ".join(missed))
        if invented:
            notes.append("not asked by the pharmacist: " + "; ".join(invented))
        return dspy.Prediction(score=self.metric(example, pred), feedback=". ".join(notes))

    def score(self, rows: list[ExtractorRow], preds: list[ExtractorPrediction], *, seed: int = 0, n_boot: int = 1000) -> ItemScores:
        return score_items([(r.target_info, r.decision) for r in rows], [(p.target_info, p.decision) for p in preds],
                           seed=seed, n_boot=n_boot)

    def compare(self, rows: list[ExtractorRow], baseline: list[ExtractorPrediction], calibrated: list[ExtractorPrediction], *,
                seed: int = 0) -> PairedComparison:
        gold = [(r.target_info, r.decision) for r in rows]
        return paired_items(gold, [(p.target_info, p.decision) for p in baseline],
                            [(p.target_info, p.decision) for p in calibrated], metric="item_f1", seed=seed)

    def loo_score(self, rows: list[ExtractorRow], neighbours: Neighbours) -> float:
        """Mean of: the neighbours' similarity-weighted decision vote is right, and the nearest
        neighbour's fields match this row's fields (F1). Values differ per patient, so fields are
        what a demonstration can teach."""
        total = 0.0
        for row, near in zip(rows, neighbours):
            weight: dict[str, float] = {}
            for j, similarity in near:
                weight[rows[j].decision] = weight.get(rows[j].decision, 0.0) + similarity
            vote = max(weight, key=weight.get)
            nearest = rows[near[-1][0]]
            fields = {split_item(i)[0] for i in row.target_info}
            total += 0.5 * (vote == row.decision) + 0.5 * _field_f1(fields, {split_item(i)[0] for i in nearest.target_info})
        return total / len(rows)

    def csv_values(self, item: ExtractorRow | ExtractorPrediction) -> dict[str, str]:
        return {"decision": item.decision or "", "items": "; ".join(item.target_info or [])}

    def disagreement(self, row: dict[str, str], side: str) -> Disagreement | None:
        """Half the decision, half the items' F1: 0 when both are right, 1 when both are wrong."""
        gold_items = [i for i in row["gold_items"].split("; ") if i]
        pred_items = [i for i in row[f"{side}_items"].split("; ") if i]
        decision_ok = row[f"{side}_decision"] == row["gold_decision"]
        f1 = item_f1(gold_items, pred_items)
        if decision_ok and f1 == 1.0:
            return None
        shown = {"future": row.get("future", ""), "gold items": row["gold_items"] or "(none)",
                 "predicted items": row[f"{side}_items"] or "(none)"}
        return Disagreement(id=row["id"], gold=row["gold_decision"], predicted=row[f"{side}_decision"] or "unparsed",
                            error=round(1.0 - (0.5 * decision_ok + 0.5 * f1), 3), context=row.get("context", ""), shown=shown,
                            note=row.get(f"{side}_error", ""))

    def floors(self) -> list[Floor]:
        return [LexicalFields(lambda row, decision, items: ExtractorPrediction(decision=decision, target_info=items))]


EXTRACTOR = Extractor()
