"""The wire: one chat call to a backend, in plain messages. Caching and accounting live in `engine.py`."""

from typing import Any, Protocol

from pydantic import BaseModel


class Answer(BaseModel):
    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    finish_reason: str = "stop"


class Wire(Protocol):
    """A backend that answers chat messages; the SDK underneath owns timeouts and retries."""

    supports_response_schema: bool

    def chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Answer: ...

    def close(self) -> None: ...
