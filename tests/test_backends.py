"""The OpenAI-compatible and Anthropic paths, through the official SDKs, against a real server on 127.0.0.1
(llama.cpp's, serving the embedded model), plus retries and recorded failures through a real flaky proxy."""

import http.server
import json
import threading
import urllib.request
from pathlib import Path

import dspy
import pytest

from calibrator.components.grader import GraderRow
from calibrator.components.grader import GRADER
from calibrator.goldset import load_goldset
from calibrator.lm import LMSpec, open_lm
from calibrator.lm.adapter import CompactJSONAdapter
from calibrator.lm.local import LocalServer, embedded_gguf
from calibrator.prompt import load_prompt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def server():
    s = LocalServer(embedded_gguf(), n_ctx=4096)
    yield s
    s.close()


@pytest.fixture(scope="module")
def program():
    return GRADER.build_program(load_prompt(ROOT / "prompts/grader.yaml"))


@pytest.fixture(scope="module")
def row():
    return load_goldset(ROOT / "goldsets/grader.csv", GraderRow).rows[0]


def test_openai_compatible_decodes_against_the_schema(server, program, row, tmp_path):
    """The request carries the grader's JSON schema, so the raw answer is strict JSON with a valid label
    (no repair by the parser), and the meter counts exactly the tokens the server reported."""
    httpd, handler = _proxy(server.base_url, failures=0)
    try:
        spec = LMSpec.parse(f"openai-compatible:smollm2@http://127.0.0.1:{httpd.server_port}/v1")
        with open_lm(spec, cache_dir=tmp_path, max_retries=0) as lm, dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            first = GRADER.predict(program, row)
            used = lm.usage()
            again = GRADER.predict(program, row)
            assert again == first
            assert lm.usage().lm_calls == 1 and lm.usage().cache_hits == 1
    finally:
        httpd.shutdown()
    [(path, request, response)] = handler.exchanges
    assert path == "/v1/chat/completions"
    assert request["response_format"]["type"] == "json_schema"
    properties = request["response_format"]["json_schema"]["schema"]["properties"]
    assert properties["content_score"]["enum"] == properties["format_score"]["enum"] == [0.0, 0.5, 1.0]
    answer = json.loads(response["choices"][0]["message"]["content"])
    assert answer["content_score"] in (0.0, 0.5, 1.0) and answer["format_score"] in (0.0, 0.5, 1.0)
    assert first.error is None and (first.content_score, first.format_score) == (answer["content_score"], answer["format_score"])
    assert (used.prompt_tokens, used.completion_tokens) == (response["usage"]["prompt_tokens"], response["usage"]["completion_tokens"])
    assert used.prompt_tokens > 0 and used.completion_tokens > 0


def test_anthropic_sdk_against_the_messages_endpoint(server, row, tmp_path, monkeypatch):
    """No schema decoding on this API, so the prompt carries one demonstration per label (which the embedded
    model follows; with none it writes Python): the system text, the alternating demo turns and the answer
    all cross the Messages wire, the answer parses to a label, and every input token is counted."""
    train = [r for r in load_goldset(ROOT / "goldsets/grader.csv", GraderRow).split("train") if r.id != row.id]
    demos = [next(r for r in train if r.content_score == label) for label in (1.0, 0.0, 0.5)]
    prompt = load_prompt(ROOT / "prompts/grader.yaml")
    prompt = prompt.model_copy(update={"demos": [GRADER.demo_record(GRADER.to_example(r, demo=True)) for r in demos]})
    httpd, handler = _proxy(server.base_url, failures=0)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", f"http://127.0.0.1:{httpd.server_port}")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test-not-a-real-key")
    try:
        with open_lm(LMSpec.parse("anthropic:smollm2"), cache_dir=tmp_path, max_retries=0) as lm, \
                dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            assert "response_format" not in lm.engine.supported_params
            pred = GRADER.predict(GRADER.build_program(prompt), row)
            used = lm.usage()
    finally:
        httpd.shutdown()
    [(path, request, response)] = handler.exchanges
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


class _FlakyProxy(http.server.BaseHTTPRequestHandler):
    """Answers the first `failures` POSTs with 503, then forwards to the real server and records each
    forwarded (path, request, response) as JSON: what actually crossed the wire."""

    upstream = ""
    failures = 0
    seen = 0
    exchanges: list[tuple[str, dict, dict]] = []

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen += 1
        if type(self).seen <= type(self).failures:
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"error": {"message": "busy"}}).encode())
            return
        req = urllib.request.Request(self.upstream + self.path, data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            payload = r.read()
        type(self).exchanges.append((self.path, json.loads(body), json.loads(payload)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def _proxy(upstream: str, failures: int):
    handler = type("Proxy", (_FlakyProxy,), {"upstream": upstream, "failures": failures, "seen": 0, "exchanges": []})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, handler


def _grade_through_proxy(server, program, row, cache_dir, *, failures: int, max_retries: int):
    httpd, handler = _proxy(server.base_url, failures=failures)
    try:
        spec = LMSpec.parse(f"openai-compatible:smollm2@http://127.0.0.1:{httpd.server_port}/v1")
        with open_lm(spec, cache_dir=cache_dir, max_retries=max_retries) as lm, \
                dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            return GRADER.predict(program, row), handler.seen, lm.usage()
    finally:
        httpd.shutdown()


def test_retries_with_backoff_on_503(server, program, row, tmp_path):
    pred, seen, usage = _grade_through_proxy(server, program, row, tmp_path, failures=2, max_retries=3)
    assert pred.error is None
    assert seen == 3
    assert usage.failures == 0 and usage.lm_calls == 1


def test_failure_after_retries_is_recorded_not_raised(server, program, row, tmp_path):
    pred, seen, usage = _grade_through_proxy(server, program, row, tmp_path, failures=100, max_retries=1)
    assert pred.content_score is None and pred.error
    assert seen == 2
    assert usage.failures == 1 and usage.lm_calls == 0
