"""`python -m train` end to end on this CPU with the embedded model as policy and as grader: the shipped calibrated
grader passes the gate by its quality waiver, the run takes R_format from the LM when the calibration says so on val,
logs every step, and eval writes base vs trained with the same reward. A run killed in each stage and resumed is
tests/test_train_pipeline.py (against the stub grader); the gate's refusals are tests/test_gate.py."""

import html
import json
from pathlib import Path

import pytest
import yaml

from calibrator.components.grader import choose_format_source
from calibrator.prompt import load_prompt, save_prompt
from support import ROOT
from support.training import copy_config, small_samples
from train.config import CONFIGS

pytestmark = pytest.mark.slow


def lm_formats_better_on_val(tmp_path: Path, cache: Path) -> Path:
    """The shipped calibrated grader, but its record says the LM's format answers beat the rule on val: the run
    and its eval must then take R_format from the LM (the gate reads only the test figures)."""
    shipped = load_prompt(ROOT / "prompts/grader.calibrated.yaml")
    val = shipped.calibration.val | {"format_n": 24, "format_accuracy": 1.0, "format_accuracy_ci": [0.9, 1.0],
                                     "format_rule_accuracy": 0.5, "format_rule_accuracy_ci": [0.3, 0.7]}
    path = tmp_path / "grader.yaml"
    save_prompt(shipped.model_copy(update={"calibration": shipped.calibration.model_copy(update={"val": val})}), path)
    shipped = yaml.safe_load((CONFIGS / "cpu-smoke.yaml").read_text())
    # half the completions a step (every one is a grader call on the embedded model), the shipped config otherwise
    grpo = shipped["grpo"] | {"per_device_train_batch_size": 2, "num_generations": 2}
    return copy_config("cpu-smoke.yaml", tmp_path, grader_prompt=str(path), cache_dir=str(cache), grpo=grpo)


def test_run_with_the_calibrated_grader_then_eval(tmp_path, cli, policy_cache):
    """The shipped cpu-smoke config (model: smollm2, found converted in the session's cache_dir), one smaller step."""
    samples, out = small_samples(tmp_path / "samples.jsonl"), tmp_path / "run"
    done = cli.train("run", "--config", lm_formats_better_on_val(tmp_path, policy_cache), "--samples", samples,
                     "--max-steps", "1", "--out", out, "--no-eval")
    assert done.code == 0, done.err[-3000:]
    record = json.loads((out / "run.json").read_text())
    assert record["resumed_from"] is None and record["steps"] == 1
    gate_checks = {c["check"]: c for c in record["gate"]["checks"]}  # cpu-smoke waives quality, never gold set or LM
    assert record["gate"]["overrides"] == ["allow_below_gate"] and gate_checks["heldout_qwk_ci_low"]["figure"] < 0.4
    assert gate_checks["goldset_version"]["passed"] and gate_checks["grader_lm"]["passed"]
    grader = load_prompt(ROOT / json.loads((out / "config.json").read_text())["grader_prompt"])
    assert record["format"] == choose_format_source(grader.calibration.val).model_dump()  # chosen on val, recorded
    assert record["format"]["source"] == "lm"
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1]
    for s in steps:
        assert {"reward", "reward_std", "zero_variance_groups", "completions/stop_share", "generation_seconds", "reward_seconds",
                "update_seconds"} <= set(s)
        assert 0.0 <= s["zero_variance_groups"] <= 1.0

    heldout = [json.loads(line) for line in (out / "heldout.jsonl").read_text().splitlines()]
    one_session = tmp_path / "one-session.jsonl"  # its continue samples and its stop: every metric, half the grader calls
    one_session.write_text("".join(json.dumps(s) + "\n" for s in heldout if s["session_id"] == heldout[0]["session_id"]))
    done = cli.train("eval", "--model", out, "--samples", one_session, "--max-new-tokens", "8", "--rollouts", "0")
    assert done.code == 0, done.err[-3000:]
    result = json.loads((out / "eval.json").read_text())
    for side in ("base", "trained"):
        assert {"good_question_rate", "mean_content", "termination_accuracy", "continue_accuracy", "decision_accuracy",
                "mean_format", "mean_reward", "n"} <= set(result[side])
    page = (out / "eval.html").read_text()
    assert page.startswith("<!doctype html>")
    for name in ("termination_accuracy", "decision_accuracy", "good_question_rate"):
        assert f"<th scope='row'>{name}" in page  # every metric's row, base beside trained
    for side in ("base", "trained"):
        assert len(result["scores"][side]) == result[side]["n"] > 0
        for score in result["scores"][side]:
            assert f"<th scope='row'>{html.escape(score['id'])}" in page and html.escape(score["completion"]) in page
    assert result["format"]["source"] == record["format"]["source"] == "lm"  # eval scores with the reward it trained on
    assert result["sampled"] is None and "The reference's evaluation" not in page  # --rollouts 0: greedy only
