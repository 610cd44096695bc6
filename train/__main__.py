"""`python -m train run|eval|validate|launch`: GRPO on the Learn-to-Ask reward with the calibrated grader, then base
vs trained; a config checked whole against TRL, and started on a cluster through accelerate."""

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from train.config import CONFIGS, ConfigError, TrainConfig, load_config

if TYPE_CHECKING:
    from calibrator.expert_logs.samples_file import TrainingSample
    from train.evaluate import Sampling

EPILOG = """\
examples:
  python -m train run                                   # train/configs/cpu-smoke.yaml: a few steps on this CPU
  python -m train eval --model runs/grpo                # base vs trained on the held-out samples
  python -m train run --samples samples.jsonl --grader-lm openai:gpt-4o-mini --fusion sum --max-steps 200 --out runs/x
  python -m train validate --config train/configs/multi-gpu.yaml   # every grpo key checked by TRL's GRPOConfig
  python -m train launch --config train/configs/multi-gpu.yaml     # accelerate launch with the config's launcher block
  python -m train launch --config train/configs/multi-gpu.yaml --print   # only print that command
"""


def _parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="python -m train", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="{run,eval,validate,launch}")
    run = commands.add_parser("run", help="train a policy with GRPO (resumes from the last checkpoint in --out)", epilog=EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("--config", type=Path, default=CONFIGS / "cpu-smoke.yaml", help="YAML config (default: train/configs/cpu-smoke.yaml)")
    run.add_argument("--model", help="Hugging Face model folder (default: the embedded SmolLM2, converted once)")
    source = run.add_mutually_exclusive_group()
    source.add_argument("--samples", type=Path, help="samples from `python -m calibrator extract`, or the Learn-to-Ask "
                        "reference's processed samples (cid, messages, remaining_chat, decision_truth, info_truth) as they "
                        "are; refused when a manifest beside it names another stop rule than the config's stop_rule")
    source.add_argument("--logs", type=Path, help="expert logs: a PriMock57 folder, an MTS-Dialog CSV, a ReMeDi file, or "
                        "RealMedConv/transcript JSONL/CSV; segmented at the config's stop_rule, targets extracted with the "
                        "calibrated extractor")
    run.add_argument("--grader-lm", metavar="SPEC", help="LM behind the grader (default: local)")
    run.add_argument("--fusion", choices=("default", "sum", "content", "stop"), help="how reward terms combine (default: default)")
    run.add_argument("--method", choices=("grpo", "sft", "dpo"), help="what trains the policy: GRPO on the reward "
                     "(default), or one of the paper's baselines on the same samples: sft (the experts' moves) or dpo (the "
                     "expert's move over a lower-reward sample of the policy); use its own --out")
    run.add_argument("--max-steps", type=int, help="GRPO steps")
    run.add_argument("--concurrency", type=int, metavar="N", help="grader LM calls at once (default: the config's concurrency, else 16 for an API grader, 1 for the embedded one)")
    run.add_argument("--out", type=Path, help="checkpoints, metrics.jsonl, run.json, eval.json/html (default: runs/grpo)")
    run.add_argument("--limit", type=int, metavar="N", help="read only the first N sessions of --logs")
    run.add_argument("--no-eval", action="store_true", help="stop after training (run `python -m train eval` later)")
    run.add_argument("--accept-newer-goldset", action="store_true", default=None,
                     help="accept a grader calibrated on an earlier version of its gold set (recorded)")
    run.add_argument("--allow-uncalibrated", action="store_true", default=None,
                     help="train even if the grader prompt has no calibration record or fails any check of the gate (recorded)")
    ev = commands.add_parser("eval", help="base vs trained policy on the held-out samples")
    ev.add_argument("--model", type=Path, required=True, metavar="DIR", help="the --out of `train run`")
    held = ev.add_mutually_exclusive_group()
    held.add_argument("--samples", type=Path, help="samples to evaluate, ours or the reference's processed shape (default: DIR/heldout.jsonl)")
    held.add_argument("--logs", type=Path, help="evaluate on every session of these expert logs instead (e.g. a corpus file "
                      "training never read), cut at the run's stop rule; with content, targets extracted as `train run` does")
    ev.add_argument("--limit", type=int, metavar="N", help="with --logs: only the first N sessions")
    ev.add_argument("--out", type=Path, help="JSON to write (default: DIR/eval.json, with eval.html beside it)")
    ev.add_argument("--max-new-tokens", type=int, help="default: the run's max_completion_length, else 32")
    ev.add_argument("--base", type=Path, metavar="DIR", help="compare with this model instead of the run's base model (e.g. "
                    "DIR/warm_start/final, to see what GRPO added to the warm start)")
    ev.add_argument("--concurrency", type=int, metavar="N", help="grader LM calls at once (default: the run's concurrency)")
    ev.add_argument("--rollouts", type=int, metavar="K", help="sampled answers per sample besides the greedy one, scored "
                    "under the reference's metric names (default: the run's eval_rollouts, 3 unless set; 0: greedy only)")
    ev.add_argument("--temperature", type=float, default=1.0, help="sampling temperature of the rollouts (default: 1.0, the reference's)")
    ev.add_argument("--top-p", type=float, default=0.95, help="nucleus sampling of the rollouts (default: 0.95, the reference's)")
    ev.add_argument("--review", type=int, metavar="N", help="also export N judged rollouts (base and trained, drawn at random, "
                    "side hidden) as a grader review sheet to label blind and bring back with `calibrator goldset add`; "
                    "every later eval of this run corrects its content figures by those labels")
    ev.add_argument("--review-out", type=Path, metavar="FILE", help="where the review sheet goes (.xlsx or .csv; default: DIR/review.xlsx)")
    ev.add_argument("--goldset", type=Path, help="the grader gold set the labelled review rows are read from (default: the one "
                    "the grader prompt was calibrated on)")
    ev.add_argument("--judge", metavar="NAME", help="grade content with this judge instead of the one that gave the run's "
                    "reward: `lm` (the grader prompt on the run's grader_lm) or a model-free floor of the grader "
                    "(similarity, neighbours) fitted on the gold set's train split. A policy trained on one judge can "
                    "learn that judge's blind spots; another judge's figure cannot be gamed that way (default: the "
                    "reward's judge; --out then defaults to DIR/eval.judge-NAME.json)")
    val = commands.add_parser("validate", help="check a config: its keys, and the whole grpo block built into TRL's GRPOConfig")
    val.add_argument("--config", type=Path, required=True, help="YAML config")
    launch = commands.add_parser("launch", help="start `train run` with accelerate, as the config's launcher block says",
                                 epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    launch.add_argument("--config", type=Path, required=True, help="YAML config with a launcher block")
    launch.add_argument("--print", action="store_true", dest="print_only",
                        help="write <out>/accelerate.yaml and print the command instead of running it")
    return top


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = _parser().parse_args(argv)
    return {"run": _run, "eval": _eval, "validate": _validate, "launch": _launch}[args.command](args)


def _config_error(path: Path, e: Exception) -> int:
    print(f"error: {e}" if isinstance(e, ConfigError) else f"error: {path}: {e}", file=sys.stderr)
    return 2


def _checked(path: Path):
    """The config at path, its grpo block built into TRL's GRPOConfig (see grpo_config) and its launcher block
    checked by accelerate when that is installed here; raises one of CONFIG_ERRORS."""
    from train.config import check_accelerate_config, grpo_config

    config = load_config(path)
    grpo_config(config, path, validate_only=True)
    return config, config.launcher is not None and check_accelerate_config(config.launcher, path)


CONFIG_ERRORS = (OSError, ValueError, yaml.YAMLError)  # ValueError: pydantic's ValidationError and ConfigError


def _validate(args: argparse.Namespace) -> int:
    try:
        config, accelerate_checked = _checked(args.config)
    except CONFIG_ERRORS as e:
        return _config_error(args.config, e)
    launcher = ("" if config.launcher is None else
                f"; launcher: {len(config.launcher.accelerate_config)} accelerate keys "
                + ("validated" if accelerate_checked else "not checked (accelerate is not installed here)"))
    print(f"ok: {args.config}: {len(config.grpo)} GRPOConfig keys validated{launcher}")
    return 0


def _launch(args: argparse.Namespace) -> int:
    """Writes the launcher block's accelerate config to <out>/accelerate.yaml and runs (or prints) the command."""
    from calibrator.prompt import write_atomic
    from train.config import accelerate_yaml, launch_command

    try:
        if load_config(args.config).launcher is None:
            raise ConfigError(f"{args.config} has no launcher block, so there is nothing to launch: add "
                              f"`launcher: {{accelerate_config: {{...}}}}` (see train/configs/multi-gpu.yaml), or start it "
                              f"directly with `python -m train run --config {args.config}`")
        config, installed = _checked(args.config)
    except CONFIG_ERRORS as e:
        return _config_error(args.config, e)
    accelerate_file = config.out / "accelerate.yaml"
    write_atomic(accelerate_file, accelerate_yaml(config.launcher))
    command = launch_command(accelerate_file, args.config)
    if args.print_only or not installed:
        if not installed:
            print("accelerate is not installed here: run this command where it is", file=sys.stderr)
        print(shlex.join(command))
        return 0
    executable = shutil.which("accelerate")
    argv = [executable, *command[1:]] if executable else [sys.executable, "-m", "accelerate.commands.accelerate_cli", *command[1:]]
    print(shlex.join(command), flush=True)
    return subprocess.run(argv).returncode


def _grader(config, stack, judge: str | None = None):
    """(LM handle or None, the content judge), opened by calibrator/reward/judge.py on the run's grader prompt and LM.
    judge: this one instead (`lm` or a floor's name), as `train eval --judge` asks."""
    from calibrator.lm import CallPolicy, LMSpec, default_concurrency
    from calibrator.reward.judge import open_judge

    policy = CallPolicy(concurrency=config.concurrency or default_concurrency(LMSpec.parse(config.grader_lm)))
    try:
        opened = open_judge(stack, config.grader_prompt, config.grader_lm, cache_dir=config.cache_dir, seed=config.seed,
                            policy=policy, judge=judge)
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    return opened.handle, opened.grade


def _format_source(config):
    """Where the reward's format term comes from: chosen on the grader's val agreement; the rule when the run grades
    no content (no grader at all)."""
    from calibrator.components.grader import FormatSource
    from calibrator.reward.judge import format_source_of

    if not config.content:
        return FormatSource(source="rule", reason="content: false: no grader in this run; the question-count rule")
    return format_source_of(config.grader_prompt)


def _run(args: argparse.Namespace) -> int:
    """Every stage resumable: samples (the extraction's partial file), the warm start and GRPO (checkpoints), the eval
    (completions cached per model, grader answers in the LM cache). A stage that finished is not run again."""
    from contextlib import ExitStack

    from calibrator.expert_logs.logs import LogError
    from calibrator.prompt import load_prompt
    from calibrator.reward.gate import GateError
    from train import checkpoints, data
    from train.config import grpo_config
    from train.gate import gate
    from train.model import ensure_model
    from calibrator.reward.functions import RewardFunction
    from train.warm_start import warm_start

    if args.max_steps and args.method in ("sft", "dpo"):
        print(f"error: --max-steps sets GRPO's steps; a {args.method} run takes its steps from the config's "
              f"{args.method}.steps", file=sys.stderr)
        return 2
    grpo_overrides = {"max_steps": args.max_steps} if args.max_steps else {}
    try:
        config = load_config(args.config, model=args.model, samples=args.samples, logs=args.logs, grader_lm=args.grader_lm,
                             fusion=args.fusion, out=args.out, allow_uncalibrated=args.allow_uncalibrated,
                             accept_newer_goldset=args.accept_newer_goldset, concurrency=args.concurrency, limit=args.limit,
                             eval_after=False if args.no_eval else None, method=args.method)
        config.grpo |= grpo_overrides
    except CONFIG_ERRORS as e:
        return _config_error(args.config, e)
    if config.content:  # the gate first: refusing a grader takes no TRL import
        try:
            gate_record = gate(config)
        except GateError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    else:
        gate_record = {"grader_prompt": None, "not_needed": "content: false: no grader scores this run's reward"}
    try:
        grpo_args = grpo_config(config, args.config)  # every grpo key checked before any sample is extracted
    except CONFIG_ERRORS as e:
        return _config_error(args.config, e)
    if gate_record.get("overrides"):
        waived = "; ".join(f"{c['check']} {c['figure']} vs {c['threshold']} waived by {c['overridden_by']}"
                           for c in gate_record["checks"] if c["overridden_by"]) or "no calibration record, allowed by allow_uncalibrated"
        print(f"warning: the grader does not pass the gate ({waived}); the run's record says so", file=sys.stderr)
    try:
        changed = _changed_since(config)
    except ValueError as e:  # pydantic's ValidationError and json's JSONDecodeError
        return _config_error(config.out / "config.json", e)
    if changed:
        print(f"error: {config.out} holds a run made with another config ({', '.join(changed)} differ), and its samples, "
              f"warm start and checkpoints would be reused as if they were this config's: use another --out, or delete "
              f"{config.out} to start over", file=sys.stderr)
        return 2
    if config.samples:
        try:
            for note in data.samples_file_notes(config):
                print(f"note: {note}", file=sys.stderr)
        except data.SamplesFileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    config.out.mkdir(parents=True, exist_ok=True)
    checkpoints.write_from_main(config.out / "config.json", config.model_dump_json(indent=2))
    try:
        samples = data.read_samples(config.samples) if config.samples else data.samples_from_logs(config, config.out / "samples.jsonl")
        data.check_target_scope(samples, config, config.samples or config.logs)
    except (LogError, data.SamplesFileError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    train_samples, heldout = data.split(samples, config.eval_fraction, config.seed, config.content)
    checkpoints.write_from_main(config.out / "heldout.jsonl", "".join(s.model_dump_json() + "\n" for s in heldout))
    rows = data.rebalance(train_samples, config.stop_share, config.seed)
    stops = sum(s.decision == "stop" for s in rows)
    print(f"{len(samples)} samples: {len(train_samples)} train ({len(rows)} rows, {stops} stop), {len(heldout)} held out; "
          f"model {config.model}")
    model_dir = ensure_model(config.model, config.cache_dir)
    instructions = load_prompt(config.policy_prompt).instructions
    start_from = model_dir
    if config.warm_start and config.method == "grpo":  # GRPO's groups need a policy that says <stop /> at times;
        # the baselines learn from the experts' moves offline and start from the base model (train/baselines.py)
        warm = data.warm_rows(train_samples, instructions, config.context_turns, config.warm_start.stop_share, config.seed)
        start_from = warm_start(config, warm, model_dir)
    if (config.out / "run.json").is_file() and (config.out / "final").is_dir():
        print(f"training: done already, {config.out / 'final'}")
    else:
        with ExitStack() as stack:
            handle, grade = _grader(config, stack) if config.content else (None, None)
            format_source = _format_source(config)
            print(f"format term: {format_source.source} ({format_source.reason})")
            if (content := (gate_record or {}).get("content_source")) is not None:
                print(f"content term: {content['source']} ({content['reason']})")
            reward = RewardFunction(grade, config.fusion, format_source.source, handle.concurrency if handle else 1)
            if config.method == "grpo":
                from train import trainer  # TRL: imported once the gate and the data are through

                summary = trainer.train(config, data.to_rows(rows, instructions, config.context_turns), start_from, reward, grpo_args)
            else:
                summary = _baseline(config, train_samples, instructions, start_from, reward)
            usage = handle.usage().model_dump() if handle else None
        record = {"gate": gate_record, "model": str(model_dir), "started_from": str(start_from),
                  "samples": {"train": len(train_samples), "rows": len(rows), "rows_stop": stops, "heldout": len(heldout)},
                  "format": format_source.model_dump(), **summary, "grader_usage": usage}
        checkpoints.write_from_main(config.out / "run.json", json.dumps(record, indent=2))
        print(f"trained {summary['steps']} steps ({config.method}); {summary['grader_failures']} grader failures; model in "
              f"{config.out / 'final'}" + (f"; metrics in {config.out / 'metrics.jsonl'}" if config.method == "grpo" else ""))
    if config.eval_after and checkpoints.is_main_process():
        if not heldout:
            print("no held-out sample: eval skipped (raise eval_fraction)", file=sys.stderr)
            return 0
        from train.evaluate import Sampling

        sampling = Sampling(rollouts=config.eval_rollouts, seed=config.seed) if config.eval_rollouts else None
        evaluate_run(config.out, config, heldout, config.out / "eval.json", _max_new_tokens(config), sampling=sampling)
    return 0


def _baseline(config: TrainConfig, train_samples: list, instructions: str, start: Path, reward) -> dict:
    """The SFT or DPO row of the paper's table, on this run's training samples (train/baselines.py)."""
    from train import baselines, data

    if config.method == "sft":
        rows = data.warm_rows(train_samples, instructions, config.context_turns, None, config.seed)
        return baselines.train_baseline(config, "sft", rows, start) | {"grader_failures": 0}
    pairs_file = config.out / "dpo_pairs.jsonl"
    if pairs_file.is_file():
        pairs, counts = baselines.read_pairs(pairs_file), None
    else:
        pairs, counts = baselines.dpo_pairs(config, train_samples, start, instructions, reward)
        if pairs:  # an empty file would be reused by the next attempt
            baselines.write_pairs(pairs_file, pairs)
        print(f"dpo pairs: {counts['kept']} of {counts['prompts']} prompts had a sampled answer scoring below the expert's "
              f"move ({counts['no_worse_sample']} had none, {counts['grader_failed']} left out for a grader failure); "
              f"{len(pairs)} pairs at the config's stop share in {pairs_file}")
    if not pairs:
        raise SystemExit("error: no DPO pair: on none of the training prompts did the policy's samples score below the "
                         "expert's move; raise dpo.samples_per_prompt and train into a new --out")
    return baselines.train_baseline(config, "dpo", pairs, start) | {"pairs": counts, "grader_failures": reward.failures}


METHODS = {"grpo": "GRPO on the Learn-to-Ask reward", "sft": "supervised fine-tuning on the experts' moves (the SFT baseline)",
           "dpo": "DPO, the expert's move preferred to a lower-reward policy sample (the DPO baseline)"}

RUN_ONLY = {"concurrency", "eval_after", "eval_rollouts", "allow_below_gate", "accept_newer_goldset", "allow_uncalibrated", "launcher"}


def _recorded(path: Path) -> dict:
    """A run's config.json with keys renamed since it was written under their current names; ValueError if it is not
    JSON."""
    recorded = json.loads(path.read_text())
    if "grader_threads" in recorded:  # a run recorded before the key was renamed
        recorded["concurrency"] = recorded.pop("grader_threads")
    return recorded


def _changed_since(config: TrainConfig) -> list[str]:
    """The keys (other than how to run: concurrency, overrides, eval_after; and the blocks of methods this run does
    not use) in which `config` differs from the one
    recorded in its --out, if that folder already holds stage results. Resuming reuses those results, so they must
    be this config's."""
    recorded = config.out / "config.json"
    if not recorded.is_file():
        return []
    before = TrainConfig.model_validate(_recorded(recorded)).model_dump(mode="json")
    now = config.model_dump(mode="json")
    unused = {"grpo": {"sft", "dpo"}, "sft": {"dpo", "warm_start"}, "dpo": {"sft", "warm_start"}}[config.method]
    return sorted(k for k in now if k not in RUN_ONLY | unused and now[k] != before.get(k))


def _max_new_tokens(config: TrainConfig) -> int:
    """The eval generates as long as training did."""
    return int(config.grpo.get("max_completion_length", 32))


def _eval(args: argparse.Namespace) -> int:
    from train import data

    if args.limit is not None and (not args.logs or args.limit < 1):
        print("error: --limit takes a positive number of sessions, and applies to --logs only", file=sys.stderr)
        return 2
    config_path = args.model / "config.json"
    if not config_path.is_file() or not (args.model / "run.json").is_file() or not (args.model / "final").is_dir():
        print(f"error: {args.model} is not a finished `train run` folder (needs config.json, run.json and final/)", file=sys.stderr)
        return 2
    try:
        config = TrainConfig.model_validate(_recorded(config_path)
                                            | ({"concurrency": args.concurrency} if args.concurrency is not None else {}))
    except ValueError as e:
        return _config_error(config_path, e)
    if args.logs:
        from calibrator.expert_logs.logs import LogError

        key = hashlib.sha256(f"{args.logs.resolve()}|{args.limit}|{config.stop_rule}".encode()).hexdigest()[:8]
        samples_path = args.model / f"eval-logs-{key}.jsonl"
        try:
            everything = data.samples_from_logs(config.model_copy(update={"logs": args.logs, "limit": args.limit}), samples_path)
        except (LogError, data.SamplesFileError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        samples = data.usable(everything, config.content)  # every session of a file training never read is held out
    else:
        samples_path = args.samples or args.model / "heldout.jsonl"
        try:
            samples = data.read_samples(samples_path)
            data.check_target_scope(samples, config, samples_path)
        except data.SamplesFileError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if not samples:
        print(f"error: {samples_path} has no samples to evaluate", file=sys.stderr)
        return 2
    if args.rollouts is not None and args.rollouts < 0:
        print(f"error: --rollouts {args.rollouts}: give 0 (greedy only) or more", file=sys.stderr)
        return 2
    if args.review is not None and (args.review < 1 or not config.content):
        print("error: --review takes a positive number of rollouts, and needs a run that grades content", file=sys.stderr)
        return 2
    if not 0 < args.temperature or not 0 < args.top_p <= 1:
        print("error: --temperature must be above 0 and --top-p in (0, 1]", file=sys.stderr)
        return 2
    review_out = args.review_out or args.model / "review.xlsx"
    if args.review and review_out.exists():
        print(f"error: {review_out} exists and may hold labels: bring them in with `python -m calibrator goldset add "
              f"{review_out} --component grader`, then move it away or name another --review-out", file=sys.stderr)
        return 2
    if args.judge is not None:
        from calibrator.components.grader import GRADER

        judges = ["lm", *(f.name for f in GRADER.floors())]
        if args.judge not in judges:
            print(f"error: --judge {args.judge}: not a content judge; choose one of {', '.join(judges)}", file=sys.stderr)
            return 2
        if not config.content:
            print("error: --judge grades content, and this run grades none (content: false)", file=sys.stderr)
            return 2
    from train.evaluate import Sampling

    rollouts = config.eval_rollouts if args.rollouts is None else args.rollouts
    sampling = Sampling(rollouts=rollouts, temperature=args.temperature, top_p=args.top_p, seed=config.seed) if rollouts else None
    default_out = args.model / ("eval.json" if args.judge is None else f"eval.judge-{args.judge}.json")
    result = evaluate_run(args.model, config, samples, args.out or default_out, args.max_new_tokens or _max_new_tokens(config),
                          base=args.base, sampling=sampling, goldset=args.goldset, judge=args.judge)
    if args.review:
        from train.policy_review import export_review

        out = review_out
        try:
            index = export_review(args.model, result, samples, args.review, out, seed=config.seed)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(f"review: wrote {out} ({min(args.review, len(index.rows))} rollouts to label blind; {len(index.rows)} exported "
              f"from this run so far): label them, `python -m calibrator goldset add {out} --component grader`, then eval again")
    return 0


def _reward_judge(run_dir: Path, calibration):
    """The content judge the run's reward used, as its run.json recorded it (the grader prompt may have been calibrated
    again since); chosen from the prompt's record for a run that did not record it."""
    from calibrator.components.grader import ContentSource, choose_content_source

    try:
        recorded = json.loads((run_dir / "run.json").read_text()).get("gate", {}).get("content_source")
    except (OSError, ValueError, AttributeError):
        recorded = None
    return ContentSource.model_validate(recorded) if isinstance(recorded, dict) else choose_content_source(calibration)


def evaluate_run(run_dir: Path, config: TrainConfig, samples: list["TrainingSample"], out: Path, max_new_tokens: int,
                 base: Path | None = None, sampling: "Sampling | None" = None, goldset: Path | None = None,
                 judge: str | None = None) -> dict:
    """Base vs trained policy of the run in `run_dir` on `samples`: eval.json at `out`, the HTML beside it, one line per
    metric printed. Completions are cached in run_dir/eval.{base,trained}.jsonl (sampled rollouts in
    eval.{base,trained}.sampled.jsonl), so a killed eval resumes; grader calls go config.concurrency at a time.
    base: another model to compare with instead of the run's base model. sampling: also score that many sampled
    rollouts per sample, the reference's evaluation, beside greedy decoding. goldset: where labels of reviewed
    rollouts are read (default: the grader's calibration gold set), to correct the content figures. judge: the content
    judge (`lm` or a floor's name) instead of the reward's."""
    from contextlib import ExitStack

    from calibrator.prompt import load_prompt, write_atomic
    from train.evaluate import (REFERENCE_NAMES, compare, describe, generate, generate_sampled, grader_agreement, metrics,
                                rollout_samples, score)
    from train.model import ensure_model
    from train.report import render_eval

    instructions = load_prompt(config.policy_prompt).instructions
    models = {"base": base or ensure_model(config.model, config.cache_dir), "trained": run_dir / "final"}
    stem = {"base": "eval.base" if base is None else f"eval.base-{hashlib.sha256(str(base.resolve()).encode()).hexdigest()[:8]}",
            "trained": "eval.trained"}
    completions, rollouts = {}, {}
    for side, model_dir in models.items():  # one side at a time, greedy then sampled: one model load each
        completions[side] = generate(model_dir, samples, instructions, max_new_tokens, cache=run_dir / f"{stem[side]}.jsonl",
                                     context_turns=config.context_turns)
        if sampling:
            rollouts[side] = [text for texts in generate_sampled(model_dir, samples, instructions, max_new_tokens, sampling,
                                                                 cache=run_dir / f"{stem[side]}.sampled.jsonl",
                                                                 context_turns=config.context_turns) for text in texts]
    sampled_samples = rollout_samples(samples, sampling.rollouts) if sampling else []
    calibration = load_prompt(config.grader_prompt).calibration if config.content else None
    content = _reward_judge(run_dir, calibration)
    source = judge or content.source
    with ExitStack() as stack:
        handle, grade = _grader(config, stack, source) if config.content else (None, None)
        format_source = _format_source(config)
        threads = handle.concurrency if handle else 1
        scores = {side: score(samples, [c.text for c in made], grade, config.fusion, format_source.source, threads,
                              show_progress=True, p_stop=[c.p_stop for c in made])
                  for side, made in completions.items()}
        sampled = {side: score(sampled_samples, texts, grade, config.fusion, format_source.source, threads,
                               show_progress=True) for side, texts in rollouts.items()}
    comparison = compare(samples, scores["base"], scores["trained"], seed=config.seed)
    sampled_comparison = compare(sampled_samples, sampled["base"], sampled["trained"], seed=config.seed) if sampling else []
    grader = grader_agreement(config.grader_prompt, calibration, config.min_grader_qwk, used=config.content, source=source)
    judged_by = (f"content judged by {source}, not the reward's judge ({content.source}: {content.reason})"
                 if source != content.source else f"content judged by {source}, the reward's own judge ({content.reason})")
    n_stop = sum(s.decision == "stop" for s in samples)
    result = {
        "note": (f"trained by {METHODS[config.method]}; {len(samples)} held-out samples ({len(samples) - n_stop} continue, {n_stop} stop) from "
                 f"{len({s.session_id for s in samples})} sessions; greedy decoding, at most {max_new_tokens} new tokens"
                 + (f", the last {config.context_turns} messages shown" if config.context_turns else "")
                 + "; stop_discrimination is the ROC AUC of the policy's probability of beginning with <stop"
                 + f"; reward fusion {config.fusion}; "
                 + (f"grader {config.grader_prompt}, {judged_by}; " if config.content else "")
                 + f"format term from the {format_source.source}; {grader.summary()}."),
        "models": {side: str(model_dir) for side, model_dir in models.items()},
        "method": config.method,
        "judge": {"content": source, "reward": content.source, "other_than_reward": source != content.source}
        if config.content else None,
        "format": format_source.model_dump(),
        "grader": grader.model_dump(mode="json"),
        "base": metrics(scores["base"]),
        "trained": metrics(scores["trained"]),
        "comparison": [c.model_dump(mode="json") for c in comparison],
        "scores": {side: [s.model_dump(mode="json") for s in records] for side, records in scores.items()},
        "sampled": None if sampling is None else {
            "settings": sampling.model_dump(), "note": sampling.describe() + "; metrics under the reference's names",
            "reference_names": REFERENCE_NAMES,
            "base": metrics(sampled["base"]), "trained": metrics(sampled["trained"]),
            "comparison": [c.model_dump(mode="json") for c in sampled_comparison],
            "scores": {side: [s.model_dump(mode="json") for s in records] for side, records in sampled.items()}},
    }
    if config.content:
        from train.policy_review import Correction, correct, describe as describe_correction, read_labels

        from calibrator.gold.sheets import GoldSetError

        source = goldset or Path(calibration.goldset_path if calibration else "goldsets/grader.csv")
        try:
            labels = read_labels(source)
        except GoldSetError as e:
            print(f"warning: {source} cannot be read, so no review label corrects the content figures: {e}", file=sys.stderr)
            labels = {}
        try:
            correction = correct(run_dir, result, labels, grader.qwk)
        except ValueError as e:  # review.json edited or cut short
            print(f"warning: {run_dir / 'review.json'} cannot be read ({str(e).splitlines()[0]}); the content figures "
                  f"are not corrected", file=sys.stderr)
            correction = None
        result["corrected"] = None if correction is None else correction.model_dump() | {"figures": correction.figures(),
                                                                                "differences": correction.differences()}
    write_atomic(out, json.dumps(result, indent=2, ensure_ascii=False))
    write_atomic(out.with_suffix(".html"), render_eval(result, samples))
    print("greedy decoding:")
    for c in comparison:
        print(describe(c))
    if sampling:
        print(f"{sampling.describe()}, the reference's evaluation:")
        for c in sampled_comparison:
            if c.name in REFERENCE_NAMES:
                print(describe(c, REFERENCE_NAMES[c.name]))
    if result.get("corrected"):
        for line in describe_correction(Correction.model_validate(result["corrected"])):
            print(line)
    elif config.content:
        print(f"content figures are the judge's, uncorrected: no labelled review of this run's rollouts (`train eval --review N`); "
              f"{grader.summary()}")
    if warning := grader.warning():
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {out} and {out.with_suffix('.html')}")
    return result


if __name__ == "__main__":
    sys.exit(main())
