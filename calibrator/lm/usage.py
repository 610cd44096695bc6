"""Usage accounting shared by every backend: what a run cost, in calls, tokens and time."""

import threading
import time

from pydantic import BaseModel


class Usage(BaseModel):
    lm_calls: int = 0
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    lm_seconds: float = 0.0
    throttled: int = 0  # 429/503 answers, each waited out and retried
    retries: int = 0  # connection errors, timeouts and 5xx retried
    rate_wait_seconds: float = 0.0  # spent waiting for --rpm/--tpm


class UsageMeter:
    """Thread-safe counters; DSPy evaluates examples on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._usage = Usage()

    def hit(self) -> None:
        with self._lock:
            self._usage.cache_hits += 1

    def failure(self) -> None:
        with self._lock:
            self._usage.failures += 1

    def throttled(self) -> None:
        with self._lock:
            self._usage.throttled += 1

    def retry(self) -> None:
        with self._lock:
            self._usage.retries += 1

    def waited(self, seconds: float) -> None:
        with self._lock:
            self._usage.rate_wait_seconds += seconds

    def call(self, started: float, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0) -> None:
        with self._lock:
            u = self._usage
            u.lm_calls += 1
            u.prompt_tokens += prompt_tokens
            u.completion_tokens += completion_tokens
            u.cached_prompt_tokens += cached_prompt_tokens
            u.lm_seconds += time.perf_counter() - started

    def snapshot(self) -> Usage:
        with self._lock:
            return self._usage.model_copy()
