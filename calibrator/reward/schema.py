"""The reward's boundary types: one case to grade (context, target, candidate), what grading it gave, and the typed
request and answer of `POST /grade`. A target is the extractor's: the expert's decision and, for a continue, the
`field: value` items the expert sought."""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from calibrator.expert_logs.logs import Message, render
from calibrator.reward.terms import Fusion, Terms


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["continue", "stop"]
    target_info: list[str] = []  # `field: value` items; also accepted as one `;`-separated string

    @field_validator("target_info", mode="before")
    @classmethod
    def _items(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(";") if part.strip()]
        return value


class Case(BaseModel):
    """One candidate turn to grade; context as the gold sets write it (`patient: …` / `pharmacist: …` lines)."""

    context: str
    target: Target
    candidate: str
    step: int | None = None  # the trainer's step, when the caller says it: the served log is sampled by it


class Graded(BaseModel):
    candidate: str
    terms: Terms
    reward: float


def context_text(context: str | list[Message] | list[dict]) -> str:
    """Messages rendered as the gold sets write `context`; text as it is."""
    if isinstance(context, str):
        return context
    return render([m if isinstance(m, Message) else Message.model_validate(m) for m in context])


class GradeRequest(BaseModel):
    """`POST /grade`: one dialogue so far, its target, and one or more candidate next turns."""

    model_config = ConfigDict(extra="forbid")

    context: str | list[Message] = Field(description="the dialogue so far: messages {role: user|assistant, content}, or "
                                                      "`patient: …` / `pharmacist: …` lines")
    target: Target
    candidates: list[str] = Field(min_length=1)
    step: int | None = Field(None, ge=0)

    def cases(self) -> list[Case]:
        text = context_text(self.context)
        return [Case(context=text, target=self.target, candidate=c, step=self.step) for c in self.candidates]


class GradeResponse(BaseModel):
    fusion: Fusion
    judge: str  # the content judge: "lm" or a floor's name
    graded: list[Graded]
