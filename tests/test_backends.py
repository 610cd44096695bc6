"""The OpenAI-compatible and Anthropic paths, through the official SDKs, against a real server on 127.0.0.1
(llama.cpp's, serving the embedded model: slow), plus retries and recorded failures through a real flaky proxy in front
of the stub (fast: what is retried is the point, not what the model says)."""

import json

import dspy
import pytest

from calibrator.components.grader import GraderRow
from calibrator.components.grader import GRADER
from calibrator.gold.goldset import load_goldset
from calibrator.lm import CallPolicy, LMSpec, open_lm
from calibrator.lm.adapter import CompactJSONAdapter
from calibrator.prompt import load_prompt
from support.fault_proxy import FaultProxy
from support import ROOT



@pytest.fixture(scope="module")
def program():
    return GRADER.build_program(load_prompt(ROOT / "prompts/grader.yaml"))


@pytest.fixture(scope="module")
def row():
    return load_goldset(ROOT / "goldsets/grader.csv", GraderRow).rows[0]


@pytest.mark.slow
def test_openai_compatible_decodes_against_the_schema(embedded, program, row, tmp_path):
    """The request carries the grader's JSON schema, so the raw answer is strict JSON with a valid label
    (no repair by the parser), and the meter counts exactly the tokens the server reported."""
    with FaultProxy(embedded.base_url) as proxy:
        spec = LMSpec.parse(f"openai-compatible:smollm2@{proxy.url}/v1")
        with open_lm(spec, cache_dir=tmp_path, policy=CallPolicy(max_retries=0, preflight=False)) as lm, \
                dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            first = GRADER.predict(program, row)
            used = lm.usage()
            again = GRADER.predict(program, row)
            assert again == first
            assert lm.usage().lm_calls == 1 and lm.usage().cache_hits == 1
    [(path, request, response)] = proxy.exchanges
    assert path == "/v1/chat/completions"
    assert request["response_format"]["type"] == "json_schema"
    properties = request["response_format"]["json_schema"]["schema"]["properties"]
    assert properties["content_score"]["enum"] == properties["format_score"]["enum"] == [0.0, 0.5, 1.0]
    answer = json.loads(response["choices"][0]["message"]["content"])
    assert answer["content_score"] in (0.0, 0.5, 1.0) and answer["format_score"] in (0.0, 0.5, 1.0)
    assert first.error is None and (first.content_score, first.format_score) == (answer["content_score"], answer["format_score"])
    assert (used.prompt_tokens, used.completion_tokens) == (response["usage"]["prompt_tokens"], response["usage"]["completion_tokens"])
    assert used.prompt_tokens > 0 and used.completion_tokens > 0


@pytest.mark.slow
def test_anthropic_sdk_against_the_messages_endpoint(embedded, row, tmp_path, monkeypatch):
    """No schema decoding on this API, so the prompt carries one demonstration per label (which the embedded
    model follows; with none it writes Python): the system text, the alternating demo turns and the answer
    all cross the Messages wire, the answer parses to a label, and every input token is counted."""
    train = [r for r in load_goldset(ROOT / "goldsets/grader.csv", GraderRow).split("train") if r.id != row.id]
    demos = [next(r for r in train if r.content_score == label) for label in (1.0, 0.0, 0.5)]
    prompt = load_prompt(ROOT / "prompts/grader.yaml")
    prompt = prompt.model_copy(update={"demos": [GRADER.demo_record(GRADER.to_example(r, demo=True)) for r in demos]})
    with FaultProxy(embedded.base_url) as proxy:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", proxy.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
        with open_lm(LMSpec.parse("anthropic:smollm2"), cache_dir=tmp_path, policy=CallPolicy(max_retries=0, preflight=False)) as lm, \
                dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            assert "response_format" not in lm.engine.supported_params
            pred = GRADER.predict(GRADER.build_program(prompt), row)
            used = lm.usage()
    [(path, request, response)] = proxy.exchanges
    assert path == "/v1/messages"
    assert prompt.instructions.strip().splitlines()[0] in request["system"] and "response_format" not in request
    assert [m["role"] for m in request["messages"]] == ["user", "assistant"] * len(demos) + ["user"]
    text = "".join(block["text"] for block in response["content"] if block["type"] == "text")
    assert text.strip()
    assert pred.error is None and pred.content_score in (0.0, 0.5, 1.0)
    usage = response["usage"]
    assert used.lm_calls == 1 and used.failures == 0 and used.completion_tokens == usage["output_tokens"] > 0
    assert used.prompt_tokens == usage["input_tokens"] + usage.get("cache_read_input_tokens", 0) + usage.get("cache_creation_input_tokens", 0)
    assert used.cached_prompt_tokens == usage.get("cache_read_input_tokens", 0)


def test_missing_api_key_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(RuntimeError, match="OPENAI_API_KEY"):
        with open_lm(LMSpec.parse("openai:gpt-4o-mini"), cache_dir=tmp_path):
            pass


def _grade_through_proxy(stub, program, row, cache_dir, *, failures: int, status: int, policy: CallPolicy):
    with FaultProxy(stub.url.removesuffix("/v1"), fail_first=failures, status=status) as proxy:
        spec = LMSpec.parse(f"openai-compatible:smollm2@{proxy.url}/v1")
        with open_lm(spec, cache_dir=cache_dir, policy=policy) as lm, dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            return GRADER.predict(program, row), proxy, lm.usage()


FAST = {"backoff_base": 0.01, "backoff_cap": 0.05, "preflight": False}


def test_transient_errors_are_retried_with_backoff(stub, program, row, tmp_path):
    pred, proxy, usage = _grade_through_proxy(stub, program, row, tmp_path, failures=2, status=500,
                                              policy=CallPolicy(max_retries=3, **FAST))
    assert pred.error is None
    assert (proxy.seen, proxy.forwarded) == (3, 1)
    assert usage.failures == 0 and usage.lm_calls == 1 and usage.retries == 2 and usage.throttled == 0


def test_throttled_calls_are_waited_out_and_counted(stub, program, row, tmp_path):
    pred, proxy, usage = _grade_through_proxy(stub, program, row, tmp_path, failures=3, status=429,
                                              policy=CallPolicy(max_retries=0, throttle_retries=5, **FAST))
    assert pred.error is None
    assert (proxy.seen, proxy.forwarded) == (4, 1)
    assert usage.throttled == 3 and usage.retries == 0 and usage.lm_calls == 1


def test_failure_after_retries_is_recorded_not_raised(stub, program, row, tmp_path):
    pred, proxy, usage = _grade_through_proxy(stub, program, row, tmp_path, failures=100, status=500,
                                              policy=CallPolicy(max_retries=1, **FAST))
    assert pred.content_score is None and pred.error
    assert proxy.seen == 2 and proxy.forwarded == 0
    assert usage.failures == 1 and usage.lm_calls == 0
