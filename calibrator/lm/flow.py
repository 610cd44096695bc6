"""Flow control between many callers and one backend: how many calls may be in flight (AIMD), how fast they may
start (token buckets for requests and tokens per minute), and when to stop calling at all (the circuit breaker)."""

import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from calibrator.lm.failure import BackendUnavailable, Failure


class AdaptiveWindow:
    """At most `limit` calls in flight. A throttled answer halves the limit, once per round trip (only a call that
    started after the last cut can cut again, as TCP does per window); each success gives one slot back, up to the
    ceiling. Sporadic 429s cost a brief dip; sustained ones hold the window near what the backend accepts."""

    def __init__(self, ceiling: int) -> None:
        self.ceiling = max(1, ceiling)
        self.limit = float(self.ceiling)
        self.in_flight = 0
        self.cuts = 0
        self._epoch = 0
        self._cond = threading.Condition()

    @contextmanager
    def slot(self) -> Iterator[int]:
        with self._cond:
            while self.in_flight >= max(1, int(self.limit)):
                self._cond.wait()
            self.in_flight += 1
            epoch = self._epoch
        try:
            yield epoch
        finally:
            with self._cond:
                self.in_flight -= 1
                self._cond.notify_all()  # a caller waiting for a slot, or close() waiting for none in flight

    def drain(self, timeout: float) -> bool:
        """Wait until no call is in flight (or `timeout` passes); True if none is."""
        with self._cond:
            return self._cond.wait_for(lambda: self.in_flight == 0, timeout)

    def success(self) -> None:
        with self._cond:
            if self.limit < self.ceiling:
                self.limit = min(float(self.ceiling), self.limit + 1)
                self._cond.notify()

    def throttled(self, epoch: int) -> None:
        with self._cond:
            if epoch == self._epoch:
                self.limit = max(1.0, self.limit / 2)
                self._epoch += 1
                self.cuts += 1


class TokenBucket:
    """`per_minute` units per minute with a burst of one second's worth (at least one call). A caller takes its units
    at once and sleeps off any debt, so a call larger than the burst still goes, just later, and callers queue fairly."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, units: float) -> float:
        """Take `units`, sleeping as long as the bucket owes; returns the seconds waited."""
        with self._lock:
            self._refill()
            self.level -= units
            wait = max(0.0, -self.level / self.rate)
        if wait:
            time.sleep(wait)
        return wait

    def settle(self, units: float) -> None:
        """Correct an estimate once the real count is known (negative: give back)."""
        with self._lock:
            self._refill()
            self.level = min(self.capacity, self.level - units)


NETWORK_CAUSES = ("connection refused", "timed out")


class CircuitBreaker:
    """Opens (every later call raises at once) when the backend is wrong rather than busy: a fatal answer (401, 403,
    404), the first `first` calls of a run all failing the same way, or, once it has worked, `streak` calls in a row
    failing to reach it (refused, timed out). An answer that fails one request (a 400, a 500) is that request's
    problem once the backend has served others: it is retried and recorded on the sample, and the run goes on."""

    def __init__(self, where: str, *, first: int = 3, streak: int = 8) -> None:
        self.where = where
        self.first, self.streak = first, streak
        self.successes = 0
        self._causes: list[str] = []
        self.reason: str | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        if self.reason is not None:
            raise BackendUnavailable(self.reason)

    def success(self) -> None:
        with self._lock:
            self.successes += 1
            self._causes.clear()

    def open(self, cause: str, how: str) -> BackendUnavailable:
        with self._lock:
            if self.reason is None:
                self.reason = f"{self.where}: {cause} ({how})"
            return BackendUnavailable(self.reason)

    def failure(self, failure: Failure) -> BackendUnavailable | None:
        """Record a call that failed for good; the error to raise instead when this opens the breaker."""
        if failure.kind == "fatal":
            return self.open(failure.cause, "the backend refuses every call")
        with self._lock:
            if self.successes and failure.cause not in NETWORK_CAUSES and not failure.cause.startswith("connection error"):
                return None
            self._causes.append(failure.cause)
            causes, successes = list(self._causes), self.successes
        same = len(set(causes)) == 1
        if same and successes == 0 and len(causes) >= self.first:
            return self.open(failure.cause, f"the first {len(causes)} calls all failed this way")
        if same and len(causes) >= self.streak:
            return self.open(failure.cause, f"{len(causes)} calls in a row failed this way")
        return None


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: spreads retries of many callers instead of re-aligning them."""
    return random.uniform(0, min(cap, base * 2 ** attempt))


def throttle_wait(retry_after: float | None, attempt: int, base: float, cap: float) -> float:
    """A throttled call waits what the server asked, plus up to 20% jitter so the callers it throttled together do
    not return together; without `Retry-After`, exponential backoff."""
    if retry_after is None:
        return backoff(attempt, base, cap)
    return retry_after * random.uniform(1.0, 1.2)
