"""The trainer's gate (which grader may drive RL) and the rule that only the main process writes a run's files."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from calibrator.components.grader import GraderRow
from calibrator.gold.goldset import load_goldset
from calibrator.prompt import Calibration, load_prompt, save_prompt
from support.files import tiny_gguf, write_csv
from train.config import CONFIGS, TrainConfig, load_config
from calibrator.reward.gate import GateError
from train.gate import gate
from support import ROOT
from support.training import small_samples

GOLD_ROWS = [
    {"id": "a", "context": "patient: I have a cough.", "target_info": "duration: a week", "candidate": "How long have you had it?",
     "content_score": "1", "format_score": "1"},
    {"id": "b", "context": "patient: My back hurts.", "target_info": "location: lower back", "candidate": "Nice weather today?",
     "content_score": "0", "format_score": "1"},
    {"id": "c", "context": "patient: I feel sick.", "target_info": "trigger: after meals", "candidate": "What did you eat? Anything else?",
     "content_score": "0.5", "format_score": "0.5"},
]
GOOD_TEST = {"qwk": 0.7, "qwk_ci": [0.5, 0.85], "accuracy": 0.8, "n": 24}
RECALIBRATE = "`python -m calibrator run --component grader --lm local`"


@pytest.fixture
def goldset(tmp_path) -> Path:
    return write_csv(tmp_path / "gold.csv", GOLD_ROWS)


def grader_prompt(tmp_path: Path, goldset: Path, test: dict = GOOD_TEST, lm: str = "local", lm_weights: str | None = None) -> Path:
    """The baseline grader prompt with a calibration record made on `goldset` as it is now."""
    prompt = load_prompt(ROOT / "prompts/grader.yaml").model_copy(update={"calibration": Calibration(
        run_id="run-1", created="2026-11-24T00:00:00Z", optimizer="auto:knn", lm=lm, lm_weights=lm_weights, seed=0,
        goldset_path=str(goldset),
        goldset_sha256=load_goldset(goldset, GraderRow).sha256, val={"qwk": 0.7}, test=test, verdict="improved")})
    path = tmp_path / "grader.calibrated.yaml"
    save_prompt(prompt, path)
    return path


def relabel(goldset: Path) -> None:
    """The gold set moves on after the calibration: one label changes."""
    write_csv(goldset, [GOLD_ROWS[0] | {"content_score": "0.5"}, *GOLD_ROWS[1:]])


def checks(record: dict) -> dict[str, tuple]:
    return {c["check"]: (c["figure"], c["threshold"], c["passed"], c["overridden_by"]) for c in record["checks"]}


def test_a_grader_that_passes_every_check_is_accepted_and_each_check_is_recorded(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset)
    sha = load_goldset(goldset, GraderRow).sha256
    record = gate(TrainConfig(grader_prompt=path))
    assert record == {"grader_prompt": str(path), "calibrated": True, "calibration_run": "run-1", "overrides": [], "checks": [
        {"check": "heldout_qwk_ci_low", "figure": 0.5, "threshold": 0.4, "passed": True, "overridden_by": None},
        {"check": "heldout_rows", "figure": 24, "threshold": 20, "passed": True, "overridden_by": None},
        {"check": "goldset_version", "figure": sha, "threshold": sha, "passed": True, "overridden_by": None},
        {"check": "grader_lm", "figure": "local", "threshold": "local", "passed": True, "overridden_by": None}],
        "content_source": {"source": "lm", "reason": "no floor in the calibration record: the LM grades content",
                           "lm_val_qwk": None, "floor_val_qwk": None}}


def test_an_api_grader_passes_when_the_trainer_grades_with_the_same_lm(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset, lm="openai:gpt-4o-mini")
    record = gate(TrainConfig(grader_prompt=path, grader_lm=" openai:gpt-4o-mini "))
    assert checks(record)["grader_lm"] == ("openai:gpt-4o-mini", "openai:gpt-4o-mini", True, None)


def test_refuses_a_qwk_ci_whose_lower_bound_is_under_the_threshold(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset, test=GOOD_TEST | {"qwk": 0.6, "qwk_ci": [0.35, 0.8]})
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=path))
    assert str(refused.value) == (
        f"the grader prompt {path} does not pass the gate:\n"
        f"- held-out qwk 95% CI lower bound 0.35 is under min_grader_qwk 0.4 (qwk 0.60, CI [0.35, 0.80] on 24 rows): "
        f"re-calibrate with {RECALIBRATE} and a larger --budget, or on a stronger --lm and train with that --grader-lm, or add "
        f"gold rows to narrow the CI; or set allow_below_gate in the config to train with it anyway (recorded)")


def test_refuses_too_few_heldout_rows(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset, test=GOOD_TEST | {"n": 19})
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=path))
    assert str(refused.value) == (
        f"the grader prompt {path} does not pass the gate:\n"
        f"- the calibration was judged on 19 held-out rows, fewer than min_grader_heldout 20: add gold rows "
        f"(`python -m calibrator goldset add FILE --component grader`) and re-calibrate with {RECALIBRATE}, or set "
        f"allow_below_gate in the config to train with it anyway (recorded)")


def test_refuses_a_gold_set_that_changed_since_the_calibration(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset)
    recorded = load_goldset(goldset, GraderRow).sha256
    relabel(goldset)
    on_disk = load_goldset(goldset, GraderRow).sha256
    assert on_disk != recorded
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=path))
    assert str(refused.value) == (
        f"the grader prompt {path} does not pass the gate:\n"
        f"- the gold set {goldset} changed since the calibration (sha256 {on_disk[:12]} on disk, {recorded[:12]} recorded): "
        f"re-calibrate with {RECALIBRATE}, or pass --accept-newer-goldset to train with this calibration anyway (recorded)")


def test_refuses_a_gold_set_that_is_missing_or_invalid_even_when_a_newer_one_is_accepted(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset)
    goldset.write_text("id,context,target_info,content_score\na,patient: hi,duration: x,1\n")
    invalid = f"{goldset}, row 1, column 'candidate': required column is missing"
    refusal = f"the grader prompt {path} does not pass the gate:\n- the gold set {goldset} cannot be read ({{}}): restore it, or re-calibrate with {RECALIBRATE}"
    for config in (TrainConfig(grader_prompt=path), TrainConfig(grader_prompt=path, accept_newer_goldset=True, allow_below_gate=True)):
        with pytest.raises(GateError) as refused:
            gate(config)
        assert str(refused.value) == refusal.format(invalid)
    goldset.unlink()
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=path, accept_newer_goldset=True))
    assert str(refused.value) == refusal.format(f"{goldset}: no such file")


def test_refuses_a_grader_calibrated_on_another_lm(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset, lm="openai:gpt-4o-mini")
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=path))
    assert str(refused.value) == (
        f"the grader prompt {path} does not pass the gate:\n"
        f"- the prompt was calibrated on LM openai:gpt-4o-mini but the trainer grades with local: re-calibrate with "
        f"{RECALIBRATE}, or train with --grader-lm openai:gpt-4o-mini")


def test_a_local_gguf_grader_is_the_same_lm_by_its_file_contents_not_its_path(tmp_path, goldset):
    from calibrator.lm.local import file_fingerprint

    calibrated_on = tiny_gguf(tmp_path / "judge.gguf", "{{ messages }}")
    path = grader_prompt(tmp_path, goldset, lm=f"local:{calibrated_on}", lm_weights=file_fingerprint(calibrated_on))
    moved = calibrated_on.rename(tmp_path / "moved-judge.gguf")
    record = gate(TrainConfig(grader_prompt=path, grader_lm=f"local:{moved}"))
    assert checks(record)["grader_lm"] == (f"local:{calibrated_on}", f"local:{moved}", True, None)

    other = tiny_gguf(tmp_path / "judge.gguf", "{{ massages }}")  # another model under the calibrated file's name
    assert other.stat().st_size == moved.stat().st_size  # the same size: only the contents tell them apart
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=path, grader_lm=f"local:{calibrated_on}"))
    assert ("no longer the one calibrated on" in str(refused.value)
            and f"train with --grader-lm local:{calibrated_on}" in str(refused.value))


def test_every_failed_check_is_listed_on_its_own_line(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset, test={"qwk": 0.0, "qwk_ci": [-0.38, 0.4], "accuracy": 0.33, "n": 9}, lm="anthropic:claude-x")
    recorded = load_goldset(goldset, GraderRow).sha256
    relabel(goldset)
    on_disk = load_goldset(goldset, GraderRow).sha256
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=path))
    assert str(refused.value).splitlines() == [
        f"the grader prompt {path} does not pass the gate:",
        f"- held-out qwk 95% CI lower bound -0.38 is under min_grader_qwk 0.4 (qwk 0.00, CI [-0.38, 0.40] on 9 rows): "
        f"re-calibrate with {RECALIBRATE} and a larger --budget, or on a stronger --lm and train with that --grader-lm, or add "
        f"gold rows to narrow the CI; or set allow_below_gate in the config to train with it anyway (recorded)",
        f"- the calibration was judged on 9 held-out rows, fewer than min_grader_heldout 20: add gold rows "
        f"(`python -m calibrator goldset add FILE --component grader`) and re-calibrate with {RECALIBRATE}, or set "
        f"allow_below_gate in the config to train with it anyway (recorded)",
        f"- the gold set {goldset} changed since the calibration (sha256 {on_disk[:12]} on disk, {recorded[:12]} recorded): "
        f"re-calibrate with {RECALIBRATE}, or pass --accept-newer-goldset to train with this calibration anyway (recorded)",
        f"- the prompt was calibrated on LM anthropic:claude-x but the trainer grades with local: re-calibrate with "
        f"{RECALIBRATE}, or train with --grader-lm anthropic:claude-x"]


def test_a_record_without_qwk_figures_fails_the_quality_checks(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset, test={"accuracy": 0.5})
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=path))
    lines = str(refused.value).splitlines()
    assert lines[1].startswith("- held-out qwk 95% CI lower bound none recorded is under min_grader_qwk 0.4 "
                               "(qwk none recorded, CI [none recorded, none recorded] on an unrecorded number of rows)")
    assert lines[2].startswith("- the calibration was judged on an unrecorded number of held-out rows")
    assert len(lines) == 3


def test_allow_below_gate_relaxes_quality_only_never_gold_set_or_lm(tmp_path, goldset):
    weak = {"qwk": 0.0, "qwk_ci": [-0.38, 0.4], "accuracy": 0.33, "n": 9}
    record = gate(TrainConfig(grader_prompt=grader_prompt(tmp_path, goldset, test=weak), allow_below_gate=True))
    assert record["overrides"] == ["allow_below_gate"]
    assert checks(record)["heldout_qwk_ci_low"] == (-0.38, 0.4, False, "allow_below_gate")
    assert checks(record)["heldout_rows"] == (9, 20, False, "allow_below_gate")
    assert checks(record)["goldset_version"][2:] == (True, None) and checks(record)["grader_lm"][2:] == (True, None)

    other_lm = grader_prompt(tmp_path, goldset, test=weak, lm="openai:gpt-4o-mini")
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=other_lm, allow_below_gate=True))
    assert str(refused.value).splitlines()[1:] == [
        f"- the prompt was calibrated on LM openai:gpt-4o-mini but the trainer grades with local: re-calibrate with "
        f"{RECALIBRATE}, or train with --grader-lm openai:gpt-4o-mini"]

    path = grader_prompt(tmp_path, goldset, test=weak)
    recorded = load_goldset(goldset, GraderRow).sha256
    relabel(goldset)
    with pytest.raises(GateError) as refused:
        gate(TrainConfig(grader_prompt=path, allow_below_gate=True))
    assert str(refused.value).splitlines()[1:] == [
        f"- the gold set {goldset} changed since the calibration (sha256 {load_goldset(goldset, GraderRow).sha256[:12]} on disk, "
        f"{recorded[:12]} recorded): re-calibrate with {RECALIBRATE}, or pass --accept-newer-goldset to train with this "
        f"calibration anyway (recorded)"]


def test_accept_newer_goldset_lets_a_changed_gold_set_through_and_records_it(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset)
    recorded = load_goldset(goldset, GraderRow).sha256
    relabel(goldset)
    record = gate(TrainConfig(grader_prompt=path, accept_newer_goldset=True))
    assert record["overrides"] == ["accept_newer_goldset"]
    assert checks(record)["goldset_version"] == (load_goldset(goldset, GraderRow).sha256, recorded, False, "accept_newer_goldset")
    assert all(passed for name, (_, _, passed, _) in checks(record).items() if name != "goldset_version")


def test_a_grader_without_calibration_record_needs_allow_uncalibrated(tmp_path):
    path = ROOT / "prompts/grader.yaml"
    expected = (f"the grader prompt {path} has no calibration record: calibrate it with {RECALIBRATE}, "
                f"or pass --allow-uncalibrated to train with it anyway (recorded)")
    for config in (TrainConfig(grader_prompt=path), TrainConfig(grader_prompt=path, allow_below_gate=True, accept_newer_goldset=True)):
        with pytest.raises(GateError) as refused:
            gate(config)
        assert str(refused.value) == expected
    assert gate(TrainConfig(grader_prompt=path, allow_uncalibrated=True)) == {
        "grader_prompt": str(path), "calibrated": False, "calibration_run": None, "checks": [], "overrides": ["allow_uncalibrated"],
        "content_source": None}


def test_train_run_refuses_an_uncalibrated_grader_before_anything_is_written(tmp_path, cli):
    config = tmp_path / "c.yaml"
    smoke = (CONFIGS / "cpu-smoke.yaml").read_text()  # allows a calibrated grader below the gate, not this
    config.write_text(smoke.replace("out: runs/grpo", f"out: {tmp_path / 'out'}") + f"grader_prompt: {ROOT / 'prompts/grader.yaml'}\n")
    done = cli.train("run", "--config", config)
    assert done.code == 2
    assert done.err.strip().splitlines()[-1].endswith(f"the grader prompt {ROOT / 'prompts/grader.yaml'} has no calibration record: "
                                                      f"calibrate it with {RECALIBRATE}, or pass --allow-uncalibrated to train "
                                                      f"with it anyway (recorded)")
    assert not (tmp_path / "out").exists()


def test_allow_uncalibrated_overrides_every_failed_check_and_says_so(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset, test={"qwk": 0.1, "qwk_ci": [0.0, 0.3], "n": 5}, lm="openai:gpt-4o-mini")
    relabel(goldset)
    record = gate(TrainConfig(grader_prompt=path, allow_uncalibrated=True))
    assert record["overrides"] == ["allow_uncalibrated"]
    assert [(c["passed"], c["overridden_by"]) for c in record["checks"]] == [(False, "allow_uncalibrated")] * 4


def test_the_shipped_grader_passes_the_cpu_smoke_gate_only_by_its_quality_waiver(monkeypatch):
    """`python -m train run` with no flags must start: the shipped calibrated prompt matches the shipped gold set and LM."""
    monkeypatch.chdir(ROOT)
    config = load_config(CONFIGS / "cpu-smoke.yaml")
    record = gate(config)
    assert record["overrides"] == ["allow_below_gate"]
    assert checks(record)["goldset_version"][2] is True and checks(record)["grader_lm"][2:] == (True, None)
    assert checks(record)["heldout_qwk_ci_low"][2:] == (False, "allow_below_gate")
    with pytest.raises(GateError, match="CI lower bound"):
        gate(config.model_copy(update={"allow_below_gate": False}))


def state(world_zero: bool, step: int = 1):
    from transformers import TrainerState

    return TrainerState(is_world_process_zero=world_zero, global_step=step)


@pytest.mark.slow  # imports the trainer's module, whose GRPOTrainer alone costs ~5 s of imports
def test_step_log_writes_and_trims_metrics_from_process_zero_only(tmp_path):
    from train.trainer import StepLog

    path = tmp_path / "metrics.jsonl"
    kept = json.dumps({"step": 1, "reward": 1.0}) + "\n" + json.dumps({"step": 2, "reward": 2.0}) + "\n"
    path.write_text(kept)
    reward = SimpleNamespace(failures=0, seconds=0.0)

    other = StepLog(path, reward, resumed_step=1)
    other.on_train_begin(None, state(False), None)
    other.on_log(None, state(False, 2), None, logs={"reward": 3.0})
    assert path.read_text() == kept

    main = StepLog(path, reward, resumed_step=1)
    main.on_train_begin(None, state(True), None)
    main.on_log(None, state(True, 2), None, logs={"reward": 3.0})
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"step": 1, "reward": 1.0}, {"step": 2, "reward": 3.0, "grader_failures_total": 0}]


@pytest.mark.slow  # imports the trainer's module (GRPOTrainer) to replace its training loop
@pytest.mark.parametrize("rank, written", [("1", set()), ("0", {"config.json", "heldout.jsonl", "run.json"})])
def test_train_run_writes_its_files_from_rank_zero_only(tmp_path, monkeypatch, rank, written):
    """Under accelerate/torchrun every rank runs `train run`; the model, LM and GRPO loop are stubbed here."""
    import train.__main__ as cli
    from train import model, trainer

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setattr(model, "ensure_model", lambda name, cache_dir: tmp_path / "model")
    monkeypatch.setattr(cli, "_grader", lambda config, stack: (SimpleNamespace(usage=lambda: SimpleNamespace(model_dump=dict), concurrency=1), None))
    monkeypatch.setattr(trainer, "train", lambda config, rows, model_dir, reward, args: {"resumed_from": None, "steps": 0, "grader_failures": 0})
    out = tmp_path / "run"
    code = cli.main(["run", "--samples", str(small_samples(tmp_path / "samples.jsonl")), "--out", str(out), "--allow-uncalibrated",
                     "--no-eval",
                     "--config", str(CONFIGS / "cpu-smoke.yaml")])
    assert code == 0
    assert {p.name for p in out.iterdir()} == written


def test_a_grader_exactly_at_both_thresholds_is_accepted(tmp_path, goldset):
    path = grader_prompt(tmp_path, goldset, test={"qwk": 0.6, "qwk_ci": [0.4, 0.8], "accuracy": 0.7, "n": 20})
    found = checks(gate(TrainConfig(grader_prompt=path)))
    assert found["heldout_qwk_ci_low"] == (0.4, 0.4, True, None)
    assert found["heldout_rows"] == (20, 20, True, None)
