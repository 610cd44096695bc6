"""What a failed LM call means for the next one: throttled (wait, slow down, retry), transient (retry a few times),
rejected (this request only: record it on the sample), or fatal (the backend itself is wrong: stop the command).

Both SDKs raise the same shapes (`APIStatusError` with a status code and the response, `APIConnectionError` with the
network error as its cause), so one reading serves every wire. The SDKs are read from `sys.modules`, not imported:
an error can only come from an SDK a wire has loaded, and importing both costs every command ~4 s at start-up.
"""

import email.utils
import sys
import time
from typing import Literal

import httpx
from pydantic import BaseModel

Kind = Literal["throttled", "transient", "rejected", "fatal"]
THROTTLED = {429, 503, 529}  # rate limited, overloaded (529: Anthropic's "overloaded")
TRANSIENT = {408, 409, 425, 500, 502, 504}
FATAL = {401: "the API key was refused", 403: "access denied", 404: "unknown model or wrong URL"}


class Failure(BaseModel, frozen=True):
    kind: Kind
    cause: str  # one phrase for people: "connection refused", "HTTP 429", "HTTP 401: the API key was refused"
    retry_after: float | None = None  # seconds the server asked us to wait


class BackendUnavailable(RuntimeError):
    """The backend cannot serve this run (nothing listening, key refused, unknown model): stop, keep the cache."""


def _sdk_errors(name: str) -> tuple[type[BaseException], ...]:
    """The SDKs' error class `name`, from those a wire has imported."""
    return tuple(getattr(sdk, name) for sdk in map(sys.modules.get, ("openai", "anthropic")) if sdk is not None)


def retry_after(headers: httpx.Headers | None) -> float | None:
    """`Retry-After` (seconds or an HTTP date) or OpenAI's `retry-after-ms`, in seconds; None when absent or unreadable."""
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _network_cause(error: BaseException) -> str:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "connection refused" in str(seen).lower():
            return "connection refused"
        if isinstance(seen, (httpx.TimeoutException, *_sdk_errors("APITimeoutError"))):
            return "timed out"
        seen = seen.__cause__ or seen.__context__
    return f"connection error ({str(error)[:120]})"


def classify(error: BaseException) -> Failure | None:
    """How to treat `error` from a wire call; None when it is not an API error (a bug: let it raise)."""
    if isinstance(error, _sdk_errors("APIStatusError")):
        status = error.status_code
        if status in THROTTLED:
            return Failure(kind="throttled", cause=f"HTTP {status}", retry_after=retry_after(error.response.headers))
        if status in FATAL:
            return Failure(kind="fatal", cause=f"HTTP {status}: {FATAL[status]}")
        if status in TRANSIENT or status >= 500:
            return Failure(kind="transient", cause=f"HTTP {status}")
        return Failure(kind="rejected", cause=f"HTTP {status}: {str(error.message)[:160]}")
    if isinstance(error, _sdk_errors("APIConnectionError")):
        return Failure(kind="transient", cause=_network_cause(error))
    return None


def unavailable_in(error: BaseException) -> BackendUnavailable | None:
    """The BackendUnavailable behind `error` (DSPy wraps what an engine raises in its own error types)."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, BackendUnavailable):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None
