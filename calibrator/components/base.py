"""What the calibration engine needs from an LLM component, and the parts every component shares.

A component is a DSPy signature plus what makes it calibratable: how a gold row becomes an
example, how an answer is parsed (a failure is recorded, never raised), the per-example metric the
DSPy optimizers climb, the split-level scores the report shows, and the paired test the verdict
rests on. The engine (evaluate, optimize, runs) only talks to this interface.
"""

from abc import ABC, abstractmethod
from typing import Any, ClassVar, Literal

import dspy
import numpy as np
from pydantic import BaseModel

from calibrator.components.label_read import LabelReader
from calibrator.components.retrieval import NearestDemos
from calibrator.agreement.decision import TOP_LOGPROBS
from calibrator.gold.goldset import GoldRow
from calibrator.lm.failure import unavailable_in
from calibrator.agreement.metrics import PairedComparison
from calibrator.prompt import PromptFile

Neighbours = list[list[tuple[int, float]]]  # per train row: (other row index, cosine similarity), nearest last


def nearest(similarity: np.ndarray, k: int) -> Neighbours:
    """Per row of a similarity matrix (rows: queries, columns: labelled rows), its k most similar columns, nearest last."""
    return [[(int(j), float(sims[j])) for j in np.argsort(sims)[-k:]] for sims in similarity]


def neighbour_votes(gold: list[Any], neighbours: Neighbours) -> list[Any]:
    """Each row's label by a similarity-weighted vote of its neighbours' gold labels (knn's leave-one-out proxy)."""
    votes = []
    for near in neighbours:
        weight: dict[Any, float] = {}
        for j, similarity in near:
            weight[gold[j]] = weight.get(gold[j], 0.0) + similarity
        votes.append(max(weight, key=weight.get))
    return votes


class Prediction(BaseModel):
    error: str | None = None
    label_probs: list[float] | None = None  # the ordinal label's distribution, when the prompt reads one


class Disagreement(BaseModel):
    """One predictions.csv row where a prediction differs from gold, as the report, review and audit show it."""

    id: str
    gold: str
    predicted: str
    error: float
    context: str
    shown: dict[str, str]  # other inputs and outputs worth reading, by column title
    note: str = ""


DIALOGUE_CELL = ("one turn per line inside the cell (Alt+Enter in Excel, Ctrl+Enter in LibreOffice); "
                 "every line starts with `patient: ` or `pharmacist: `")
ITEMS_CELL = "`field: value` items separated by `;`, e.g. `duration: three days; allergies: none`"


class Strong(str):
    """Text a report note shows in bold."""


class TemplateColumn(BaseModel):
    """One column of a gold-set template's `data` sheet."""

    name: str
    help: str
    width: int
    choices: tuple[str, ...] | None = None  # a dropdown
    wrapped: bool = False


class TemplateSheet(BaseModel):
    """What `goldset template` shows a labeller of this component: the label columns with their help, the rubric, the field
    vocabulary (if any), one worked example per label (a header row first), extra titled paragraphs, instruction widths."""

    columns: list[TemplateColumn]
    rubric: list[tuple[str, str]]
    fields_title: str | None = None
    fields: list[tuple[str, str]] = []
    examples: list[tuple[str, ...]]
    sections: list[tuple[str, list[str]]] = []
    widths: tuple[int, ...]


class Floor(ABC):
    """A model-free reference predictor (components/floors.py has them): fit(train rows) once, then predict any rows;
    `describe` says what it did, with its fitted settings. It records the ids it was fitted on, so a run can prove it
    never saw val or test."""

    name: str

    def __init__(self) -> None:
        self.fitted_ids: list[str] = []

    def fit(self, rows: list[GoldRow]) -> "Floor":
        self.fitted_ids = [r.id for r in rows]
        self._fit(rows)
        return self

    @abstractmethod
    def _fit(self, rows: list[GoldRow]) -> None: ...

    @abstractmethod
    def predict(self, rows: list[GoldRow]) -> list[Prediction]: ...

    @abstractmethod
    def describe(self) -> str: ...


class Component(ABC):
    name: ClassVar[str]
    help_line: ClassVar[str]  # one line for `--component` in --help
    label_kind: ClassVar[Literal["ordinal", "categorical", "items"]]  # what its label is; the report's header says it
    row_model: ClassVar[type[GoldRow]]
    signature: ClassVar[type[dspy.Signature]]
    selection_metric: ClassVar[str]  # compared on val to pick a winner, and paired on test for the verdict
    secondary_metric: ClassVar[str]  # breaks ties on val
    retrieval_key_choices: ClassVar[tuple[tuple[str, ...], ...]]  # which inputs make two cases alike (knn)
    scores_model: ClassVar[type[BaseModel]]  # what `score` returns: the split scores run.json keeps
    # What the report shows, so report/ names no component: the metrics table's columns (score attribute, title), counts
    # beside n, and the label the confusion matrix crosses: its predictions.csv suffix ('' = the main label) and values.
    report_metrics: ClassVar[tuple[tuple[str, str], ...]]
    report_counts: ClassVar[tuple[tuple[str, str], ...]] = ()
    report_caption: ClassVar[str] = ""  # what the metrics table's own columns mean, under its caption
    confusion_column: ClassVar[str] = ""
    confusion_labels: ClassVar[tuple[str, ...]]

    template: ClassVar[TemplateSheet]  # the gold-set template (`goldset template`)
    # What `review` exports: each gold-set label column with its predictions.csv suffix ('' = the main label), the values a
    # reviewer may pick for adjudicated_label (None: free text), and how to write one.
    review_columns: ClassVar[dict[str, str]]
    adjudication_choices: ClassVar[tuple[str, ...] | None] = None
    adjudication_hint: ClassVar[str]

    def confusion_label(self, cell: str) -> str:
        """A predictions.csv cell of the confused label as one of `confusion_labels`."""
        return cell

    def report_note(self, record: dict[str, Any]) -> list[str | tuple[str, float | None]] | None:
        """A paragraph the report shows under the metrics, as text pieces (`Strong` for bold) and (run.json path, value) figures,
        which the page carries with their path like every other number (None: nothing to say)."""
        return None

    # An ordinal output whose label can be read as a distribution and decided by a fitted rule (the threshold
    # strategy); None for a component without one.
    ordinal_field: ClassVar[str | None] = None
    ordinal_labels: ClassVar[tuple[float, ...]] = ()

    def label_tokens(self) -> dict[str, float]:
        """One digit per label, in label order: a digit is one token in every tokenizer we know, and JSON writes it
        bare, so each label is one distinct token at the answer position."""
        if self.ordinal_field is None or not 2 <= len(self.ordinal_labels) <= 10:
            raise ValueError(f"the {self.name} has no ordinal label to read as probabilities")
        return {str(i): float(v) for i, v in enumerate(self.ordinal_labels)}

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.signature.input_fields)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.signature.output_fields)

    def prompt_mismatch(self, prompt: PromptFile, rows: list[GoldRow]) -> str | None:
        """Why this prompt cannot be measured on these rows (their labels mean something else), or None."""
        return None

    @abstractmethod
    def inputs_of(self, row: GoldRow, *, demo: bool = False) -> dict[str, Any]:
        """The program's inputs for a row; `demo` trims them for use as a demonstration."""

    @abstractmethod
    def gold_of(self, row: GoldRow) -> dict[str, Any]:
        """The row's labels, under the signature's output names."""

    def to_example(self, row: GoldRow, *, demo: bool = False) -> dspy.Example:
        return dspy.Example(**self.inputs_of(row, demo=demo), **self.gold_of(row), id=row.id).with_inputs(*self.inputs)

    def demo_record(self, example: dspy.Example) -> dict[str, Any]:
        """A demonstration as the prompt file stores it; the gold row's id rides along (the LM never sees it) so a
        run can tell which rows a prompt was built from."""
        keys = ("id", *self.inputs, *self.outputs)
        return {k: example[k] for k in keys if k in example and (k != "id" or example[k] is not None)}

    def rows_in_prompt(self, prompt: PromptFile, rows: list[GoldRow]) -> list[str]:
        """Ids of `rows` that `prompt` carries as demonstrations or in its retrieval pool: by the id a record
        keeps, or by the same inputs (full or trimmed as a demo), so a relabelled row or a record written
        before ids were kept is still found."""
        records = list(prompt.demos) + (list(prompt.retrieval.pool) if prompt.retrieval else [])
        ids = {str(r["id"]) for r in records if r.get("id") is not None}
        shown = {self._inputs_key(r) for r in records}
        found = []
        for row in rows:
            keys = {self._inputs_key(self.inputs_of(row)), self._inputs_key(self.inputs_of(row, demo=True))}
            if row.id in ids or keys & shown:
                found.append(row.id)
        return found

    def _inputs_key(self, record: dict[str, Any]) -> tuple[str, ...]:
        return tuple(" ".join(str(record.get(k, "")).split()) for k in self.inputs)

    def demo_example(self, record: dict[str, Any], prompt: PromptFile | None = None) -> dspy.Example:
        """A stored demonstration as the program shows it: with label tokens, its label written as its token."""
        if prompt is not None and prompt.label_tokens and record.get(self.ordinal_field) is not None:
            token = {v: int(t) for t, v in prompt.label_tokens.items()}.get(float(record[self.ordinal_field]))
            record = record | {self.ordinal_field: token}
        return dspy.Example(**record).with_inputs(*self.inputs)

    def signature_for(self, prompt: PromptFile) -> type[dspy.Signature]:
        signature = self.signature.with_instructions(prompt.instructions.strip())
        if not prompt.label_tokens:
            return signature
        tokens = prompt.label_tokens
        mapping = ", ".join(f"{t} for {v:g}" for t, v in sorted(tokens.items(), key=lambda tv: tv[1]))
        field = self.ordinal_field
        described = signature.output_fields[field].json_schema_extra["desc"]
        return signature.with_instructions(
            f"{signature.instructions}\n\nWrite {field} as its label token: {mapping}.").with_updated_fields(
            field, type_=Literal[tuple(int(t) for t in tokens)], desc=f"{described}; written as its label token: {mapping}")

    def build_program(self, prompt: PromptFile, embed: Any = None) -> dspy.Module:
        """The DSPy program that runs this prompt: fixed demos, or demos retrieved per input; with label tokens, wrapped
        to read the label's distribution. `embed` (default: the bundled MiniLM) is only loaded when the prompt retrieves."""
        config = {"logprobs": True, "top_logprobs": TOP_LOGPROBS} if prompt.label_tokens else {}
        module = dspy.ChainOfThought if prompt.reasoning else dspy.Predict
        program: dspy.Module = module(self.signature_for(prompt), **config)
        program.demos = [self.demo_example(d, prompt) for d in prompt.demos]
        if prompt.retrieval is not None:
            if embed is None:
                from calibrator.embedder import embedder
                embed = embedder()
            pool = [self.demo_example(d, prompt) for d in prompt.retrieval.pool]
            program = NearestDemos(program, pool, prompt.retrieval.k, prompt.retrieval.keys, embed)
        if prompt.label_tokens:
            program = LabelReader(program, self.ordinal_field, prompt.label_tokens, prompt.decision)
        return program

    def predict(self, program: dspy.Module, row: GoldRow) -> Prediction:
        """One prediction; a parse or LM failure is recorded on the prediction, never raised. A retrieving program never
        shows the row itself as a demonstration."""
        inputs = self.inputs_of(row)
        if isinstance(program, (NearestDemos, LabelReader)):
            inputs["exclude_id"] = getattr(row, "id", None)
        try:
            out = program(**inputs)
        except dspy.utils.exceptions.AdapterParseError as e:
            return self.failed(f"parse: {str(e)[:200]}")
        except Exception as e:  # LM failures after retries: recorded per example, the run goes on
            if (stop := unavailable_in(e)) is not None:  # no row can be scored: the run stops with the breaker's line
                raise stop from e
            return self.failed(f"{type(e).__name__}: {str(e)[:200]}")
        parsed = self.parse(out)
        return parsed.model_copy(update={"label_probs": out.get("label_probs")}) if out.get("label_probs") else parsed

    @abstractmethod
    def parse(self, out: dspy.Prediction) -> Prediction: ...

    @abstractmethod
    def failed(self, error: str) -> Prediction: ...

    @abstractmethod
    def metric(self, example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> float:
        """Per-example score in [0, 1] for MIPROv2 and GEPA."""

    @abstractmethod
    def feedback(self, example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> dspy.Prediction:
        """GEPA's metric: the score and a sentence saying what was wrong."""

    @abstractmethod
    def score(self, rows: list[GoldRow], preds: list[Prediction], *, seed: int = 0, n_boot: int = 1000) -> BaseModel:
        """Split-level agreement with intervals; has an attribute per selection/secondary metric."""

    @abstractmethod
    def compare(self, rows: list[GoldRow], baseline: list[Prediction], calibrated: list[Prediction], *, seed: int = 0) -> PairedComparison:
        """Paired bootstrap of calibrated - baseline on `selection_metric`."""

    @abstractmethod
    def loo_score(self, rows: list[GoldRow], neighbours: Neighbours) -> float:
        """How well each train row's label is reproduced from its nearest other train rows' labels:
        knn's LM-free proxy for which neighbours make useful demonstrations."""

    @abstractmethod
    def csv_values(self, item: GoldRow | Prediction) -> dict[str, str]:
        """predictions.csv cells for a gold row or a prediction, keyed by column suffix ('' = main label)."""

    @abstractmethod
    def disagreement(self, row: dict[str, str], side: str) -> Disagreement | None:
        """From one predictions.csv row: how `side`'s prediction differs from gold (None where it agrees)."""

    @abstractmethod
    def floors(self) -> list[Floor]:
        """Fresh, unfitted model-free reference predictors for this component (no LM call): the floor every report shows."""

    def summary(self, scores: BaseModel, n: int) -> dict[str, Any]:
        """What a calibrated prompt records about itself (the trainer's gate reads this)."""
        main, second = self.selection_metric, self.secondary_metric
        return {main: getattr(scores, main), f"{main}_ci": list(getattr(scores, f"{main}_ci")),
                second: getattr(scores, second), "n": n}
