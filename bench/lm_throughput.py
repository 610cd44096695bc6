"""Throughput of the embedded engine: no cache vs shared-prefix reuse vs a disk-cached re-run.

    .venv/bin/python bench/lm_throughput.py [--n 12]

Sends the same N real grader prompts (the baseline prompt, formatted by the run's DSPy adapter, over
gold-set rows, formatted exactly as a run formats them) three ways and prints calls/s and prompt tokens/s, each as a ratio to the uncached
figure measured in the same run:
  no cache       llama.cpp told not to reuse its KV cache (`cache_prompt: false`)
  prefix reuse   the server keeps the previous prompt's KV cache, so the shared instructions are free
  disk cache     the same calls again through calibrator's SQLite call cache (zero model calls)
  N slots        a server with N slots, N calls in flight (`--lm local --concurrency N`); ratio also to prefix reuse,
                 the default's one slot: this is how calibrator/lm/policy.py's LOCAL_SLOTS is chosen
"""

import argparse
import tempfile
import time
from pathlib import Path

from calibrator.components.grader import GradeTurn
from calibrator.components.grader import GraderRow as GradeRowModel
from calibrator.gold.goldset import load_goldset
from calibrator.lm.adapter import CompactJSONAdapter
from calibrator.lm.cache import CallCache
from calibrator.lm.engine import CachingEngine, openai_response_format
from calibrator.lm.local import LocalServer, embedded_gguf, model_fingerprint
from calibrator.lm.openai_chat import OpenAIChatWire
from calibrator.lm.policy import CallPolicy
from calibrator.lm.usage import UsageMeter
from calibrator.parallel import map_ordered
from calibrator.prompt import load_prompt

ROOT = Path(__file__).resolve().parents[1]


def requests(n: int) -> list[list[dict[str, str]]]:
    prompt = load_prompt(ROOT / "prompts/grader.yaml")
    signature = GradeTurn.with_instructions(prompt.instructions)
    rows = load_goldset(ROOT / "goldsets/grader.csv", GradeRowModel).rows[:n]
    adapter = CompactJSONAdapter()
    return [adapter.format(signature, [], {"context": r.context, "target_info": r.target_text, "candidate": r.candidate})
            for r in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=12, help="prompts per mode (default 12)")
    ap.add_argument("--slots", type=int, nargs="*", default=[2, 4], help="server slot counts to measure at that concurrency (default 2 4)")
    args = ap.parse_args()
    batch = requests(args.n)
    schema = openai_response_format({"type": "json_schema", "name": "grade", "strict": True, "schema": {
        "type": "object", "additionalProperties": False, "required": ["content_score", "format_score"],
        "properties": {k: {"type": "number", "enum": [0.0, 0.5, 1.0]} for k in ("content_score", "format_score")}}})
    params = {"temperature": 0.0, "max_tokens": 64, "seed": 0, "response_format": schema}
    gguf = embedded_gguf()
    server = LocalServer(gguf)
    wire = OpenAIChatWire("smollm2", base_url=server.base_url + "/v1", api_key="local", timeout=300, max_retries=0)
    results = {}

    def timed(name, call):
        started = time.perf_counter()
        tokens = sum(call(messages) for messages in batch)
        seconds = time.perf_counter() - started
        results[name] = (seconds, tokens)

    wire.chat(batch[0], params)  # warm-up: page the weights in
    timed("no cache", lambda m: wire.chat(m, params | {"extra_body": {"cache_prompt": False}}).prompt_tokens)
    timed("prefix reuse", lambda m: wire.chat(m, params).prompt_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        cache = CallCache(Path(tmp) / "calls.sqlite")
        engine = CachingEngine(wire, identity={"backend": "local", "model": "smollm2", "weights": model_fingerprint(gguf)},
                               cache=cache, meter=UsageMeter(), policy=CallPolicy(preflight=False))
        for messages in batch:
            engine.chat(messages, params)
        timed("disk cache", lambda m: engine.chat(m, params).prompt_tokens)
        assert engine.meter.snapshot().cache_hits == len(batch)
        cache.close()

    server.close()
    for slots in args.slots:
        multi = LocalServer(gguf, slots=slots)
        multi_wire = OpenAIChatWire("smollm2", base_url=multi.base_url + "/v1", api_key="local", timeout=300, max_retries=0)
        multi_wire.chat(batch[0], params)
        started = time.perf_counter()
        tokens = sum(map_ordered(lambda m: multi_wire.chat(m, params).prompt_tokens, batch, concurrency=slots))
        results[f"{slots} slots"] = (time.perf_counter() - started, tokens)
        multi.close()

    base_seconds, _ = results["no cache"]
    default_seconds, _ = results["prefix reuse"]
    print(f"{len(batch)} grader prompts per mode, SmolLM2-135M-Instruct Q4_1 via xllamacpp, {server.base_url}")
    print("prompt tok/s counts every prompt token a call carried, reused or not")
    print(f"{'mode':<14}{'seconds':>9}{'calls/s':>10}{'prompt tok/s':>14}{'speed-up':>10}{'vs 1 slot':>11}")
    for name, (seconds, tokens) in results.items():
        print(f"{name:<14}{seconds:>9.2f}{len(batch) / seconds:>10.2f}{tokens / seconds:>14.0f}{base_seconds / seconds:>9.1f}x"
              f"{default_seconds / seconds:>10.2f}x")


if __name__ == "__main__":
    main()
