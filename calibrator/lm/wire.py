"""The wire: one chat call to a backend, in plain messages. Caching and accounting live in `engine.py`."""

from typing import Any, Protocol

from pydantic import BaseModel


class TokenChoice(BaseModel):
    """One generated token with its log-probability and the backend's top alternatives at that position.
    llama.cpp and OpenAI report the model's distribution before any grammar or schema constraint."""

    token: str
    logprob: float
    top: list[tuple[str, float]] = []


class Answer(BaseModel):
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    finish_reason: str = "stop"
    logprobs: list[TokenChoice] | None = None  # only when asked for and the backend gives them


class Wire(Protocol):
    """A backend that answers chat messages; the SDK underneath owns timeouts and retries."""

    supports_response_schema: bool
    supports_logprobs: bool

    def chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Answer: ...

    def close(self) -> None: ...
