"""Tests for prompt files on disk, --lm parsing, and the caching engine (with a fake wire, no network or model)."""

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from dspy.lm15 import Config, Message, Request

from calibrator.components.grader import GraderRow
from calibrator.lm.cache import CallCache
from calibrator.lm.engine import CachingEngine, openai_response_format, request_params
from calibrator.lm.policy import CallPolicy
from calibrator.lm.spec import LMSpec, LMSpecError
from calibrator.lm.usage import UsageMeter
from calibrator.lm.wire import Answer
from calibrator.prompt import Calibration, PromptFile, Retrieval, load_prompt, save_prompt
from support import ROOT



# --- prompt files -------------------------------------------------------------------------------


def full_prompt() -> PromptFile:
    return PromptFile(
        component="grader",
        instructions="Judge the turn.\n\ncontent_score:\n- 1 when it asks directly.\n- 0 otherwise.\n",
        demos=[{"context": "patient: hi\npharmacist: hello", "target_info": "age: 3", "content_score": 0.5}],
        retrieval=Retrieval(k=3, keys=["context", "target_info"], embedder="all-MiniLM-L6-v2",
                            pool=[{"context": "patient: cough", "candidate": "How long?", "content_score": 1.0}]),
        calibration=Calibration(
            run_id="20250101-000000-abc", created=datetime(2025, 1, 1, 12, 0, tzinfo=timezone.utc),
            optimizer="knn", lm="openai:gpt-4o-mini", seed=0, goldset_path="goldsets/grader.csv",
            goldset_sha256="ab" * 32, val={"qwk": 0.7, "n": 24}, test={"qwk": 0.6, "n": 21}, verdict="better than baseline",
        ),
    )


def test_prompt_round_trip(tmp_path):
    prompt = full_prompt()
    path = tmp_path / "p.yaml"
    save_prompt(prompt, path)
    assert load_prompt(path) == prompt


def test_prompt_yaml_uses_block_style(tmp_path):
    path = tmp_path / "p.yaml"
    save_prompt(full_prompt(), path)
    text = path.read_text(encoding="utf-8")
    assert "instructions: |" in text
    assert "\\n" not in text


def test_prompt_minimal_round_trip_omits_none(tmp_path):
    prompt = PromptFile(component="grader", instructions="One line.")
    path = tmp_path / "p.yaml"
    save_prompt(prompt, path)
    assert load_prompt(path) == prompt
    assert "retrieval" not in path.read_text(encoding="utf-8")


def test_atomic_write_leaves_no_temp_files(tmp_path):
    folder = tmp_path / "prompts"
    path = folder / "p.yaml"
    save_prompt(full_prompt(), path)
    save_prompt(PromptFile(component="grader", instructions="again\nand again"), path)
    assert [p.name for p in folder.iterdir()] == ["p.yaml"]
    assert load_prompt(path).instructions == "again\nand again"


def test_atomic_write_that_fails_midway_keeps_the_old_file_and_no_temp_file(tmp_path, monkeypatch):
    from calibrator import prompt as module
    from calibrator.prompt import write_atomic_lines

    folder = tmp_path / "prompts"
    path = folder / "p.yaml"
    save_prompt(full_prompt(), path)
    old = path.read_bytes()

    def pieces():
        yield "component: grader\n"
        raise RuntimeError("serializer failed mid-way")

    with pytest.raises(RuntimeError, match="mid-way"):
        write_atomic_lines(path, pieces())
    assert path.read_bytes() == old
    assert [p.name for p in folder.iterdir()] == ["p.yaml"]

    def refuse(src, dst):
        raise OSError("rename refused")

    monkeypatch.setattr(module.os, "replace", refuse)
    with pytest.raises(OSError, match="rename refused"):
        save_prompt(PromptFile(component="grader", instructions="never saved"), path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert [p.name for p in folder.iterdir()] == ["p.yaml"]
    assert load_prompt(path) == full_prompt()


def test_content_sha256_ignores_the_calibration_record_and_survives_a_round_trip(tmp_path):
    prompt = full_prompt()
    path = tmp_path / "p.yaml"
    save_prompt(prompt.model_copy(update={"calibration": None}), path)
    assert load_prompt(path).content_sha256() == prompt.content_sha256()
    assert len(prompt.content_sha256()) == 64


@pytest.mark.parametrize("change", [
    {"component": "extractor"},
    {"instructions": "Judge the turn strictly."},
    {"fields": ["symptom"]},
    {"demos": []},
    {"retrieval": None},
])
def test_content_sha256_changes_with_what_shapes_the_answers(change):
    prompt = full_prompt()
    assert prompt.model_copy(update=change).content_sha256() != prompt.content_sha256()


def test_shipped_prompt_loads():
    prompt = load_prompt(ROOT / "prompts" / "grader.yaml")
    assert prompt.component == "grader"
    assert prompt.instructions.strip()


# --- --lm specs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "backend", "model", "base_url"),
    [
        ("local", "local", "smollm2-135m-instruct-q4_1", None),
        (" local ", "local", "smollm2-135m-instruct-q4_1", None),
        ("openai:gpt-4o-mini", "openai", "gpt-4o-mini", None),
        ("anthropic:claude-x", "anthropic", "claude-x", None),
        ("openai-compatible:qwen@http://127.0.0.1:8000/v1", "openai-compatible", "qwen", "http://127.0.0.1:8000/v1"),
        ("openai-compatible:org/m:7b@https://h.example/v1/", "openai-compatible", "org/m:7b", "https://h.example/v1"),
    ],
)
def test_lm_spec_parse(text, backend, model, base_url):
    spec = LMSpec.parse(text)
    assert (spec.backend, spec.model, spec.base_url) == (backend, model, base_url)
    assert LMSpec.parse(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "bogus", "openai:", "anthropic:", "openai-compatible:noturl",
                                  "openai-compatible:m@ftp://x", "openai-compatible:@http://x", "gemini:pro"])
def test_lm_spec_rejects(text):
    with pytest.raises(LMSpecError):
        LMSpec.parse(text)


# --- caching engine -----------------------------------------------------------------------------


class FakeWire:
    """Answers every chat with a fixed text; records what it was asked."""

    def __init__(self, *, schema: bool = True, fail: bool = False) -> None:
        self.supports_response_schema = schema
        self.fail = fail
        self.calls: list[tuple[list[dict[str, str]], dict[str, Any]]] = []
        self.closed = False

    def chat(self, messages: list[dict[str, str]], params: dict[str, Any]) -> Answer:
        self.calls.append((messages, params))
        if self.fail:
            raise ConnectionError("backend down")
        return Answer(text=f"answer {len(self.calls)}", prompt_tokens=7, completion_tokens=3, cached_prompt_tokens=2)

    def close(self) -> None:
        self.closed = True


IDENTITY = {"backend": "openai", "model": "m"}
NO_PREFLIGHT = CallPolicy(preflight=False)  # a fake wire needs no reachability check


def request(text: str = "hi", temperature: float = 0.0, **config: Any) -> Request:
    return Request(model="m", messages=(Message.user(text),), config=Config(temperature=temperature, max_tokens=5, **config))


def engine_for(tmp_path: Path, wire: FakeWire, identity: dict[str, str] = IDENTITY) -> tuple[CachingEngine, CallCache]:
    cache = CallCache(tmp_path / "cache" / "lm-calls.sqlite")
    return CachingEngine(wire, identity=identity, cache=cache, meter=UsageMeter(), policy=NO_PREFLIGHT), cache


def test_engine_caches_repeat_calls(tmp_path):
    wire = FakeWire()
    engine, cache = engine_for(tmp_path, wire)
    first = engine.complete(request())
    second = engine.complete(request())
    assert len(wire.calls) == 1
    assert first.message.parts[0].text == second.message.parts[0].text == "answer 1"
    assert first.usage.input_tokens == 7 and first.usage.output_tokens == 3
    u = engine.meter.snapshot()
    assert (u.lm_calls, u.cache_hits, u.failures) == (1, 1, 0)
    assert (u.prompt_tokens, u.completion_tokens, u.cached_prompt_tokens) == (7, 3, 2)
    assert u.lm_seconds >= 0
    cache.close()


def test_engine_sends_plain_messages_and_params(tmp_path):
    wire = FakeWire()
    engine, cache = engine_for(tmp_path, wire)
    req = Request(model="m", system="Be brief.", messages=(Message.user("hi"),),
                  config=Config(temperature=0.0, max_tokens=5, stop=("\n",), seed=3))
    engine.complete(req)
    messages, params = wire.calls[0]
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    assert params == {"temperature": 0.0, "max_tokens": 5, "seed": 3, "stop": ["\n"]}
    cache.close()


def test_engine_new_call_for_different_request(tmp_path):
    wire = FakeWire()
    engine, cache = engine_for(tmp_path, wire)
    engine.complete(request())
    engine.complete(request(temperature=0.7))
    engine.complete(request(text="hello"))
    engine.complete(request(text="hi"))
    assert len(wire.calls) == 3
    assert engine.meter.snapshot().cache_hits == 1
    cache.close()


def test_engine_identity_is_part_of_the_key(tmp_path):
    wire = FakeWire()
    engine, cache = engine_for(tmp_path, wire)
    other = CachingEngine(wire, identity={"backend": "openai", "model": "other"}, cache=cache, meter=UsageMeter(), policy=NO_PREFLIGHT)
    engine.complete(request())
    response = other.complete(request())
    assert len(wire.calls) == 2
    assert response.model == "other"
    cache.close()


def test_cache_persists_across_reopen(tmp_path):
    wire = FakeWire()
    engine, cache = engine_for(tmp_path, wire)
    engine.complete(request())
    cache.close()
    again, cache2 = engine_for(tmp_path, wire)
    assert again.complete(request()).message.parts[0].text == "answer 1"
    assert len(wire.calls) == 1
    u = again.meter.snapshot()
    assert (u.lm_calls, u.cache_hits) == (0, 1)
    cache2.close()


def test_failing_wire_counts_failure_and_caches_nothing(tmp_path):
    wire = FakeWire(fail=True)
    engine, cache = engine_for(tmp_path, wire)
    with pytest.raises(ConnectionError):
        engine.complete(request())
    assert engine.meter.snapshot().failures == 1
    assert engine.meter.snapshot().lm_calls == 0
    wire.fail = False
    assert engine.complete(request()).message.parts[0].text == "answer 2"
    assert len(wire.calls) == 2
    assert engine.meter.snapshot().cache_hits == 0
    cache.close()


def test_engine_close_closes_wire(tmp_path):
    wire = FakeWire()
    engine, cache = engine_for(tmp_path, wire)
    engine.close()
    assert wire.closed
    cache.close()


SCHEMA = {"type": "object", "properties": {"score": {"type": "number"}}}


def test_openai_response_format_nests_flat_schema():
    flat = {"type": "json_schema", "name": "grade", "schema": SCHEMA, "strict": True}
    assert openai_response_format(flat) == {"type": "json_schema", "json_schema": {"name": "grade", "schema": SCHEMA, "strict": True}}


def test_openai_response_format_leaves_others_alone():
    nested = {"type": "json_schema", "json_schema": {"name": "grade", "schema": SCHEMA}}
    assert openai_response_format({"type": "json_object"}) == {"type": "json_object"}
    assert openai_response_format(nested) == nested
    assert openai_response_format(None) is None


def test_response_format_only_sent_to_schema_wires(tmp_path):
    fmt = {"type": "json_schema", "name": "grade", "schema": SCHEMA}
    openai_like, anthropic_like = FakeWire(schema=True), FakeWire(schema=False)
    a, cache_a = engine_for(tmp_path / "a", openai_like)
    b, cache_b = engine_for(tmp_path / "b", anthropic_like)
    assert "response_format" in a.supported_params
    assert "response_format" not in b.supported_params
    assert b.supports_response_schema is False
    a.complete(request(response_format=fmt))
    b.complete(request(response_format=fmt))
    assert openai_like.calls[0][1]["response_format"] == {"type": "json_schema", "json_schema": {"name": "grade", "schema": SCHEMA}}
    assert "response_format" not in anthropic_like.calls[0][1]
    assert "response_format" not in request_params(request(response_format=fmt), schema=False)
    cache_a.close()
    cache_b.close()


class RecordingSDK:
    """Stands in for an SDK client's `create`: records its keyword arguments and returns `reply`."""

    def __init__(self, reply: Any) -> None:
        self.reply, self.calls = reply, []

    def create(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return self.reply

    def close(self) -> None:
        pass


def test_anthropic_wire_declares_no_response_schema(tmp_path):
    """The real wires behind a caching engine: a request with a JSON schema reaches OpenAI's `create` as
    `response_format`, and reaches Anthropic's `messages.create` with no schema anywhere (the Messages API has no
    JSON-schema decoding), so the engine does not offer `response_format` to DSPy either."""
    from types import SimpleNamespace

    from calibrator.lm.anthropic_messages import AnthropicWire
    from calibrator.lm.openai_chat import OpenAIChatWire

    assert AnthropicWire.supports_response_schema is False
    assert OpenAIChatWire.supports_response_schema is True
    fmt = {"type": "json_schema", "name": "grade", "schema": SCHEMA}
    text = SimpleNamespace(type="text", text="{}")
    messages = RecordingSDK(SimpleNamespace(content=[text], stop_reason="end_turn",
                                            usage=SimpleNamespace(input_tokens=5, output_tokens=2)))
    completions = RecordingSDK(SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content="{}"), finish_reason="stop")],
                                               usage=SimpleNamespace(prompt_tokens=5, completion_tokens=2, prompt_tokens_details=None)))
    options = {"base_url": "http://127.0.0.1:9", "api_key": "unused", "timeout": 1.0, "max_retries": 0}
    anthropic_wire, openai_wire = AnthropicWire("claude-x", **options), OpenAIChatWire("gpt-x", **options)
    anthropic_wire.client.close()
    openai_wire.client.close()
    anthropic_wire.client = SimpleNamespace(messages=messages, close=lambda: None)
    openai_wire.client = SimpleNamespace(chat=SimpleNamespace(completions=completions), close=lambda: None)
    a, cache_a = engine_for(tmp_path / "a", anthropic_wire, {"backend": "anthropic", "model": "claude-x"})
    o, cache_o = engine_for(tmp_path / "o", openai_wire)
    try:
        assert a.supports_response_schema is False and "response_format" not in a.supported_params
        assert o.supports_response_schema is True and "response_format" in o.supported_params
        assert a.complete(request(response_format=fmt)).message.parts[0].text == "{}"
        assert o.complete(request(response_format=fmt)).message.parts[0].text == "{}"
    finally:
        cache_a.close()
        cache_o.close()
    assert len(messages.calls) == len(completions.calls) == 1
    sent = messages.calls[0]
    assert sent["model"] == "claude-x" and sent["messages"] == [{"role": "user", "content": "hi"}]
    assert "response_format" not in sent and "grade" not in repr(sent) and "properties" not in repr(sent)
    assert sent.get("extra_body") == {"temperature": 0.0}  # only sampling goes through extra_body, never the schema
    assert completions.calls[0]["response_format"] == {"type": "json_schema", "json_schema": {"name": "grade", "schema": SCHEMA}}


def test_predictions_csv_never_writes_a_live_formula():
    from calibrator.components.grader import GRADER, GraderPrediction
    
    from calibrator.calibration.runs import predictions_csv

    row = GraderRow(id="=HYPERLINK(1)", context="patient: hi", target_info=["age: adult"], candidate="-1+1", content_score=1)
    text = predictions_csv(GRADER, [(row, "test")], {"baseline": {row.id: GraderPrediction(error="@SUM(A1)")}})
    line = text.splitlines()[1]
    assert line.startswith("'=HYPERLINK(1),test,patient: hi,age: adult,'-1+1,1,,")
    assert line.endswith("'@SUM(A1)")
