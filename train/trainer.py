"""`python -m train run`: GRPO with TRL's GRPOTrainer; this file only wires data, reward and logging.

Resumable: checkpoints go to --out every `save_steps`; started again with the same --out, training
continues from the last one (metrics.jsonl keeps the steps up to it). The run refuses a grader
prompt without a calibration record, or one whose record does not pass the gate (train/gate.py), unless told
otherwise, and records which it was. Under accelerate/torchrun every process runs this code; only the
main one writes the run's files.
"""

import json
import time
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from calibrator.prompt import write_atomic
from calibrator.reward.functions import RewardFunction
from train.checkpoints import last_checkpoint
from train.config import TrainConfig, grpo_config


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
    """One JSON line per logged step: TRL's reward statistics and terms, plus generation / reward / update seconds.
    Only the world's process zero touches the file."""

    def __init__(self, path: Path, reward: RewardFunction, resumed_step: int):
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


def train(config: TrainConfig, rows: list[dict], model_dir: Path, reward: RewardFunction,
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
