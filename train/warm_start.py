"""The warm start: a few supervised steps (TRL's SFTTrainer) on the experts' own moves before GRPO, so the policy
has said `<stop />` at least sometimes and GRPO's groups on stop samples can differ in reward (see WarmStart).

Resumable like the GRPO stage: checkpoints in <out>/warm_start every few steps; a finished warm start
(<out>/warm_start/final) is reused as it is. Loss on the completion only: the prompt is the dialogue, not the policy's."""

from pathlib import Path

from train.config import TrainConfig
from calibrator.reward.terms import STOP_TAG


def supervised_args(config: TrainConfig, out: Path, steps: int, learning_rate: float, batch_size: int,
                    save_steps: int) -> dict:
    """The TRL arguments every supervised stage shares (the warm start, the SFT and DPO baselines): its own steps, rate
    and batch; the run's seed, device and the GRPO block's memory trade-off (gradient checkpointing)."""
    return dict(output_dir=str(out), max_steps=steps, learning_rate=learning_rate, per_device_train_batch_size=batch_size,
                logging_steps=5, save_steps=save_steps, save_total_limit=1, use_cpu=config.grpo.get("use_cpu", False),
                bf16=False, gradient_checkpointing=config.grpo.get("gradient_checkpointing", True), report_to="none",
                seed=config.seed, dataloader_num_workers=0,
                max_length=None)  # TRL cuts the end and drops a row left with no completion: a late stop sample
                                  # would vanish; the rows are GRPO's prompts, bounded by context_turns


def sft_args(config: TrainConfig, out: Path):
    """TRL's SFTConfig for the warm start."""
    from trl import SFTConfig

    s = config.warm_start
    return SFTConfig(**supervised_args(config, out, s.steps, s.learning_rate, s.batch_size, s.save_steps),
                     completion_only_loss=True)


def warm_start(config: TrainConfig, rows: list[dict], model_dir: Path) -> Path:
    """The warm-started model folder (built now, or found finished)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    from train.checkpoints import last_checkpoint

    out = config.out / "warm_start"
    final = out / "final"
    if (final / "config.json").is_file():
        print(f"warm start: done already, {final}")
        return final
    settings = config.warm_start
    args = sft_args(config, out)
    last = last_checkpoint(out) if out.is_dir() else None
    stops = sum(row["completion"][0]["content"] == STOP_TAG for row in rows)
    print(f"warm start: {settings.steps} supervised steps of {settings.batch_size} expert moves, from {len(rows)} rows ({stops} stop)"
          + (f", resuming from {last.name}" if last else ""))
    trainer = SFTTrainer(model=str(model_dir), args=args, train_dataset=Dataset.from_list(rows),
                         processing_class=AutoTokenizer.from_pretrained(model_dir))
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    partial = out / "final.partial"
    trainer.save_model(str(partial))  # every process takes part; only the main one writes
    if trainer.is_world_process_zero():
        trainer.processing_class.save_pretrained(str(partial))
        partial.rename(final)
    trainer.accelerator.wait_for_everyone()
    return final
