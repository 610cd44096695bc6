"""`python -m train run`: GRPO with TRL's GRPOTrainer; this file only wires data, reward, gate and logging.

Resumable: checkpoints go to --out every `save_steps`; started again with the same --out, training
continues from the last one (metrics.jsonl keeps the steps up to it). The run refuses a grader
prompt without a calibration record, or one whose record does not pass the gate (see `gate`), unless told
otherwise, and records which it was. Under accelerate/torchrun every process runs this code; only the
main one writes the run's files.
"""

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from calibrator.components.grader import choose_content_source
from calibrator.lm.spec import LMSpec, LMSpecError
from calibrator.prompt import load_prompt, write_atomic
from train.config import TrainConfig, grpo_config
from train.rewards import CalibratedReward


class GateError(Exception):
    pass


class GateCheck(BaseModel):
    """One condition of the gate as run.json records it: the calibration's figure against what the gate requires."""

    check: Literal["heldout_qwk_ci_low", "heldout_rows", "goldset_version", "grader_lm"]
    figure: float | int | str | None
    threshold: float | int | str
    passed: bool
    overridden_by: Literal["allow_below_gate", "accept_newer_goldset", "allow_uncalibrated"] | None = None


class GateRecord(BaseModel):
    """What the gate saw and let through; a refusal raises GateError instead."""

    grader_prompt: str
    calibrated: bool
    calibration_run: str | None = None
    checks: list[GateCheck] = []
    overrides: list[str] = []  # the config switches that let a failed check through
    content_source: dict[str, Any] | None = None  # calibrator.components.grader.ContentSource: the judge these checks are of


def _figure(value: Any) -> str:
    return "none recorded" if value is None else f"{value:.2f}"


def _goldset_sha256(path: Path) -> tuple[str | None, str | None]:
    """The sha256 of the gold set on disk now, or why it cannot be read."""
    from calibrator.components.grader import GraderRow
    from calibrator.goldset import GoldSetError, load_goldset

    try:
        return load_goldset(path, GraderRow).sha256, None
    except GoldSetError as e:
        extra = f" (and {len(e.problems) - 1} more problems)" if len(e.problems) > 1 else ""
        return None, f"{e.problems[0]}{extra}"


def gate(config: TrainConfig) -> dict[str, Any]:
    """Whether the grader may drive RL. Its calibration record must show held-out agreement whose CI clears
    min_grader_qwk on enough rows, measured on the gold set that is on disk now and with the LM the trainer will
    grade with: a figure measured on other labels or another LM says nothing about the reward this run gets."""
    try:
        grader_lm = str(LMSpec.parse(config.grader_lm))
    except LMSpecError as e:
        raise GateError(f"grader_lm: {e}") from None
    prompt = load_prompt(config.grader_prompt)
    if (prompt.target_scope or "next") != config.target_scope:
        raise GateError(f"the grader prompt {config.grader_prompt} grades against target_scope "
                        f"{prompt.target_scope or 'next'}, but the run's targets are target_scope {config.target_scope}: "
                        f"set grader_prompt to a grader prompt for {config.target_scope} targets (e.g. "
                        f"prompts/grader.{config.target_scope}.yaml), or target_scope: {prompt.target_scope or 'next'}")
    recalibrate = f"`python -m calibrator run --component grader --lm {grader_lm}`"
    calibration = prompt.calibration
    if calibration is None:
        if not config.allow_uncalibrated:
            raise GateError(f"the grader prompt {config.grader_prompt} has no calibration record: calibrate it with {recalibrate}, "
                            f"or pass --allow-uncalibrated to train with it anyway (recorded)")
        return GateRecord(grader_prompt=str(config.grader_prompt), calibrated=False,
                          overrides=["allow_uncalibrated"]).model_dump()

    source = choose_content_source(calibration)
    floor = source.source != "lm"
    test = (calibration.floors[source.source].get("test") or {}) if floor else calibration.test
    qwk, ci, n = test.get("qwk"), test.get("qwk_ci") or [None, None], test.get("n")
    ci_low, rows = ci[0], "an unrecorded number of" if n is None else n
    disk_sha, unreadable = _goldset_sha256(Path(calibration.goldset_path))
    checks = [
        GateCheck(check="heldout_qwk_ci_low", figure=ci_low, threshold=config.min_grader_qwk,
                  passed=ci_low is not None and ci_low >= config.min_grader_qwk),
        GateCheck(check="heldout_rows", figure=n, threshold=config.min_grader_heldout, passed=n is not None and n >= config.min_grader_heldout),
        GateCheck(check="goldset_version", figure=disk_sha, threshold=calibration.goldset_sha256, passed=disk_sha == calibration.goldset_sha256),
        GateCheck(check="grader_lm", figure=f"none: floor {source.source}" if floor else calibration.lm, threshold=grader_lm,
                  passed=floor or calibration.lm == grader_lm),
    ]
    relaxed_by = {"heldout_qwk_ci_low": "allow_below_gate" if config.allow_below_gate else None,
                  "heldout_rows": "allow_below_gate" if config.allow_below_gate else None,
                  "goldset_version": "accept_newer_goldset" if config.accept_newer_goldset and disk_sha else None,
                  "grader_lm": None}
    reasons = {
        "heldout_qwk_ci_low": (
            (f"the content judge chosen on val is the model-free floor {source.source} ({source.reason}); its " if floor else "")
            + f"held-out qwk 95% CI lower bound {_figure(ci_low)} is under min_grader_qwk {config.min_grader_qwk} "
            f"(qwk {_figure(qwk)}, CI [{_figure(ci[0])}, {_figure(ci[1])}] on {rows} rows): re-calibrate with {recalibrate} and a "
            f"larger --budget, or on a stronger --lm and train with that --grader-lm, or add gold rows to narrow the CI; or set "
            f"allow_below_gate in the config to train with it anyway (recorded)"),
        "heldout_rows": (
            f"the calibration was judged on {rows} held-out rows, fewer than min_grader_heldout {config.min_grader_heldout}: add gold "
            f"rows (`python -m calibrator goldset add FILE --component grader`) and re-calibrate with {recalibrate}, or set "
            f"allow_below_gate in the config to train with it anyway (recorded)"),
        "goldset_version": (
            f"the gold set {calibration.goldset_path} cannot be read ({unreadable}): restore it, or re-calibrate with {recalibrate}"
            if unreadable else
            f"the gold set {calibration.goldset_path} changed since the calibration (sha256 {disk_sha[:12]} on disk, "
            f"{calibration.goldset_sha256[:12]} recorded): re-calibrate with {recalibrate}, or pass --accept-newer-goldset to "
            f"train with this calibration anyway (recorded)"),
        "grader_lm": (
            f"the prompt was calibrated on LM {calibration.lm} but the trainer grades with {grader_lm}: re-calibrate with "
            f"{recalibrate}, or train with --grader-lm {calibration.lm}"),
    }
    failed = []
    for check in checks:
        if check.passed:
            continue
        check.overridden_by = relaxed_by[check.check] or ("allow_uncalibrated" if config.allow_uncalibrated else None)
        if check.overridden_by is None:
            failed.append(reasons[check.check])
    if failed:
        raise GateError(f"the grader prompt {config.grader_prompt} does not pass the gate:\n" + "\n".join(f"- {r}" for r in failed))
    overrides = sorted({c.overridden_by for c in checks if c.overridden_by})
    return GateRecord(grader_prompt=str(config.grader_prompt), calibrated=True, calibration_run=calibration.run_id,
                      checks=checks, overrides=overrides, content_source=source.model_dump()).model_dump()


class TimedGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that keeps how long generation took, for the step-time split."""

    generation_seconds = 0.0

    def _generate(self, prompts: list) -> Any:
        started = time.perf_counter()
        try:
            return super()._generate(prompts)
        finally:
            self.generation_seconds += time.perf_counter() - started


def is_main_process() -> bool:
    """accelerate and torchrun start one process per device, each running `python -m train run` with its RANK;
    only rank 0 writes the run's files, so they are neither duplicated nor torn by concurrent writers."""
    return int(os.environ.get("RANK", "0")) == 0


def write_from_main(path: Path, text: str) -> None:
    """write_atomic in the main process; nothing elsewhere."""
    if is_main_process():
        write_atomic(path, text)


class StepLog(TrainerCallback):
    """One JSON line per logged step: TRL's reward statistics and terms, plus generation / reward / update seconds.
    Only the world's process zero touches the file."""

    def __init__(self, path: Path, reward: CalibratedReward, resumed_step: int):
        self.path, self.reward, self.resumed_step = path, reward, resumed_step
        self.trainer: TimedGRPOTrainer | None = None
        self._start = self._gen = self._reward = 0.0
        self.last_split: dict[str, float] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and self.path.exists():  # keep what the checkpoint we resume from had already seen
            kept = [line for line in self.path.read_text().splitlines() if line and json.loads(line)["step"] <= self.resumed_step]
            write_atomic(self.path, "".join(line + "\n" for line in kept))

    def on_step_begin(self, args, state, control, **kwargs):
        self._start, self._gen, self._reward = time.perf_counter(), self.trainer.generation_seconds, self.reward.seconds

    def on_step_end(self, args, state, control, **kwargs):
        total = time.perf_counter() - self._start
        generation = self.trainer.generation_seconds - self._gen
        reward = self.reward.seconds - self._reward
        self.last_split = {"step_seconds": round(total, 3), "generation_seconds": round(generation, 3),
                           "reward_seconds": round(reward, 3), "update_seconds": round(max(0.0, total - generation - reward), 3)}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs or "reward" not in logs:
            return
        # TRL's frac_reward_zero_std, under the name the README uses: groups whose completions all got the same reward
        # give no gradient, so this is the share of the step's prompts that taught nothing.
        zero = {"zero_variance_groups": logs["frac_reward_zero_std"]} if "frac_reward_zero_std" in logs else {}
        line = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}, **zero, **self.last_split,
                "grader_failures_total": self.reward.failures}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")


def last_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint that was completely written. One cut short by a kill (no trainer_state.json)
    is removed, so training resumes from the one before it and later saves are not confused by it."""
    found = sorted((p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()), key=lambda p: int(p.name.split("-")[-1]))
    for candidate in reversed(found):
        if (candidate / "trainer_state.json").is_file():
            return candidate
        shutil.rmtree(candidate, ignore_errors=True)
    return None


def train(config: TrainConfig, rows: list[dict], model_dir: Path, reward: CalibratedReward,
          args: GRPOConfig | None = None) -> dict[str, Any]:
    """args: the GRPOConfig `grpo_config(config)` built (the CLI builds it first, to refuse a bad grpo block early)."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    out = config.out
    last = last_checkpoint(out) if out.is_dir() else None
    resumed_step = int(last.name.split("-")[-1]) if last else 0
    args = args if args is not None else grpo_config(config)
    log = StepLog(out / "metrics.jsonl", reward, resumed_step)
    trainer = TimedGRPOTrainer(model=str(model_dir), reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[log])
    log.trainer = trainer
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    trainer.save_model(str(out / "final"))
    return {"resumed_from": str(last) if last else None, "steps": trainer.state.global_step, "grader_failures": reward.failures}
