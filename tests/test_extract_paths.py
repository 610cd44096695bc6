"""Paths of the resumable extraction (calibrator/components/extract.py) the other tests do not reach: a torn tail of
`<out>.partial` longer than the 64 KiB first look-back, a partial file that is one torn line; the working index's
batched commits (it is rebuilt at every start, so whatever a kill left in it is never read); and a record that failed
in one run retried end to end by the next run of `extract`, against a server on 127.0.0.1 that fails some calls."""

import json
import re
import urllib.request
from pathlib import Path

import dspy
import pytest
from dspy.utils.dummies import DummyLM

from calibrator.components.extract import SampleIndex, _drop_torn_tail, extract_samples, index_path, partial_path
from calibrator.lm import engine as lm_engine
from calibrator.lm.spec import LMSpec
from calibrator.expert_logs.logs import Sample
from calibrator.prompt import load_prompt
from support import ROOT
from support.extraction import Dies, samples
from support.http import Quiet, ThreadedServer, send_json

LOCAL = LMSpec.parse("local")
PROMPT = ROOT / "prompts" / "extractor.yaml"
KIB = 1 << 10


def extract(todo: list[Sample], out: Path, lm: DummyLM):
    with dspy.context(lm=lm, adapter=dspy.ChatAdapter()):
        return extract_samples(todo, load_prompt(PROMPT), LOCAL, out, show_progress=False)


def killed_after(todo: list[Sample], out: Path, answers: int) -> list[str]:
    """Run until the LM has answered `answers` times, then die; the whole lines the partial file keeps."""
    with pytest.raises(KeyboardInterrupt):
        extract(todo, out, Dies(answers))
    text = partial_path(out).read_text()
    assert text.endswith("\n")
    return text.splitlines()


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


# ---- the torn tail of the partial file -----------------------------------------------------------------------

def whole_lines(n: int, width: int) -> bytes:
    """n JSON lines of about `width` bytes each, every one ending in a newline."""
    return b"".join(json.dumps({"id": f"r{i}", "pad": "x" * width}).encode() + b"\n" for i in range(n))


@pytest.mark.parametrize("torn", [1, 64 * KIB - 1, 64 * KIB, 64 * KIB + 1, 300 * KIB])
def test_a_torn_tail_of_any_length_is_cut_back_to_the_last_whole_line(tmp_path, torn):
    """The look-back starts at 64 KiB and doubles: a tail of 64 KiB or more is found in a later, wider window, which
    holds whole lines too; the cut is at the last newline, so every one of them stays."""
    path = tmp_path / "samples.jsonl.partial"
    kept = whole_lines(400, 500)  # ~200 KiB: every window past the first holds many whole lines
    path.write_bytes(kept + b'{"id": "torn", "pad": "' + b"y" * max(0, torn - 23))
    assert path.stat().st_size - len(kept) == max(torn, 23)
    _drop_torn_tail(path)
    assert path.read_bytes() == kept


@pytest.mark.parametrize("size", [1, 40, 64 * KIB, 64 * KIB + 1, 300 * KIB])
def test_a_partial_file_that_is_one_torn_line_is_emptied(tmp_path, size):
    path = tmp_path / "samples.jsonl.partial"
    path.write_bytes(b"z" * size)  # killed while writing the very first record: no newline anywhere
    _drop_torn_tail(path)
    assert path.read_bytes() == b""


@pytest.mark.parametrize("content", [b"", b"\n", whole_lines(3, 10), whole_lines(200, 600)])
def test_a_partial_file_ending_in_a_newline_is_left_as_it_is(tmp_path, content):
    path = tmp_path / "samples.jsonl.partial"
    path.write_bytes(content)
    _drop_torn_tail(path)
    assert path.read_bytes() == content


def test_resume_after_a_torn_tail_over_64_kib_keeps_every_whole_record(tmp_path):
    """The resume reads the whole lines, then cuts the torn tail before it appends: killed again, it leaves every
    whole line of the first run and its own records after them, each on a line of its own."""
    out, todo = tmp_path / "samples.jsonl", samples(12)
    kept = killed_after(todo, out, 8)
    assert len(kept) == 8
    torn = json.dumps({"id": "s8_0", "session_id": "s8", "target_info": ["z" * (200 * KIB)]})[: 150 * KIB]
    with open(partial_path(out), "a") as f:
        f.write(torn)  # a record cut 150 KiB in, with no newline
    again = killed_after(todo, out, 2)
    assert again[:8] == kept
    assert {json.loads(line)["id"] for line in again[8:]} - {"s_stop_1"} == {"s8_0", "s9_0"}  # the stop needs no LM call
    lm = Dies(100)
    summary = extract(todo, out, lm)
    assert (summary.reused, summary.extracted, summary.failed, lm.made) == (len(again), 2, 0, 2)
    assert ids(out) == [s.id for s in todo]
    assert not partial_path(out).exists()


def test_resume_after_a_partial_file_of_one_torn_line_appends_on_a_line_of_its_own(tmp_path):
    """The torn line is dropped, not continued: the next record written starts the file, so a second kill leaves
    a partial file of whole, readable records."""
    out, todo = tmp_path / "samples.jsonl", samples(4)
    partial_path(out).write_text('{"id": "s0_0", "session_id": "s0", "context": [{"role": "us')
    kept = killed_after(todo, out, 2)
    assert sorted(json.loads(line)["id"] for line in kept if json.loads(line)["decision"] == "continue") == ["s0_0", "s1_0"]
    lm = Dies(100)
    summary = extract(todo, out, lm)
    assert (summary.reused, lm.made) == (len(kept), 2)
    assert ids(out) == [s.id for s in todo]


# ---- the working index: batched commits, rebuilt at every start ---------------------------------------------------

def test_an_extraction_over_many_index_batches_writes_every_record_in_log_order(tmp_path, monkeypatch):
    monkeypatch.setattr(SampleIndex, "BATCH", 3)  # 14 samples: ~28 index writes, 9 commits and a pending batch
    out, todo = tmp_path / "samples.jsonl", samples(13)
    summary = extract(todo, out, Dies(100))
    assert (summary.samples, summary.extracted, summary.failed) == (14, 13, 0)
    assert ids(out) == [s.id for s in todo]
    assert not index_path(out).exists() and not partial_path(out).exists()
    again = Dies(0)  # the finished file is read back through the index, batch by batch
    assert extract(todo, out, again).reused == 14 and again.made == 0
    assert ids(out) == [s.id for s in todo]


@pytest.mark.parametrize("leftover", ["as the kill left it", "garbage"])
def test_a_kill_between_index_batches_loses_no_finished_record(tmp_path, monkeypatch, leftover):
    """The partial file, written and flushed record by record, is what survives a kill; the index (committed every
    BATCH writes, journal off) is rebuilt from it at the next start, whatever state the kill left it in."""
    monkeypatch.setattr(SampleIndex, "BATCH", 4)
    out, todo = tmp_path / "samples.jsonl", samples(10)
    kept = killed_after(todo, out, 7)  # 7 answers: some index batches committed, one pending when it died
    assert {s.id for s in todo[:7]} <= {json.loads(line)["id"] for line in kept}
    assert index_path(out).exists()  # the killed run never got to remove it
    if leftover == "garbage":
        index_path(out).write_bytes(b"not a database, torn by the kill\x00" * 100)
    lm = Dies(100)
    summary = extract(todo, out, lm)
    assert summary.reused == len(kept) and lm.made == 3
    assert ids(out) == [s.id for s in todo]
    assert all(r["error"] is None for r in map(json.loads, out.read_text().splitlines()))
    assert not index_path(out).exists()


# ---- a failed record is retried by the next run, end to end ---------------------------------------------------------

def write_log(path: Path, markers: list[str]) -> Path:
    """One session per marker: the patient names it, then a question, an answer and a final word (1 continue + 1 stop)."""
    lines = []
    for i, marker in enumerate(markers):
        messages = [{"role": "user", "content": f"A headache for {i + 1} days ({marker})"},
                    {"role": "assistant", "content": "Do you have a fever?"}, {"role": "user", "content": "No"},
                    {"role": "assistant", "content": "Take paracetamol and rest."}]
        lines.append(json.dumps({"session_id": f"s{i}", "messages": messages}))
    path.write_text("\n".join(lines) + "\n")
    return path


class Flaky(ThreadedServer):
    """An OpenAI-compatible server on 127.0.0.1 that forwards to the stub, except that while `failing` a request
    naming `fail-500` gets HTTP 500, one naming `bad-json` a body that is not JSON, and one naming `garbage` a
    well-formed answer of prose where JSON was asked for."""

    def __init__(self, stub_url: str) -> None:
        self.failing, self.extractions = True, 0
        owner = self

        class Handler(Quiet):
            def do_POST(self):  # noqa: N802
                raw = self.rfile.read(int(self.headers["Content-Length"]))
                text = json.dumps(json.loads(raw)["messages"])
                status, body = 200, None
                if "headache" in text:
                    owner.extractions += 1
                    if owner.failing and "fail-500" in text:
                        status, body = 500, {"error": {"message": "internal error"}}
                    elif owner.failing and "bad-json" in text:
                        body = b'{"id": "x", "choices": [{"message": '
                    elif owner.failing and "garbage" in text:
                        body = {"id": "x", "object": "chat.completion", "created": 0, "model": "stub", "choices": [
                            {"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "Sorry, I cannot help with that."}}],
                            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
                if body is None:
                    request = urllib.request.Request(stub_url + "/chat/completions", data=raw,
                                                     headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=30) as answer:
                        body = answer.read()
                send_json(self, status, body)

        super().__init__(Handler)


def records(path: Path) -> dict[str, dict]:
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def extract_through(server: Flaky, logs: Path, out: Path, cache: Path) -> list:
    """`extract` one sample at a time through the flaky server, with the call cache in `cache`."""
    return ["extract", "--logs", logs, "--out", out, "--prompt", PROMPT, "--lm", f"openai-compatible:stub@{server.url}",
            "--cache-dir", cache, "--no-progress", "--concurrency", "1"]


def test_a_record_that_failed_is_retried_by_the_next_run(tmp_path, stub, cli, monkeypatch):
    monkeypatch.setattr(lm_engine, "backoff", lambda *_: 0.0)  # a 500 is retried 4 times first: no need to wait
    # the first call succeeds, so the later failures are those requests' own, not a wrong backend
    logs = write_log(tmp_path / "log.jsonl", ["ok", "fail-500", "ok", "bad-json", "ok"])
    out = tmp_path / "samples.jsonl"
    with Flaky(stub.url) as server:
        args = extract_through(server, logs, out, tmp_path / "cache")
        first = cli.calibrator(*args)
        assert first.code == 0, first.err
        assert "5 extracted now" in first.out and "2 failed (retried on the next run)" in first.out
        failed = {i for i, r in records(out).items() if r["error"]}
        assert failed == {"s1_0", "s3_0"}
        assert "Error code: 500" in records(out)["s1_0"]["error"]
        assert "Expecting value" in records(out)["s3_0"]["error"]  # the body did not parse as JSON
        server.failing, server.extractions = False, 0
        second = cli.calibrator(*args)  # the same command, the same LM and cache
    assert second.code == 0, second.err
    assert "2 extracted now (0 re-extracted" in second.out and "8 from an earlier run" in second.out
    assert "0 failed" in second.out
    assert server.extractions == 2  # only the two failed samples were asked again
    got = records(out)
    assert list(got) == [f"s{i}_{k}" for i in range(5) for k in range(2)]  # log order, each once
    assert all(r["error"] is None for r in got.values())
    assert len({(r["prompt_sha256"], r["lm"]) for r in got.values()}) == 1  # the retried ones stamped like the rest


class KnownBug(AssertionError):
    """What the known bug below breaks; any other failure of its test is a real failure."""


@pytest.mark.xfail(raises=KnownBug, strict=True, reason="known bug: the unparseable answer is cached, so the next run "
                   "'retries' a failed parse by reading the same answer back (0 LM calls) and fails it again")
def test_a_record_whose_answer_could_not_be_parsed_is_asked_again_by_the_next_run(tmp_path, stub, cli):
    logs = write_log(tmp_path / "log.jsonl", ["ok", "garbage", "ok"])
    out = tmp_path / "samples.jsonl"
    with Flaky(stub.url) as server:
        args = extract_through(server, logs, out, tmp_path / "cache")
        first = cli.calibrator(*args)
        assert first.code == 0, first.err
        assert records(out)["s1_0"]["error"].startswith("parse:") and "1 failed (retried on the next run)" in first.out
        server.failing, server.extractions = False, 0
        second = cli.calibrator(*args)
    assert second.code == 0, second.err
    if records(out)["s1_0"]["error"] is not None or not re.search(r"^[1-9]\d* LM calls", second.out, re.M):
        raise KnownBug(f"s1_0 still failed: {records(out)['s1_0']['error']!r}; {second.out.strip().splitlines()[-1]!r}")
    assert "0 failed" in second.out
