"""The extractor's command line end to end against the stub (the machinery is the point; the embedded model's
extraction is proven in tests/test_concurrency.py): a smoke calibration run, and `extract` over a RealMedConv file with
malformed lines, killed half-way and resumed, then extracted again with another prompt."""

import csv
import json
import re
from pathlib import Path

import pytest
from support import ROOT
from support.cli import Started

pytestmark = pytest.mark.slow

METRICS = ("item_precision", "item_recall", "item_f1", "decision_accuracy", "parse_failure_rate")


def stub_lm(stub, tmp: Path) -> list[str]:
    return ["--lm", f"openai-compatible:stub@{stub.url}", "--cache-dir", str(tmp / "cache"), "--no-progress"]


def test_smoke_run_writes_the_same_artifact_set_as_the_grader(tmp_path, stub, cli):
    done = cli.calibrator("run", "--component", "extractor", "--budget", "smoke", "--out", tmp_path / "reports",
                          "--save-prompt", tmp_path / "extractor.calibrated.yaml", *stub_lm(stub, tmp_path))
    assert done.code == 0, done.err
    [folder] = sorted(p for p in (tmp_path / "reports").iterdir() if p.is_dir())
    assert folder.name in (tmp_path / "reports" / "index.html").read_text()
    assert {p.name for p in folder.iterdir()} == {"run.json", "predictions.csv", "index.html", "prompt.calibrated.yaml"}
    rec = json.loads((folder / "run.json").read_text())
    assert rec["component"] == "extractor" and rec["comparison"]["metric"] == "item_f1"
    for side in ("baseline", "calibrated"):
        for split in ("val", "test"):
            scores = rec[side][split]
            for name in METRICS:
                assert name in scores and len(scores[f"{name}_ci"]) == 2
    with open(folder / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {"id", "split", "gold_decision", "baseline_decision", "calibrated_decision", "gold_items", "calibrated_items"} <= set(rows[0])
    test_rows = [r for r in rows if r["split"] == "test"]
    assert sum(map(sum, rec["calibrated"]["test"]["decision_confusion"])) == sum(r["calibrated_decision"] != "" for r in test_rows)
    saved = (tmp_path / "extractor.calibrated.yaml").read_text()
    assert "component: extractor" in saved and "item_f1" in saved and "fields:" in saved


def session(sid: str, *turns: tuple[str, str]) -> str:
    return json.dumps({"session_id": sid, "diagn": "cold", "messages": [{"role": r, "content": c} for r, c in turns]})


def realmedconv(path: Path, n_long: int) -> Path:
    lines = [
        session("greet", ("assistant", "Hello, how can I help?"), ("user", "I have a sore throat"),
                ("assistant", "How long have you had it?"), ("user", "Two days"),
                ("assistant", "Any allergies?"), ("assistant", "To medicines, I mean."), ("user", "No"),
                ("assistant", "<med_search>")),
        "{not json",
        session("badrole", ("doctor", "hi"), ("user", "hello")),
        json.dumps({"session_id": "empty", "messages": []}),
        session("pairs", ("user", "My son has a cough"), ("user", "He is 6"), ("assistant", "Is it dry or chesty?"),
                ("user", "Dry"), ("assistant", "Try honey and lemon."), ("assistant", "See the GP if it lasts 3 weeks.")),
    ]
    for i in range(n_long):
        turns = [("user", f"I've had heartburn for {i + 2} days")]
        for question, answer in [("Does it come after meals?", "Yes, after dinner"), ("Are you taking anything else?", "No"),
                                 ("Are you pregnant?", "No")]:
            turns += [("assistant", question), ("user", answer)]
        turns.append(("assistant", "<med_search>"))
        lines.append(session(f"long{i}", *turns))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_extract_segments_reports_bad_lines_and_resumes_after_a_kill(tmp_path, stub, cli):
    logs = realmedconv(tmp_path / "sessions.jsonl", n_long=4)
    out = tmp_path / "samples.jsonl"
    partial = tmp_path / "samples.jsonl.partial"
    args = ["extract", "--logs", logs, "--out", out, "--prompt", ROOT / "prompts/extractor.yaml", *stub_lm(stub, tmp_path),
            "--concurrency", "1"]
    stub.delay = 0.2
    Started("calibrator", *args, logs=tmp_path / "logs").kill_when(
        lambda: partial.exists() and len(partial.read_text().splitlines()) >= 3)
    assert not out.exists()
    before = len(partial.read_text().splitlines())

    stub.delay = 0.0
    done = cli.calibrator(*args)
    assert done.code == 0, done.err
    for line in (2, 3, 4):
        assert f"sessions.jsonl, line {line}:" in done.err
    assert "3 skipped" in done.out
    assert f"{before} from an earlier run" in done.out or f"{before - 1} from an earlier run" in done.out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)) == 3 + 2 + 4 * 4  # greet: 3 runs after the greeting; pairs: 2; long: 4 each
    greet = {r["id"]: r for r in records if r["session_id"] == "greet"}
    assert [greet[f"greet_{k}"]["decision"] for k in range(3)] == ["continue", "continue", "stop"]
    assert len(greet["greet_1"]["context"]) == 4  # the full history, greeting included
    assert [m["content"] for m in greet["greet_1"]["future"][:2]] == ["Any allergies?", "To medicines, I mean."]
    assert greet["greet_2"]["future"] == [{"role": "assistant", "content": "<med_search>"}] and greet["greet_2"]["target_info"] == []
    pairs = {r["id"]: r for r in records if r["session_id"] == "pairs"}
    assert [m["content"] for m in pairs["pairs_0"]["context"]] == ["My son has a cough", "He is 6"]
    assert pairs["pairs_1"]["decision"] == "stop" and len(pairs["pairs_1"]["future"]) == 2
    assert not partial.exists()


def test_extract_with_another_prompt_re_extracts_every_continue_sample(tmp_path, stub, cli):
    from calibrator.prompt import load_prompt, save_prompt

    logs = realmedconv(tmp_path / "sessions.jsonl", n_long=0)  # greet: 2 continue + 1 stop; pairs: 1 continue + 1 stop
    out = tmp_path / "samples.jsonl"
    prompt_a = ROOT / "prompts/extractor.yaml"
    base = load_prompt(prompt_a)
    sentence = "Only list what the pharmacist asked, never what the patient said unasked."
    assert sentence in base.instructions
    prompt_b = tmp_path / "extractor.b.yaml"
    save_prompt(base.model_copy(update={"instructions": base.instructions.replace(sentence, "List only what the pharmacist asked.")}), prompt_b)

    first = cli.calibrator("extract", "--logs", logs, "--out", out, "--prompt", prompt_a, *stub_lm(stub, tmp_path))
    assert first.code == 0, first.err
    by_a = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    continues = [r for r in by_a.values() if r["decision"] == "continue"]
    assert len(continues) == 3 and all(r["error"] is None for r in continues)

    asked = stub.requests
    second = cli.calibrator("extract", "--logs", logs, "--out", out, "--prompt", prompt_b, *stub_lm(stub, tmp_path))
    assert second.code == 0, second.err
    assert ": 3 extracted now (3 re-extracted: made by another prompt or LM), 0 from an earlier run," in second.out
    calls = re.search(r"^(\d+) LM calls, (\d+) cache hits", second.out, re.MULTILINE)
    assert calls is not None
    assert int(calls[1]) == 3 and int(calls[2]) == 0  # the new instructions are in every request: none is prompt A's
    assert stub.requests - asked == 3 + 1  # the three continue samples and the preflight
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == 5
    lm = f"openai-compatible:stub@{stub.url}"
    assert {(r["prompt_sha256"], r["lm"]) for r in records} == {(load_prompt(prompt_b).content_sha256(), lm)}
    assert load_prompt(prompt_b).content_sha256() != base.content_sha256()
