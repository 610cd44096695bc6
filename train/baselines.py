"""The paper's comparison rows, trained through TRL on the same samples, split and policy prompt as GRPO, then
evaluated by the same `train eval`: supervised fine-tuning on the experts' moves (`method: sft`), and direct preference
optimisation (`method: dpo`) of the expert's move over a lower-reward answer the starting policy sampled.

Both resume like the other stages (checkpoints in <out>/<method>; a finished model in <out>/final is reused), and
DPO's pairs are written once to <out>/dpo_pairs.jsonl (the policy's samples cached as they are drawn), so a killed
run draws and grades nothing twice."""

import json
from pathlib import Path
from typing import Any

from calibrator.expert_logs.logs import render
from calibrator.prompt import write_atomic_lines
from calibrator.expert_logs.samples_file import TrainingSample
from train.config import TrainConfig
from train.data import expert_move, policy_messages, rebalance
from calibrator.reward.functions import RewardFunction
from train.warm_start import supervised_args


def dpo_pairs(config: TrainConfig, samples: list[TrainingSample], start: Path, instructions: str,
              reward: RewardFunction) -> tuple[list[dict], dict[str, int]]:
    """One pair per prompt where the policy did worse than the expert: chosen = the expert's move, rejected = the
    lowest-reward of `samples_per_prompt` answers the starting policy (the base) sampled (temperature 1.0), both scored
    by the run's own reward. Prompts are drawn as GRPO draws its rows (the config's stop_share), as many as training
    reads; a prompt on which the grader failed is left out rather than given a preference the failure made."""
    from train.evaluate import Sampling, generate_sampled

    settings = config.dpo
    shown = [s for s in rebalance(samples, config.stop_share, config.seed) if expert_move(s) is not None]
    wanted = settings.steps * settings.batch_size
    prompts = (shown * (wanted // len(shown) + 1))[:wanted] if shown else []
    unique = list({s.id: s for s in prompts}.values())  # a repeated prompt is sampled and graded once
    sampling = Sampling(rollouts=settings.samples_per_prompt, seed=config.seed, repetition_penalty=1.0)
    drawn = generate_sampled(start, unique, instructions, int(config.grpo.get("max_completion_length", 32)), sampling,
                             cache=config.out / "dpo_samples.jsonl", context_turns=config.context_turns)
    counts = {"prompts": len(unique), "kept": 0, "no_worse_sample": 0, "grader_failed": 0}
    pair_of: dict[str, dict] = {}
    for sample, answers in zip(unique, drawn):
        moves = [expert_move(sample), *answers]
        n = len(moves)
        scores = reward(prompts=[None] * n, completions=moves, context=[render(sample.context)] * n,
                        target_info=["; ".join(sample.target_info)] * n, decision=[sample.decision] * n)
        if any(t.grader_failed for t in reward.last):  # a failed grade scores 0: it would make a false preference
            counts["grader_failed"] += 1
            continue
        worst = min(range(1, n), key=lambda i: scores[i])
        if scores[worst] >= scores[0]:
            counts["no_worse_sample"] += 1
            continue
        counts["kept"] += 1
        pair_of[sample.id] = {"prompt": policy_messages(sample.context, instructions, config.context_turns),
                              "chosen": [{"role": "assistant", "content": moves[0]}],
                              "rejected": [{"role": "assistant", "content": moves[worst]}],
                              "id": sample.id, "chosen_reward": scores[0], "rejected_reward": scores[worst]}
    return [pair_of[s.id] for s in prompts if s.id in pair_of], counts  # repeated as drawn: the stop share holds


def train_baseline(config: TrainConfig, method: str, rows: list[dict], start: Path) -> dict[str, Any]:
    """SFT on prompt-completion `rows`, or DPO on prompt-chosen-rejected `rows`, from `start`; the model in <out>/final."""
    from datasets import Dataset
    from transformers import AutoTokenizer

    from train.checkpoints import last_checkpoint

    out = config.out / method
    last = last_checkpoint(out) if out.is_dir() else None
    tokenizer = AutoTokenizer.from_pretrained(start)
    if method == "sft":
        from trl import SFTConfig, SFTTrainer

        s = config.sft
        args = SFTConfig(**supervised_args(config, out, s.steps, s.learning_rate, s.batch_size, s.save_steps), completion_only_loss=True)
        trainer = SFTTrainer(model=str(start), args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    else:
        from trl import DPOConfig, DPOTrainer

        d = config.dpo
        args = DPOConfig(**supervised_args(config, out, d.steps, d.learning_rate, d.batch_size, d.save_steps), beta=d.beta)
        columns = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows]
        trainer = DPOTrainer(model=str(start), args=args, train_dataset=Dataset.from_list(columns), processing_class=tokenizer)
    print(f"{method}: {args.max_steps} steps of {args.per_device_train_batch_size} from {len(rows)} rows"
          + (f", resuming from {last.name}" if last else ""))
    trainer.train(resume_from_checkpoint=str(last) if last else None)
    trainer.save_model(str(config.out / "final"))  # with its tokenizer, as GRPO's final model is saved
    return {"method": method, "resumed_from": str(last) if last else None, "steps": trainer.state.global_step,
            "rows": len(rows)}


def write_pairs(path: Path, pairs: list[dict]) -> None:
    write_atomic_lines(path, (json.dumps(p, ensure_ascii=False) + "\n" for p in pairs))


def read_pairs(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
