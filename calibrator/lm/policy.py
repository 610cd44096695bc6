"""How a run calls its LM: how many calls at once, how fast, how patiently. One setting drives every LM-bound step."""

from pydantic import BaseModel, Field

from calibrator.lm.spec import LMSpec

API_CONCURRENCY = 16  # API backends have effectively unlimited parallel capacity; the AIMD window backs off if not
LOCAL_SLOTS = 1  # the embedded llama.cpp: slots that pay off on this kind of machine, measured by bench/lm_throughput.py
LOCAL_MAX_SLOTS = 4  # each slot holds a whole 8k-token KV cache; more calls than slots queue at the server


class CallPolicy(BaseModel, frozen=True):
    concurrency: int = Field(1, ge=1, le=512)  # calls in flight at most (the AIMD window's ceiling)
    rpm: float | None = Field(None, gt=0)  # requests per minute, if the provider limits them
    tpm: float | None = Field(None, gt=0)  # tokens per minute (prompt estimate + max_tokens, settled on the answer)
    max_retries: int = Field(4, ge=0)  # connection errors, timeouts and 5xx, per call
    throttle_retries: int = Field(12, ge=0)  # 429/503 answers, per call: waited out, never dropped while these last
    max_retry_after: float = Field(300.0, gt=0)  # a longer Retry-After is a quota: the call fails instead of sleeping
    backoff_base: float = Field(0.5, gt=0)  # seconds; doubled per retry, with full jitter
    backoff_cap: float = Field(30.0, gt=0)
    timeout: float = Field(120.0, gt=0)  # one call, seconds
    preflight: bool = True  # one tiny request before the first uncached call, to fail fast on a wrong backend


def default_concurrency(spec: LMSpec) -> int:
    return LOCAL_SLOTS if spec.backend == "local" else API_CONCURRENCY
