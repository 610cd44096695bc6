"""The one line a command ends with when its LM backend cannot serve it (see calibrator/lm/flow.py's breaker)."""

from pathlib import Path

from calibrator.lm import LMHandle


def backend_stop(handles: list[LMHandle | None], cache_dir: Path) -> str | None:
    """Why the run stopped, if a backend's circuit breaker opened; None if none did (the error is something else)."""
    for handle in handles:
        if handle is not None and (reason := handle.unavailable()) is not None:
            return (f"error: {reason}. Stopped, nothing lost: the LM answers cached so far ({handle.usage().lm_calls} made "
                    f"by this run) stay in {cache_dir}; the same command resumes from them once the backend is right")
    return None


def usage_line(handle: LMHandle, wall_seconds: float | None = None) -> str:
    u = handle.usage()
    line = (f"{u.lm_calls} LM calls, {u.cache_hits} cache hits, {u.prompt_tokens} prompt + {u.completion_tokens} completion "
            f"tokens; concurrency {handle.concurrency}, {u.throttled} throttled (429/503, waited out), {u.retries} retried, "
            f"{u.failures} failed")
    if u.rate_wait_seconds:
        line += f", {u.rate_wait_seconds:.1f} s waiting for --rpm/--tpm"
    return line + (f", {wall_seconds:.1f} s" if wall_seconds is not None else "")
