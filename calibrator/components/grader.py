"""The grader (Learn-to-Ask's LLM judge): does a candidate pharmacist turn ask for the target information?

Inputs are the dialogue so far, the micro-goal (`field: value` items) and the candidate turn;
outputs are content_score and format_score, each 0, 0.5 or 1. The output type is a Literal so
engines that decode against a JSON schema can only produce valid labels.
"""

from typing import Any, Literal

import dspy
from pydantic import BaseModel

from calibrator.components.retrieval import NearestDemos
from calibrator.embedder import embedder
from calibrator.goldset import GraderRow
from calibrator.prompt import PromptFile

Score = Literal[0.0, 0.5, 1.0]
INPUTS = ("context", "target_info", "candidate")
OUTPUTS = ("content_score", "format_score")
# Which input fields make two grading cases alike; the knn strategy picks one on train.
RETRIEVAL_KEY_CHOICES = (("candidate",), ("target_info", "candidate"), ("context", "target_info", "candidate"))
DEMO_CONTEXT_TURNS = 2  # demos keep the last turns only: enough to show the rubric, cheap for a small model


class GradeTurn(dspy.Signature):
    """Score the candidate pharmacist turn against the target information."""

    context: str = dspy.InputField(desc="the consultation so far, one `patient:` / `pharmacist:` turn per line")
    target_info: str = dspy.InputField(desc="what the expert asked about next, `field: value` items separated by `;`")
    candidate: str = dspy.InputField(desc="the proposed next pharmacist turn")
    content_score: Score = dspy.OutputField(desc="1 asks a target field directly, 0.5 related but not direct, 0 irrelevant")
    format_score: Score = dspy.OutputField(desc="1 one question, 0.5 two questions, 0 three or more or none")


class GraderPrediction(BaseModel):
    content_score: float | None = None
    format_score: float | None = None
    error: str | None = None


def to_example(row: GraderRow, *, demo: bool = False) -> dspy.Example:
    context = row.context
    if demo:
        context = "\n".join(context.split("\n")[-DEMO_CONTEXT_TURNS:])
    fields: dict[str, Any] = {"context": context, "target_info": row.target_text, "candidate": row.candidate,
                              "content_score": row.content_score}
    if row.format_score is not None:
        fields["format_score"] = row.format_score
    return dspy.Example(**fields, id=row.id).with_inputs(*INPUTS)


def demo_record(example: dspy.Example) -> dict[str, Any]:
    return {k: example[k] for k in (*INPUTS, *OUTPUTS) if k in example}


def demo_example(record: dict[str, Any]) -> dspy.Example:
    return dspy.Example(**record).with_inputs(*INPUTS)


def build_program(prompt: PromptFile) -> dspy.Module:
    """The DSPy program that runs this prompt: fixed demos, or demos retrieved per input."""
    program = dspy.Predict(GradeTurn.with_instructions(prompt.instructions.strip()))
    program.demos = [demo_example(d) for d in prompt.demos]
    if prompt.retrieval is None:
        return program
    pool = [demo_example(d) for d in prompt.retrieval.pool]
    return NearestDemos(program, pool, prompt.retrieval.k, prompt.retrieval.keys, embedder())


def instructions_of(program: dspy.Module) -> str:
    return program.predictors()[0].signature.instructions


def demos_of(program: dspy.Module) -> list[dict[str, Any]]:
    return [demo_record(d) for d in program.predictors()[0].demos]


def _score(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number in (0.0, 0.5, 1.0) else None


def grade(program: dspy.Module, row: GraderRow) -> GraderPrediction:
    """One prediction; a parse or LM failure is recorded on the prediction, never raised."""
    try:
        out = program(context=row.context, target_info=row.target_text, candidate=row.candidate)
    except dspy.utils.exceptions.AdapterParseError as e:
        return GraderPrediction(error=f"parse: {str(e)[:200]}")
    except Exception as e:  # LM failures after retries: recorded per example, the run goes on
        return GraderPrediction(error=f"{type(e).__name__}: {str(e)[:200]}")
    content = _score(out.get("content_score"))
    return GraderPrediction(content_score=content, format_score=_score(out.get("format_score")),
                            error=None if content is not None else f"parse: content_score={out.get('content_score')!r}")


def metric(example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> float:
    """Ordinal closeness for the optimizers: 1 exact, 0.5 one step off, 0 two steps off or unparsed."""
    predicted = _score(pred.get("content_score")) if pred is not None else None
    if predicted is None:
        return 0.0
    return 1.0 - abs(predicted - float(example.content_score))


def feedback(example: dspy.Example, pred: dspy.Prediction, trace: Any = None, *_: Any) -> dspy.Prediction:
    """GEPA's metric: the score plus a sentence saying which way the judgement was off."""
    gold = float(example.content_score)
    predicted = _score(pred.get("content_score")) if pred is not None else None
    if predicted is None:
        text = f"no valid content_score (gold {gold:g}): answer 0, 0.5 or 1"
    elif predicted == gold:
        text = f"scored {predicted:g}, gold {gold:g}: correct"
    else:
        direction = "too lenient" if predicted > gold else "too strict"
        text = f"scored {predicted:g}, gold {gold:g}: {direction} for target {example.target_info!r}"
    return dspy.Prediction(score=metric(example, pred), feedback=text)
