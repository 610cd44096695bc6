"""The DSPy engine every backend plugs into: lm15 Request in, lm15 Response out, through our cache.

DSPy 3.4's engine contract (`complete(Request) -> Response`) replaces custom `BaseLM.forward`.
We keep DSPy's own response cache off and cache here instead, because only here do we know the
backend identity that belongs in the key and can count hits and tokens for the usage record.
"""

import time
from typing import Any

from dspy.lm15 import Message, Request, Response, TextPart, TokenLogprob, TopLogprob, Usage

from calibrator.lm.cache import CallCache, cache_key
from calibrator.lm.usage import UsageMeter
from calibrator.lm.wire import Answer, Wire


def _text(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(getattr(part, "text", "") or "" for part in content)


def request_messages(request: Request) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": _text(request.system)}] if request.system else []
    messages += [{"role": m.role, "content": _text(m.parts)} for m in request.messages]
    return messages


def openai_response_format(fmt: dict[str, Any] | None) -> dict[str, Any] | None:
    """lm15 states a schema flat ({type, name, schema, strict}); the OpenAI wire nests it under json_schema."""
    if not fmt or fmt.get("type") != "json_schema" or "json_schema" in fmt:
        return fmt
    inner = {k: fmt[k] for k in ("name", "schema", "strict") if k in fmt}
    return {"type": "json_schema", "json_schema": inner}


def request_params(request: Request, *, schema: bool, logprobs: bool = False) -> dict[str, Any]:
    """The wire's sampling parameters. Token log-probabilities are asked for only when the request wants them
    (DSPy's `top_logprobs=N` arrives as `config.logprobs = N`) and the wire can answer; otherwise the request is
    the plain one, so it shares the plain call's cache entry."""
    c = request.config
    params: dict[str, Any] = {
        "temperature": c.temperature,
        "max_tokens": c.max_tokens,
        "top_p": c.top_p,
        "seed": c.seed,
        "stop": list(c.stop) or None,
        "response_format": openai_response_format(c.response_format) if schema else None,
    }
    if logprobs and c.logprobs is not None:
        params |= {"logprobs": True, "top_logprobs": c.logprobs}
    return {k: v for k, v in params.items() if v is not None}


def lm15_logprobs(answer: Answer) -> tuple[TokenLogprob, ...] | None:
    if answer.logprobs is None:
        return None
    return tuple(TokenLogprob(token=t.token, logprob=t.logprob, top=tuple(TopLogprob(token=a, logprob=p) for a, p in t.top))
                 for t in answer.logprobs)


class CachingEngine:
    """Serves each distinct request once, ever; concurrent callers share the cache and the meter."""

    supports_function_calling = False
    supports_reasoning = False

    def __init__(self, wire: Wire, *, identity: dict[str, str], cache: CallCache, meter: UsageMeter) -> None:
        self.wire = wire
        self.identity = identity
        self.cache = cache
        self.meter = meter
        self.supports_response_schema = wire.supports_response_schema
        self.supports_logprobs = getattr(wire, "supports_logprobs", False)
        # logprobs are accepted from every caller; a wire without them answers the plain request instead
        base = {"temperature", "max_tokens", "top_p", "stop", "seed", "logprobs", "top_logprobs"}
        self.supported_params = base | ({"response_format"} if wire.supports_response_schema else set())

    def chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Answer:
        key = cache_key({"lm": self.identity, "messages": messages, "params": params})
        if (hit := self.cache.get(key)) is not None:
            self.meter.hit()
            return Answer.model_validate(hit)
        started = time.perf_counter()
        try:
            answer = self.wire.chat(messages, params)
        except Exception:
            self.meter.failure()
            raise
        self.meter.call(started, answer.prompt_tokens, answer.completion_tokens, answer.cached_prompt_tokens)
        self.cache.put(key, answer.model_dump())
        return answer

    def complete(self, request: Request) -> Response:
        params = request_params(request, schema=self.supports_response_schema, logprobs=self.supports_logprobs)
        answer = self.chat(request_messages(request), params)
        return Response(
            id=None,
            model=self.identity["model"],
            message=Message.assistant([TextPart(answer.text)]),
            finish_reason=answer.finish_reason,
            usage=Usage(input_tokens=answer.prompt_tokens, output_tokens=answer.completion_tokens),
            logprobs=lm15_logprobs(answer),
        )

    def close(self) -> None:
        self.wire.close()
