"""`python -m train run --logs` from a real corpus format to eval.json, stopped inside each stage and run again: every
stage picks up what the stopped one left (extraction's partial records, the warm start's and GRPO's checkpoints, the
eval's cached completions); the warm start, GRPO and the eval are killed with SIGKILL. The extractor and grader LM is
a stub server on 127.0.0.1; the policy is a two-layer model with random weights and the embedded model's tokenizer
(the session's `tiny_policy`), trained and evaluated on this CPU: the stages' machinery is the point, not its answers.
The embedded 135M model itself is trained by tests/test_e2e_train.py."""

import html
import json
import re
from pathlib import Path

import dspy
import pytest

from calibrator.components.extract import extract_samples
from calibrator.lm.spec import LMSpec
from calibrator.prompt import load_prompt
from support import ROOT
from support.cli import Started
from support.extraction import Dies
from train.config import load_config
from train.data import segment_logs

pytestmark = pytest.mark.slow


def mts_csv(path: Path, sessions: int) -> Path:
    """MTS-Dialog's format: a few questions, then advice, then thanks (the stop point is the advice)."""
    rows = ["ID,section_header,section_text,dialogue"]
    for i in range(sessions):
        dialogue = (f"Doctor: What brings you in today?\nPatient: A cough, for {i + 2} days.\nDoctor: Okay. Any fever?\n"
                    f"Patient: No fever.\nDoctor: Do you smoke?\nPatient: No.\nDoctor: It is a viral cough; rest and drink fluids."
                    f"\nPatient: Thank you.")
        rows.append(f'{i},GENHX,A cough.,"{dialogue}"')
    path.write_text("\n".join(rows) + "\n")
    return path


def config(tmp_path: Path, url: str, model: Path) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(f"""
logs: {mts_csv(tmp_path / "mts.csv", 12)}
model: {model}
stop_rule: advice
policy_prompt: {ROOT / "prompts/policy.primary-care.yaml"}
extractor_prompt: {ROOT / "prompts/extractor.primary-care.yaml"}
grader_prompt: {ROOT / "prompts/grader.yaml"}
lm: openai-compatible:stub@{url}
grader_lm: openai-compatible:stub@{url}
allow_uncalibrated: true
concurrency: 1
eval_rollouts: 0
context_turns: 4
stop_share: 0.4
eval_fraction: 0.25
out: {tmp_path / "out"}
cache_dir: {tmp_path / "cache"}
warm_start: {{steps: 2, batch_size: 2, save_steps: 1}}
grpo: {{max_steps: 2, per_device_train_batch_size: 2, num_generations: 2, max_completion_length: 8, save_steps: 1,
        logging_steps: 1, use_cpu: true, bf16: false, report_to: none, dataloader_num_workers: 0, beta: 0.0}}
""")
    return path


def start(config_path: Path) -> Started:
    return Started("train", "run", "--config", config_path, logs=config_path.parent / "logs")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.is_file() else []


def test_train_run_from_logs_resumes_after_kill_in_every_stage(tmp_path, stub, cli, tiny_policy):
    out = tmp_path / "out"
    cfg = config(tmp_path, stub.url, tiny_policy)

    # 1. extraction: the trainer's own extraction, in this process, with an LM that dies after its first answer, leaves
    # what a killed `train run` leaves: the partial file, every line flushed (stop samples need no LM call, so they come
    # first); the extracted record is marked, and the mark must survive the resume. (A SIGKILLed extraction resumed is
    # tests/test_e2e_extractor.py and tests/test_scale_out.py.)
    settings = load_config(cfg)
    with dspy.context(lm=Dies(1), adapter=dspy.ChatAdapter()), pytest.raises(KeyboardInterrupt):
        extract_samples(segment_logs(settings), load_prompt(settings.extractor_prompt), LMSpec.parse(settings.lm),
                        out / "samples.jsonl", show_progress=False)
    partial = out / "samples.jsonl.partial"
    records = [json.loads(line) for line in lines(partial)]
    marked = next(r for r in records if r["decision"] == "continue")
    marked["target_info"] = ["symptom: MARKED by the test"]
    partial.write_text("".join(json.dumps(r) + "\n" for r in records))

    # 2. warm start: killed after its first checkpoint
    start(cfg).kill_when(lambda: (out / "warm_start/checkpoint-1/trainer_state.json").is_file())
    samples = [json.loads(line) for line in lines(out / "samples.jsonl")]
    assert [s["target_info"] for s in samples if s["id"] == marked["id"]] == [["symptom: MARKED by the test"]]
    assert len(samples) == 36 and sum(s["decision"] == "stop" for s in samples) == 12

    # 3. GRPO: killed after its first checkpoint
    killed = start(cfg).kill_when(lambda: (out / "checkpoint-1/trainer_state.json").is_file())
    assert re.search(r"warm start: 2 supervised steps of 2 expert moves, from \d+ rows \(\d+ stop\), resuming from checkpoint-1",
                     killed.out + killed.err)
    assert (out / "warm_start/final/config.json").is_file() and not (out / "final").exists()

    # 4. GRPO resumed from its checkpoint, then the eval (an eval killed with SIGKILL and resumed from its cached
    # completions is tests/test_sampled_eval.py)
    done = cli.train("run", "--config", cfg)
    assert done.code == 0, done.out[-3000:] + done.err[-3000:]
    run_record = json.loads((out / "run.json").read_text())
    assert run_record["resumed_from"].endswith("checkpoint-1") and run_record["steps"] == 2
    assert [json.loads(line)["step"] for line in lines(out / "metrics.jsonl")] == [1, 2]  # the killed step's line once

    # 5. a log file training never read: every one of its first 2 sessions is held out
    test_logs = tmp_path / "test.csv"
    test_logs.write_text("ID,section_header,section_text,dialogue\n" + "".join(
        f'T{i},GENHX,A rash.,"Doctor: Where is the rash?\nPatient: On my arm, for {i + 1} weeks.\nDoctor: Does it itch?\n'
        f'Patient: Yes.\nDoctor: It looks like eczema; use the cream twice a day.\nPatient: Thanks."\n' for i in range(4)))
    tested = cli.train("eval", "--model", out, "--logs", test_logs, "--limit", "2", "--out", tmp_path / "eval-test.json")
    assert "warm start: done already" in done.out
    result = json.loads((out / "eval.json").read_text())
    base_scores = {s["id"]: s["completion"] for s in result["scores"]["base"]}
    heldout = [json.loads(line) for line in lines(out / "heldout.jsonl")]
    assert len(heldout) == len(base_scores) == len(result["scores"]["trained"]) >= 3  # continue samples the stub gave no target drop
    assert len({s["session_id"] for s in heldout}) == 3  # a quarter of the 12 sessions
    comparison = {c["name"]: c for c in result["comparison"]}
    assert comparison["termination_accuracy"]["n"] == sum(s["decision"] == "stop" for s in heldout) == 3
    assert comparison["stop_discrimination"]["n"] == len(heldout)
    assert all(0.0 <= comparison["stop_discrimination"][side] <= 1.0 for side in ("base", "trained"))
    assert all(0.0 < s["p_stop"] < 1.0 for side in ("base", "trained") for s in result["scores"][side])
    assert all(html.escape(c) in (out / "eval.html").read_text() for c in base_scores.values())

    assert tested.code == 0, tested.out[-3000:] + tested.err[-3000:]
    test_result = json.loads((tmp_path / "eval-test.json").read_text())
    test_samples = [json.loads(line) for path in out.glob("eval-logs-*.jsonl") for line in lines(path)]
    assert {s["session_id"] for s in test_samples} == {"T0", "T1"}  # --limit 2: the first two sessions, and only them
    assert [s["id"] for s in test_result["scores"]["trained"]] == [s["id"] for s in test_samples if
                                                                   s["decision"] == "stop" or s["target_info"]]
    assert {c["name"]: c for c in test_result["comparison"]}["decision_accuracy"]["sessions"] == 2
    page = (tmp_path / "eval-test.html").read_text()
    shown = set(re.findall(r"<th scope='row'>([^<]+)", page)) & ({s["id"] for s in test_samples} | {s["id"] for s in heldout})
    assert shown == {s["id"] for s in test_result["scores"]["trained"]}  # the test file's samples, none of the held-out ones

    # the same --out with another stop rule: refused, since its samples and checkpoints are the old config's
    cfg.write_text(cfg.read_text().replace("stop_rule: advice", "stop_rule: end"))
    refused = cli.train("run", "--config", cfg)
    assert refused.code == 2 and "stop_rule differ" in refused.err
