"""Concurrency against the real embedded model: a concurrent run equals the sequential one (predictions, cache,
usage), and a 429 storm injected by a real proxy in front of the real llama.cpp server loses and duplicates nothing."""

import json
import sqlite3
from pathlib import Path

import dspy
import pytest

from calibrator.components.grader import GRADER
from calibrator.calibration.evaluate import evaluator
from calibrator.gold.goldset import load_goldset
from calibrator.lm import CallPolicy, LMSpec, open_lm
from calibrator.lm.adapter import CompactJSONAdapter
from calibrator.prompt import load_prompt
from support.fault_proxy import FaultProxy
from support import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def rows():
    return load_goldset(ROOT / "goldsets/grader.csv", GRADER.row_model).rows[:6]


@pytest.fixture(scope="module")
def prompt():
    return load_prompt(ROOT / "prompts/grader.yaml")


def evaluate(spec: str, cache: Path, concurrency: int, rows, prompt):
    with open_lm(LMSpec.parse(spec), cache_dir=cache, policy=CallPolicy(concurrency=concurrency, backoff_base=0.05)) as lm, \
            dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
        preds = evaluator(GRADER, False, lm)(prompt, rows, "rows")
        return preds, lm.usage()


def cache_contents(cache: Path) -> dict[str, tuple]:
    """Each cached answer without its cached-prompt-token count: which prefix a server slot happened to hold is timing."""
    db = sqlite3.connect(cache / "lm-calls.sqlite")
    out = {}
    for key, answer in db.execute("SELECT key, answer FROM calls"):
        a = json.loads(answer)
        out[key] = (a["text"], a["prompt_tokens"], a["completion_tokens"], a["finish_reason"])
    return out


def test_concurrent_evaluation_equals_sequential_on_the_embedded_model(tmp_path, rows, prompt):
    sequential, seq_usage = evaluate("local", tmp_path / "one", 1, rows, prompt)
    concurrent, con_usage = evaluate("local", tmp_path / "three", 3, rows, prompt)
    assert [p.model_dump() for p in concurrent] == [p.model_dump() for p in sequential]
    assert all(p.error is None for p in sequential)
    assert cache_contents(tmp_path / "three") == cache_contents(tmp_path / "one") and len(cache_contents(tmp_path / "one")) == len(rows)
    fields = ("lm_calls", "cache_hits", "failures", "prompt_tokens", "completion_tokens", "throttled", "retries")
    assert {f: getattr(con_usage, f) for f in fields} == {f: getattr(seq_usage, f) for f in fields}


def test_a_429_storm_in_front_of_the_real_server_loses_and_duplicates_nothing(tmp_path, rows, prompt, embedded):
    calm, _ = evaluate(f"openai-compatible:smollm2@{embedded.base_url}/v1", tmp_path / "calm", 1, rows, prompt)
    with FaultProxy(embedded.base_url, storm=0.3, retry_after="0.05", seed=1) as proxy:
        stormy, usage = evaluate(f"openai-compatible:smollm2@{proxy.url}/v1", tmp_path / "storm", 4, rows, prompt)
    assert proxy.injected >= 2 and usage.throttled == proxy.injected  # the seeded storm throttles 2 requests
    assert [p.model_dump() for p in stormy] == [p.model_dump() for p in calm] and all(p.error is None for p in stormy)
    # every forwarded request answered exactly one row (the preflight aside): nothing made twice, nothing dropped
    bodies = [json.dumps(request["messages"]) for _, request, _ in proxy.exchanges if request.get("max_tokens") != 1]
    assert len(bodies) == len(set(bodies)) == usage.lm_calls == len(rows)
    assert usage.failures == 0


def test_extraction_through_a_429_storm_writes_every_sample_once(tmp_path, embedded, cli):
    logs = tmp_path / "log.jsonl"
    sessions = [{"session_id": f"s{i}", "messages": [
        {"role": "user", "content": f"My child has had a rash for {i + 2} days"},
        {"role": "assistant", "content": "Is it itchy?"}, {"role": "user", "content": "Yes, a lot" if i % 2 else "Not really"},
        {"role": "assistant", "content": "Try an antihistamine cream."}]} for i in range(3)]
    logs.write_text("".join(json.dumps(s) + "\n" for s in sessions))
    with FaultProxy(embedded.base_url, storm=0.3, retry_after="0.05", seed=2) as proxy:
        out = tmp_path / "samples.jsonl"
        done = cli.calibrator("extract", "--logs", logs, "--out", out, "--prompt", ROOT / "prompts/extractor.yaml",
                              "--lm", f"openai-compatible:smollm2@{proxy.url}/v1", "--concurrency", "4",
                              "--cache-dir", tmp_path / "cache", "--no-progress")
    assert done.code == 0, done.err
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in got] == [f"s{i}_{k}" for i in range(3) for k in range(2)]
    assert all(r["error"] is None for r in got)
    assert [r["decision"] for r in got] == ["continue", "stop"] * 3
    assert proxy.injected >= 1 and f"{proxy.injected} throttled" in done.out
    bodies = [json.dumps(request["messages"]) for _, request, _ in proxy.exchanges if request.get("max_tokens") != 1]
    assert len(bodies) == len(set(bodies)) == 3  # the three continue samples, each forwarded once
