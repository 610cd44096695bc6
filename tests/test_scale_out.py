"""Real-size paths through the command line, against a fast OpenAI-compatible server on 127.0.0.1: extraction at
concurrency (killed with SIGKILL and resumed), shards and their merge, session selection, and a wrong backend stopped
in one line. The answers are the stub's; tests/test_concurrency.py runs the embedded model itself."""

import contextlib
import json
import re
import socket
import time
from pathlib import Path

import pytest

from calibrator.expert_logs.shards import Shard, file_sha256, manifest_path, shard_of
from support import ROOT
from support.cli import Started, calibrator
from support.extraction import cached, extract_args, records, write_log
from support.http import Quiet, ThreadedServer, send_json



@pytest.mark.slow
def test_extract_at_concurrency_killed_and_resumed_loses_and_duplicates_nothing(tmp_path, stub):
    logs, out = write_log(tmp_path / "log.jsonl", 60), tmp_path / "samples.jsonl"
    partial = tmp_path / "samples.jsonl.partial"
    stub.delay = 0.2
    Started("calibrator", *extract_args(logs, out, stub.url, tmp_path / "cache", "--concurrency", "8"), logs=tmp_path / "logs").kill_when(
        lambda: partial.exists() and len(partial.read_text().splitlines()) >= 40)
    assert not out.exists()
    valid = [line for line in partial.read_text().splitlines() if line.endswith("}")]
    # a fresh call cache: whatever is not redone came from the partial file, not from cached answers
    done = calibrator(*extract_args(logs, out, stub.url, tmp_path / "cache-2", "--concurrency", "8"))
    assert done.code == 0, done.err
    got = records(out)
    ids = [r["id"] for r in got]
    assert ids == [f"s{i:04d}_{k}" for i in range(60) for k in range(3)]  # every sample once, in log order
    assert all(r["error"] is None for r in got)
    assert [r["session_index"] for r in got] == [i for i in range(60) for _ in range(3)]
    reused = int(re.search(r"(\d+) from an earlier run", done.out).group(1))
    assert reused >= len(valid) - 1 >= 39  # every whole line the kill left is reused (one may be torn mid-write)
    assert reused < 180  # and the rest was really extracted now
    continue_ids = {r["id"] for r in got if r["decision"] == "continue"}
    assert sum(stub.seen.values()) - 2 <= len(continue_ids) + 8  # two preflights; at most the calls in flight made twice
    assert not partial.exists() and not (tmp_path / "samples.jsonl.index.sqlite").exists()


def test_shards_merge_back_into_the_whole_extraction(tmp_path, stub):
    logs = write_log(tmp_path / "log.jsonl", 40)
    whole = calibrator(*extract_args(logs, tmp_path / "whole.jsonl", stub.url, tmp_path / "cache", "--concurrency", "4"))
    assert whole.code == 0, whole.err
    parts = []
    for i in (1, 2, 3):
        part = tmp_path / f"part{i}.jsonl"
        done = calibrator(*extract_args(logs, part, stub.url, tmp_path / "cache-shards", "--shard", f"{i}/3", "--concurrency", "4"))
        assert done.code == 0, done.err
        parts.append(part)
    sessions = [{r["session_id"] for r in records(p)} for p in parts]
    assert all(s for s in sessions) and sum(len(s) for s in sessions) == 40  # every session in exactly one shard
    assert all(shard_of(sid, 3) == i + 1 for i, s in enumerate(sessions) for sid in s)
    merged = calibrator("extract", "merge", str(parts[2]), str(parts[0]), str(parts[1]), "--out", str(tmp_path / "merged.jsonl"))
    assert merged.code == 0, merged.err
    assert (tmp_path / "merged.jsonl").read_text() == (tmp_path / "whole.jsonl").read_text()
    assert "merged 3 shards" in merged.out and "40 sessions, 120 samples" in merged.out


def _shards(tmp_path: Path, url: str, n: int = 12) -> list[Path]:
    logs = write_log(tmp_path / "log.jsonl", n)
    parts = []
    for i in (1, 2):
        part = tmp_path / f"part{i}.jsonl"
        assert calibrator(*extract_args(logs, part, url, tmp_path / "cache", "--shard", f"{i}/2")).code == 0
        parts.append(part)
    return parts


def test_merge_refuses_shards_that_do_not_make_one_whole(tmp_path, stub):
    one, two = _shards(tmp_path, stub.url)
    merged = tmp_path / "merged.jsonl"

    def refused(*paths: Path) -> str:
        done = calibrator("extract", "merge", *map(str, paths), "--out", str(merged))
        assert done.code == 2 and not merged.exists()
        return done.err

    assert "shard(s) 2/2 missing" in refused(one)
    assert "shard 1/2 given twice" in refused(one, one)
    lines = two.read_text().splitlines()
    two.write_text("\n".join(lines[:-1]) + "\n")
    assert f"{len(lines) - 1} records, but its manifest says {len(lines)}" in refused(one, two)
    two.write_text("\n".join(lines) + "\n")
    stray = json.loads(lines[0])
    one.write_text(one.read_text() + json.dumps(stray) + "\n")
    assert f"session {stray['session_id']!r} belongs to shard 2/2, not 1/2" in refused(one, two)
    failed = json.loads(lines[0]) | {"error": "parse: no JSON"}
    two.write_text("\n".join([json.dumps(failed), *lines[1:]]) + "\n")
    assert "failed (parse: no JSON); run that shard's extract again" in refused(one, two)
    restamped = json.loads(lines[0]) | {"lm": "openai:gpt-4o-mini"}
    two.write_text("\n".join([json.dumps(restamped), *lines[1:]]) + "\n")
    assert "made by another prompt or LM than its manifest says" in refused(one, two)
    two.write_text("\n".join(lines) + "\n")
    one.write_text("\n".join(one.read_text().splitlines()[:-1]) + "\n")  # drop the stray line added above
    manifest = tmp_path / "part1.jsonl.manifest.json"
    manifest.write_text(manifest.read_text().replace('"lm": "openai-compatible', '"lm": "other'))
    assert "made from another LM" in refused(one, two)


def test_limit_and_a_session_list_select_what_is_extracted(tmp_path, stub):
    logs = write_log(tmp_path / "log.jsonl", 20)
    listed = tmp_path / "ids.txt"
    listed.write_text("# wanted\ns0003\n\ns0017\nnot-there\n")
    limited = calibrator(*extract_args(logs, tmp_path / "a.jsonl", stub.url, tmp_path / "cache", "--limit", "5"))
    chosen = calibrator(*extract_args(logs, tmp_path / "b.jsonl", stub.url, tmp_path / "cache", "--sessions", str(listed)))
    bad = calibrator(*extract_args(logs, tmp_path / "c.jsonl", stub.url, tmp_path / "cache", "--shard", "0/2"))
    assert limited.code == 0 and chosen.code == 0
    assert [r["session_id"] for r in records(tmp_path / "a.jsonl")][::3] == [f"s{i:04d}" for i in range(5)]
    assert [r["session_id"] for r in records(tmp_path / "b.jsonl")][::3] == ["s0003", "s0017"]
    assert [r["session_index"] for r in records(tmp_path / "b.jsonl")][::3] == [3, 17]  # positions in the whole log
    assert "1 session id(s) listed" in chosen.err
    assert bad.code == 2 and "--shard '0/2': expected I/N with 1 <= I <= N" in bad.err


def test_shard_parsing():
    assert Shard.parse("2/5") == Shard(index=2, count=5) and str(Shard.parse("2/5")) == "2/5"
    for text in ("0/3", "4/3", "a/b", "3", "1/0"):
        with pytest.raises(ValueError, match="expected I/N"):
            Shard.parse(text)


# ---- a wrong backend stops the command in one line ---------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Refusing(Quiet):
    status = 401

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        send_json(self, self.status, {"error": {"message": "nope"}})


def test_a_wrong_backend_stops_extract_in_one_line_and_keeps_the_partial_file(tmp_path):
    logs = write_log(tmp_path / "log.jsonl", 5)
    url = f"http://127.0.0.1:{_free_port()}/v1"
    done = calibrator(*extract_args(logs, tmp_path / "out.jsonl", url, tmp_path / "cache"))
    assert done.code == 1
    [line] = [l for l in done.err.splitlines() if l.startswith("error:")]
    assert f"--lm openai-compatible:stub@{url}: connection refused (preflight request)" in line
    assert "finished samples are kept in" in done.err and not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("case", ["nothing listening", "401", "404"])
def test_a_wrong_backend_stops_eval_fast_with_one_line_and_keeps_the_cache(tmp_path, case, stub):
    seeded = calibrator(*extract_args(write_log(tmp_path / "log.jsonl", 2), tmp_path / "seed.jsonl", stub.url, tmp_path / "cache"))
    assert seeded.code == 0, seeded.err
    before = cached(tmp_path / "cache")
    assert len(before) == 4  # two sessions' two questions
    refusing = None if case == "nothing listening" else ThreadedServer(type("H", (_Refusing,), {"status": int(case)}))
    url = refusing.url if refusing else f"http://127.0.0.1:{_free_port()}/v1"
    started = time.monotonic()
    with refusing or contextlib.nullcontext():
        done = calibrator("eval", "--component", "grader", "--lm", f"openai-compatible:qwen@{url}", "--cache-dir", str(tmp_path / "cache"),
                          "--out", str(tmp_path / "reports"), "--no-progress")
    elapsed = time.monotonic() - started
    expected = {"nothing listening": "connection refused", "401": "HTTP 401: the API key was refused",
                "404": "HTTP 404: unknown model or wrong URL"}[case]
    assert done.code == 1
    [line] = [l for l in done.err.splitlines() if l.startswith("error:")]
    assert f"--lm openai-compatible:qwen@{url}: {expected} (preflight request)" in line
    assert str(tmp_path / "cache") in line
    assert not (tmp_path / "reports").exists() or not any((tmp_path / "reports").iterdir())
    assert cached(tmp_path / "cache") == before
    assert elapsed < 30  # one preflight, not 75 rows of retries (measured figures are in the README)


def test_extract_reads_a_corpus_at_a_stop_rule_and_redoes_only_what_the_rule_changes(tmp_path, stub):
    logs = tmp_path / "mts.csv"  # MTS-Dialog's format: consultations that end with thanks after the advice
    logs.write_text("ID,section_header,section_text,dialogue\n" + "".join(
        f'{i},GENHX,x,"Doctor: Hello.\nPatient: A cough for {i + 2} days.\nDoctor: Any fever?\nPatient: No.\n'
        f'Doctor: Rest and drink fluids.\nPatient: Thank you."\n' for i in range(6)))
    out, cache = tmp_path / "samples.jsonl", tmp_path / "cache"
    done = calibrator(*extract_args(logs, out, stub.url, cache))
    assert done.code == 0, done.err
    assert [r["decision"] for r in records(out)] == ["continue", "continue"] * 6  # `end`: the patient speaks last
    calls = stub.requests
    done = calibrator(*extract_args(logs, out, stub.url, cache, "--stop-rule", "advice"))
    assert done.code == 0, done.err
    assert stub.requests == calls  # the questions' records are reused; a stop needs no LM call
    got = records(out)
    assert [(r["id"], r["decision"]) for r in got] == [(f"{i}_{k}", d) for i in range(6) for k, d in ((0, "continue"), (1, "stop"))]
    assert all(r["target_info"] == [] for r in got if r["decision"] == "stop")
    assert "6 from an earlier run" in done.out
    assert json.loads(manifest_path(out).read_text())["stop_rule"] == "advice"


def test_extract_reads_a_primock57_folder(tmp_path, stub):
    out = tmp_path / "samples.jsonl"
    done = calibrator(*extract_args(ROOT / "tests/fixtures/corpora/primock57", out, stub.url, tmp_path / "cache"))
    assert done.code == 0, done.err
    got = records(out)
    assert got and {r["session_id"] for r in got} == {"day1_consultation01"}
    manifest = json.loads(manifest_path(out).read_text())
    assert manifest["logs_sha256"] == file_sha256(ROOT / "tests/fixtures/corpora/primock57") and len(manifest["logs_sha256"]) == 64
