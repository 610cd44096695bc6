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
from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic_core import core_schema

from calibrator.components.base import Component, Neighbours, Prediction
from calibrator.components.floors import Floor, LexicalFields
from calibrator.goldset import ExtractorRow
from calibrator.items import ItemScores, item_f1, match_items, paired_items, score_items, split_item
from calibrator.metrics import PairedComparison

DEFAULT_FIELDS = ("symptom", "nature", "location", "severity", "trigger", "duration",
                  "allergies", "current medication", "pregnancy/breastfeeding", "age group", "chronic conditions",
                  "previous treatment")
VALUE_CHARS = 60  # an answer in a few words; also stops a small model repeating itself inside one item
MAX_ITEMS = 4  # a pharmacist turn asks one or two things; the cap stops a runaway list
CONTEXT_LINES = 12  # the history the model reads: enough to tell a new question from one already answered
DEMO_CONTEXT_LINES = 2


class ExtractTarget(dspy.Signature):
    """Read the consultation and what happened next; say whether the pharmacist went on asking and what they asked for."""

    context: str = dspy.InputField(desc="the consultation before the pharmacist's next turn, one `patient:` / `pharmacist:` turn per line")
    future: str = dspy.InputField(desc="what happened next: the pharmacist's turn, then the patient's reply if there was one")
    decision: Literal["continue", "stop"] = dspy.OutputField(desc="stop when no patient line follows the pharmacist's turn, else continue")
    target_info: list[str] = dspy.OutputField(desc="each thing the pharmacist's turn asked for, as `field: value` with the patient's answer as value; [] when stop")


def items_type(fields: list[str] | tuple[str, ...]) -> type[list]:
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
            return {"type": "array", "items": {"type": "string", "pattern": pattern}, "maxItems": MAX_ITEMS}

    return FieldItems


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


class Extractor(Component):
    name = "extractor"
    row_model = ExtractorRow
    signature = ExtractTarget
    selection_metric = "item_f1"
    secondary_metric = "decision_accuracy"
    retrieval_key_choices = (("future",), ("context", "future"))

    def inputs_of(self, row: Any, *, demo: bool = False) -> dict[str, Any]:
        keep = DEMO_CONTEXT_LINES if demo else CONTEXT_LINES
        return {"context": "\n".join(row.context.split("\n")[-keep:]), "future": observed_future(row.future)}

    def gold_of(self, row: ExtractorRow) -> dict[str, Any]:
        return {"decision": row.decision, "target_info": list(row.target_info)}

    def signature_for(self, prompt: Any) -> type[dspy.Signature]:
        fields = prompt.fields or DEFAULT_FIELDS
        described = self.signature.output_fields["target_info"].json_schema_extra["desc"]
        return super().signature_for(prompt).with_updated_fields(
            "target_info", type_=items_type(fields), desc=f"{described}; field is one of: {', '.join(fields)}")

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

    def floors(self) -> list[Floor]:
        return [LexicalFields(lambda row, decision, items: ExtractorPrediction(decision=decision, target_info=items))]


EXTRACTOR = Extractor()
