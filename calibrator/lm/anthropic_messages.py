"""Anthropic Messages API through the official SDK (also answered by llama.cpp's server at /v1/messages)."""

from typing import Any

import anthropic

from calibrator.lm.wire import Answer

DEFAULT_MAX_TOKENS = 1024


class AnthropicWire:
    # The Messages API has no JSON-schema decoding: answers are parsed, failures counted.
    supports_response_schema = False
    supports_logprobs = False  # the Messages API reports no token log-probabilities

    def __init__(self, model: str, *, base_url: str | None, api_key: str | None, timeout: float, max_retries: int):
        self.model = model
        self.client = anthropic.Anthropic(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=max_retries)

    def chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Answer:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [m for m in messages if m["role"] != "system"]
        kwargs: dict[str, Any] = {"max_tokens": params.get("max_tokens") or DEFAULT_MAX_TOKENS}
        if system:
            kwargs["system"] = system
        # Recent SDKs no longer take sampling arguments; the Messages API (and llama.cpp's) still reads them.
        sampling = {k: params[k] for k in ("temperature", "top_p") if params.get(k) is not None}
        if "temperature" in sampling:
            sampling["temperature"] = min(sampling["temperature"], 1.0)
        if sampling:
            kwargs["extra_body"] = sampling
        if params.get("stop"):
            kwargs["stop_sequences"] = list(params["stop"])
        r = self.client.messages.create(model=self.model, messages=turns, **kwargs)
        text = "".join(block.text for block in r.content if getattr(block, "type", "") == "text")
        # The Messages API's input_tokens leaves out the prompt tokens read from or written to its cache;
        # Answer.prompt_tokens is the whole prompt, as on the OpenAI wire.
        cache_read = getattr(r.usage, "cache_read_input_tokens", None) or 0
        cache_written = getattr(r.usage, "cache_creation_input_tokens", None) or 0
        return Answer(
            text=text,
            prompt_tokens=(r.usage.input_tokens or 0) + cache_read + cache_written,
            completion_tokens=r.usage.output_tokens or 0,
            cached_prompt_tokens=cache_read,
            finish_reason="length" if r.stop_reason == "max_tokens" else "stop",
        )

    def close(self) -> None:
        self.client.close()
