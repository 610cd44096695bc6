"""OpenAI Chat Completions through the official SDK: OpenAI itself, vLLM, Ollama, llama.cpp servers."""

from typing import Any

import openai

from calibrator.lm.wire import Answer, TokenChoice


def token_choices(logprobs: Any) -> list[TokenChoice] | None:
    """`choices[0].logprobs.content` as TokenChoices; None when the backend sent none."""
    content = getattr(logprobs, "content", None) if logprobs is not None else None
    if not content:
        return None
    return [TokenChoice(token=t.token, logprob=float(t.logprob),
                        top=[(a.token, float(a.logprob)) for a in (t.top_logprobs or [])]) for t in content]


class OpenAIChatWire:
    supports_response_schema = True
    supports_logprobs = True  # OpenAI, vLLM and llama.cpp answer `logprobs`/`top_logprobs`; a server that ignores them sends none

    def __init__(self, model: str, *, base_url: str | None, api_key: str | None, timeout: float, max_retries: int):
        # The SDK retries 408/409/429/5xx and connection errors with exponential backoff.
        self.model = model
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)

    def chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Answer:
        r = self.client.chat.completions.create(model=self.model, messages=messages, **params)
        choice = r.choices[0]
        usage = r.usage
        details = getattr(usage, "prompt_tokens_details", None) if usage else None
        return Answer(
            text=choice.message.content or "",
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            cached_prompt_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0,
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            logprobs=token_choices(getattr(choice, "logprobs", None)) if params.get("logprobs") else None,
        )

    def close(self) -> None:
        self.client.close()
