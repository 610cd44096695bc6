"""The DSPy engine every backend plugs into: lm15 Request in, lm15 Response out, through our cache.

DSPy 3.4's engine contract (`complete(Request) -> Response`) replaces custom `BaseLM.forward`.
We keep DSPy's own response cache off and cache here instead, because only here do we know the
backend identity that belongs in the key and can count hits and tokens for the usage record.
"""

import threading
import time
from typing import Any

from dspy.lm15 import Message, Request, Response, TextPart, TokenLogprob, TopLogprob, Usage

from calibrator.lm.cache import CallCache, cache_key
from calibrator.lm.failure import classify
from calibrator.lm.flow import AdaptiveWindow, CircuitBreaker, TokenBucket, backoff, throttle_wait
from calibrator.lm.policy import CallPolicy
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


PREFLIGHT = [{"role": "user", "content": "Reply with OK."}]


class EngineClosed(RuntimeError):
    """A call still waiting when its engine was closed."""


def estimated_tokens(messages: list[dict[str, str]], params: dict[str, Any]) -> int:
    """What a call may spend before the backend says: ~4 characters a token plus the completion budget."""
    return sum(len(m["content"]) for m in messages) // 4 + int(params.get("max_tokens") or 256)


class CachingEngine:
    """Serves each distinct request once, ever, to any number of threads (and processes sharing the cache): a miss
    claims its key, waits its turn in the rate limits and the AIMD window, retries what is worth retrying, and stops
    the run through the circuit breaker when the backend itself is wrong."""

    supports_function_calling = False
    supports_reasoning = False

    def __init__(self, wire: Wire, *, identity: dict[str, str], cache: CallCache, meter: UsageMeter,
                 policy: CallPolicy | None = None, where: str = "") -> None:
        self.wire = wire
        self.identity = identity
        self.cache = cache
        self.meter = meter
        self.policy = policy or CallPolicy()
        self.window = AdaptiveWindow(self.policy.concurrency)
        self.requests = TokenBucket(self.policy.rpm) if self.policy.rpm else None
        self.tokens = TokenBucket(self.policy.tpm) if self.policy.tpm else None
        self.breaker = CircuitBreaker(where or identity["model"])
        self._preflight_done = not self.policy.preflight
        self._preflight_lock = threading.Lock()
        self._leaders: dict[str, threading.Event] = {}
        self._leaders_lock = threading.Lock()
        self._stopped = threading.Event()
        self.supports_response_schema = wire.supports_response_schema
        self.supports_logprobs = getattr(wire, "supports_logprobs", False)
        # logprobs are accepted from every caller; a wire without them answers the plain request instead
        base = {"temperature", "max_tokens", "top_p", "stop", "seed", "logprobs", "top_logprobs"}
        self.supported_params = base | ({"response_format"} if wire.supports_response_schema else set())

    def chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Answer:
        key = cache_key({"lm": self.identity, "messages": messages, "params": params})
        while True:
            if (hit := self.cache.get(key)) is not None:
                self.meter.hit()
                return Answer.model_validate(hit)
            with self._leaders_lock:
                follow = self._leaders.get(key)
                if follow is None:
                    done = self._leaders[key] = threading.Event()
            if follow is not None:  # another thread of this process is making the same call
                follow.wait()
                continue
            try:
                if not self.cache.claim(key) and not self._await_other_process(key):
                    continue  # another process made it: the loop's read finds its answer
                if (hit := self.cache.get(key)) is not None:  # answered between our read and our claim
                    self.cache.release(key)
                    continue
                try:
                    answer = self._call(messages, params, key)
                except BaseException:
                    self.cache.release(key)
                    raise
                self.cache.put(key, answer.model_dump())
                return answer
            finally:
                with self._leaders_lock:
                    del self._leaders[key]
                done.set()

    def _await_other_process(self, key: str) -> bool:
        """Wait while another process holds the claim: False once its answer is cached, True once its claim is gone or
        abandoned and ours instead (the caller then owns it, and must answer or release it: a claim taken here and
        dropped would make every other process wait for a key nobody is making)."""
        while self.cache.get(key) is None:
            if self.cache.claim(key):
                return True
            self._stopped.wait(0.05)
            self._check_stopped()
        return False

    def _preflight(self) -> None:
        """One tiny uncached request before the first real one: a wrong URL, key or model stops the command in one
        line instead of failing every row with retries. A busy (429/503) backend passes: it is there."""
        with self._preflight_lock:
            self.breaker.check()  # another thread's preflight may have opened it while this one waited
            if self._preflight_done:
                return
            for attempt in range(self.policy.max_retries + 1):
                try:
                    self.wire.chat(PREFLIGHT, {"max_tokens": 1, "temperature": 0.0})
                    break
                except Exception as e:
                    failure = classify(e)
                    if failure is not None and failure.kind == "throttled":
                        self.meter.throttled()
                        break
                    # nothing listening is final at once; a timeout or a 5xx may pass, as a call's would
                    if failure is None or failure.kind != "transient" or failure.cause == "connection refused" \
                            or attempt == self.policy.max_retries:
                        cause = failure.cause if failure else f"{type(e).__name__}: {str(e)[:160]}"
                        raise self.breaker.open(cause, "preflight request") from e
                    self._sleep(backoff(attempt + 1, self.policy.backoff_base, self.policy.backoff_cap))
            self._preflight_done = True

    def _call(self, messages: list[dict[str, str]], params: dict[str, Any], key: str) -> Answer:
        self.breaker.check()
        self._preflight()
        estimate = estimated_tokens(messages, params)
        retries = throttles = 0
        while True:
            self.breaker.check()
            self._check_stopped()
            self.cache.refresh(key)  # still ours: a long retry never looks abandoned to another process
            waited = (self.requests.take(1) if self.requests else 0.0) + (self.tokens.take(estimate) if self.tokens else 0.0)
            if waited:
                self.meter.waited(waited)
            with self.window.slot() as epoch:
                started = time.perf_counter()
                try:
                    answer, failure, error = self.wire.chat(messages, params), None, None
                except Exception as e:
                    answer, failure, error = None, classify(e), e
                    if failure is None:
                        self.meter.failure()
                        raise
            if answer is not None:
                self.window.success()
                self.breaker.success()
                if self.tokens:
                    self.tokens.settle(answer.prompt_tokens + answer.completion_tokens - estimate)
                self.meter.call(started, answer.prompt_tokens, answer.completion_tokens, answer.cached_prompt_tokens)
                return answer
            p = self.policy
            if failure.kind == "throttled":
                self.meter.throttled()
                self.window.throttled(epoch)
                too_long = failure.retry_after is not None and failure.retry_after > p.max_retry_after
                if too_long:  # a quota, not a rate: waiting it out here would look like a hang
                    failure = failure.model_copy(update={"cause": f"{failure.cause}: the backend asks to wait "
                                                                  f"{failure.retry_after:.0f} s (a quota?)"})
                elif throttles < p.throttle_retries:
                    throttles += 1
                    self._sleep(throttle_wait(failure.retry_after, throttles, p.backoff_base, p.backoff_cap))
                    continue
            elif failure.kind == "transient" and retries < p.max_retries:
                retries += 1
                self.meter.retry()
                self._sleep(backoff(retries, p.backoff_base, p.backoff_cap))
                continue
            self.meter.failure()
            if (stop := self.breaker.failure(failure)) is not None:
                raise stop from error
            raise error

    def _sleep(self, seconds: float) -> None:
        """A wait that ends early, with an error, when the engine is closed (Ctrl-C): no thread sleeps out a backoff."""
        self._stopped.wait(seconds)
        self._check_stopped()

    def _check_stopped(self) -> None:
        if self._stopped.is_set():
            raise EngineClosed("the LM engine was closed (the command is stopping)")

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
        """Wake every call sleeping in a backoff (it raises EngineClosed), let the calls on the wire finish (at most
        one call's timeout: an abandoned worker may still be mid-request, and the server must outlive it), close."""
        self._stopped.set()
        self.window.drain(self.policy.timeout)
        self.wire.close()
