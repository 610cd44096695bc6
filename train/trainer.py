"""`python -m train run`: GRPO with TRL's GRPOTrainer; this file only wires data, reward, gate and logging.

Resumable: checkpoints go to --out every `save_steps`; started again with the same --out, training
continues from the last one (metrics.jsonl keeps the steps up to it). The run refuses a grader
prompt without a calibration record, or one whose held-out agreement is under the gate, unless told
otherwise, and records which it was.
"""

import json
import time
from pathlib import Path
from typing import Any

import shutil

from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from calibrator.prompt import load_prompt, write_atomic
from train.config import TrainConfig
from train.rewards import CalibratedReward


class GateError(Exception):
    pass


def gate(config: TrainConfig) -> dict[str, Any]:
    """Whether the grader may drive RL: its calibration record and held-out qwk against the threshold."""
    prompt = load_prompt(config.grader_prompt)
    how = (f"calibrate it with `python -m calibrator run --component grader` (ideally with a stronger --lm), "
           f"or pass --allow-uncalibrated to train with it anyway")
    if prompt.calibration is None:
        if not config.allow_uncalibrated:
            raise GateError(f"the grader prompt {config.grader_prompt} has no calibration record: {how}")
        return {"grader_prompt": str(config.grader_prompt), "calibrated": False, "allowed_uncalibrated": True}
    qwk = prompt.calibration.test.get("qwk")
    record = {"grader_prompt": str(config.grader_prompt), "calibrated": True, "test_qwk": qwk,
              "threshold": config.min_grader_qwk, "calibration_run": prompt.calibration.run_id}
    if qwk is None or qwk < config.min_grader_qwk:
        if not (config.allow_uncalibrated or config.allow_below_gate):
            raise GateError(f"the grader prompt {config.grader_prompt} agrees with humans at qwk {qwk} on held-out data, "
                            f"below the gate's {config.min_grader_qwk}: {how} (or set allow_below_gate in the config)")
        record["allowed_below_gate"] = True
    return record


class TimedGRPOTrainer(GRPOTrainer):
    """GRPOTrainer that keeps how long generation took, for the step-time split."""

    generation_seconds = 0.0

    def _generate(self, prompts: list) -> Any:
        started = time.perf_counter()
        try:
            return super()._generate(prompts)
        finally:
            self.generation_seconds += time.perf_counter() - started


class StepLog(TrainerCallback):
    """One JSON line per logged step: TRL's reward statistics and terms, plus generation / reward / update seconds."""

    def __init__(self, path: Path, reward: CalibratedReward, resumed_step: int):
        self.path, self.reward = path, reward
        self.trainer: TimedGRPOTrainer | None = None
        if path.exists():  # keep what the checkpoint we resume from had already seen
            kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= resumed_step]
            write_atomic(path, "".join(line + "\n" for line in kept))
        self._start = self._gen = self._reward = 0.0
        self.last_split: dict[str, float] = {}

    def on_step_begin(self, args, state, control, **kwargs):
        self._start, self._gen, self._reward = time.perf_counter(), self.trainer.generation_seconds, self.reward.seconds

    def on_step_end(self, args, state, control, **kwargs):
        total = time.perf_counter() - self._start
        generation = self.trainer.generation_seconds - self._gen
        reward = self.reward.seconds - self._reward
        self.last_split = {"step_seconds": round(total, 3), "generation_seconds": round(generation, 3),
                           "reward_seconds": round(reward, 3), "update_seconds": round(max(0.0, total - generation - reward), 3)}

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or "reward" not in logs:
            return
        line = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}, **self.last_split,
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


def train(config: TrainConfig, rows: list[dict], model_dir: Path, reward: CalibratedReward) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import AutoTokenizer

    out = config.out
    last = last_checkpoint(out) if out.is_dir() else None
    resumed_step = int(last.name.split("-")[-1]) if last else 0
    args = GRPOConfig(output_dir=str(out), seed=config.seed, **config.grpo)
    log = StepLog(out / "metrics.jsonl", reward, resumed_step)
    trainer = TimedGRPOTrainer(model=str(model_dir), reward_funcs=[reward], args=args, train_dataset=Dataset.from_list(rows),
                               processing_class=AutoTokenizer.from_pretrained(model_dir), callbacks=[log])
    log.trainer = trainer
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    trainer.save_model(str(out / "final"))
    return {"resumed_from": str(last) if last else None, "steps": trainer.state.global_step, "grader_failures": reward.failures}
