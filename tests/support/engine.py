"""A CachingEngine over any wire with fast backoff, and one question asked of it: the engine tests' two handles."""

from pathlib import Path

from calibrator.lm.cache import CallCache
from calibrator.lm.engine import CachingEngine
from calibrator.lm.policy import CallPolicy
from calibrator.lm.usage import UsageMeter

FAST = {"backoff_base": 0.001, "backoff_cap": 0.01}


def engine(tmp_path: Path, wire, **policy) -> CachingEngine:
    return CachingEngine(wire, identity={"backend": "openai", "model": "m"}, cache=CallCache(tmp_path / "calls.sqlite"),
                         meter=UsageMeter(), policy=CallPolicy(**(FAST | policy)), where="--lm openai:m")


def ask(e: CachingEngine, text: str) -> str:
    return e.chat([{"role": "user", "content": text}], {"max_tokens": 5}).text
