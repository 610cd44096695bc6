"""Learn-to-Ask's reward terms, with the calibrated grader as the judge of content (and of format when it beats the rule).

Per completion: a wrong stop/continue decision scores 0 on every term. A correct stop scores content 1,
and format 1 only for exactly `<stop />`. A correct continue is scored by the grader against the
sample's target info; its format term comes from the source chosen on the grader's val agreement
(`choose_format_source`): the question-count rule (the LM's format answer is then ignored) or the LM.
The terms are fused by one of four modes (default: R_stop * (1 + 2 R_content) +
R_format, range 0-4). A grader failure scores that completion 0 and is marked, never raised. Every user of the reward
(the trainer, `train eval`, the TRL and verl callables, the HTTP service) scores through these functions.
"""

import re
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, Literal

from pydantic import BaseModel

from calibrator.components.grader import FormatSourceName, GraderPrediction, format_by_rule

STOP_TAG = "<stop />"
STOP_PREFIX = "<stop"  # what makes an answer a stop, wherever it appears
Grade = Callable[[str, str, str], GraderPrediction]  # (context, target info, candidate) -> scores


class Terms(BaseModel):
    stop: float
    content: float
    format: float
    grader_failed: bool = False
    graded: bool = True  # False: content was not graded (a run with `content: false`); content is then 0 and means nothing


def decision_of(completion: str) -> str:
    return "stop" if STOP_PREFIX in completion.lower() else "continue"


def score_terms(completion: str, decision: str, context: str, target_info: str, grade: Grade | None,
                format_source: FormatSourceName) -> Terms:
    """grade=None: no grader (`content: false`): a correct continue gets format by rule and content 0, marked ungraded."""
    if decision_of(completion) != decision:
        return Terms(stop=0.0, content=0.0, format=0.0)
    if decision == "stop":
        return Terms(stop=1.0, content=1.0, format=1.0 if completion.strip() == STOP_TAG else 0.0)
    candidate = completion.strip()
    if grade is None:
        return Terms(stop=1.0, content=0.0, format=format_by_rule(candidate), graded=False)
    graded = grade(context, target_info, candidate)
    if graded.error is not None or graded.content_score is None:
        return Terms(stop=0.0, content=0.0, format=0.0, grader_failed=True)
    fmt = format_by_rule(candidate) if format_source == "rule" else graded.format_score or 0.0
    return Terms(stop=1.0, content=graded.content_score, format=fmt)


FUSIONS = ("default", "sum", "content", "stop")
Fusion = Literal["default", "sum", "content", "stop"]


def fuse(t: Terms, mode: str) -> float:
    if t.grader_failed:
        return 0.0
    if mode == "default":
        return t.stop * (1 + 2 * t.content) + t.format
    if mode == "sum":
        return t.stop + t.content + t.format
    if mode == "content":
        return 2 * t.content + t.format
    if mode == "stop":
        return 3 * t.stop + t.format
    raise ValueError(f"unknown fusion mode {mode!r}")


def completion_text(completion: Any) -> str:
    """TRL passes conversational completions as message lists, plain ones as strings."""
    if isinstance(completion, list):
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


END_TOKENS = re.compile(r"(?:<\|im_end\|>|<\|endoftext\|>|<\|eot_id\|>|<\|end\|>|</s>|<eos>|<pad>|<\|pad\|>|\s)+$")


def without_end_tokens(text: str) -> str:
    """A decoded response without the end-of-sequence and padding tokens an engine may leave after it."""
    return END_TOKENS.sub("", text).strip()


def floor_call(floor: Any) -> Grade:
    """A model-free content judge (a grader floor fitted on train) as a Grade: no LM call, the same answer every time."""
    def grade(context: str, target_info: str, candidate: str) -> GraderPrediction:
        return floor.predict([SimpleNamespace(context=context, target_text=target_info, candidate=candidate)])[0]
    return grade


def grader_call(program: Any, predict: Callable[[Any, Any], GraderPrediction]) -> Grade:
    def grade(context: str, target_info: str, candidate: str) -> GraderPrediction:
        return predict(program, SimpleNamespace(context=context, target_text=target_info, candidate=candidate))
    return grade
