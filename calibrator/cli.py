"""`python -m calibrator`: calibrate a component's prompt against a gold set, or score a prompt as it is."""

import argparse
import logging
import sys
import warnings
from contextlib import ExitStack
from pathlib import Path

from calibrator.goldset import GoldSetError, load_goldset

COMPONENTS = {
    "grader": {"goldset": Path("goldsets/grader.csv"), "prompt": Path("prompts/grader.yaml"),
               "calibrated": Path("prompts/grader.calibrated.yaml")},
}

EPILOG = """\
examples:
  python -m calibrator run --component grader                       # offline, embedded SmolLM2, budget light
  python -m calibrator run --component grader --lm openai:gpt-4o-mini --optimizer mipro --budget medium
  python -m calibrator run --component grader --lm openai-compatible:qwen2.5-7b@http://127.0.0.1:8000/v1
  python -m calibrator eval --component grader --prompt prompts/grader.calibrated.yaml

Every LM answer is cached under --cache-dir: re-running a finished command makes no LM calls, and a
command killed half-way resumes from its last answer. API keys are read from OPENAI_API_KEY /
ANTHROPIC_API_KEY only and never written anywhere.
"""


def _parser() -> argparse.ArgumentParser:
    from calibrator.lm.spec import SPEC_HELP
    from calibrator.optimize import BUDGETS

    top = argparse.ArgumentParser(prog="python -m calibrator", description=__doc__, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="{run,eval}")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--component", choices=sorted(COMPONENTS), default="grader", help="which LLM component (default: grader)")
        p.add_argument("--goldset", type=Path, help="gold set, .csv or .xlsx (default: goldsets/<component>.csv)")
        p.add_argument("--lm", default="local", metavar="SPEC", help=SPEC_HELP)
        p.add_argument("--seed", type=int, default=0, help="seed for splits' bootstrap, the optimizers and the LM sampler (default: 0)")
        p.add_argument("--out", type=Path, default=Path("reports"), help="where run folders go (default: reports)")
        p.add_argument("--cache-dir", type=Path, default=Path(".cache"), help="LM call cache (default: .cache)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and CI)")

    run = commands.add_parser("run", help="calibrate: search prompts on train/val, judge on test, save the winner",
                              description="Calibrate a component's prompt: score the baseline, search on train/val, judge the winner on the held-out test split, save it under prompts/ and write reports/<run-id>/.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(run)
    run.add_argument("--optimizer", choices=("auto", "mipro", "gepa", "knn"), default="auto",
                     help="auto: the strategies the budget affords, best on val wins (default); mipro: DSPy MIPROv2; "
                          "gepa: DSPy GEPA with ordinal feedback; knn: demonstrations retrieved per input")
    run.add_argument("--budget", choices=list(BUDGETS), default="light",
                     help="smoke: tiny, for tests; light: minutes on a laptop CPU (default); medium/heavy: more search")
    run.add_argument("--prompt", type=Path, help="baseline prompt (default: prompts/<component>.yaml)")
    run.add_argument("--proposer-lm", metavar="SPEC",
                     help="LM that writes instruction candidates (mipro) and reflections (gepa); a stronger model than "
                          "the one being calibrated usually proposes better prompts (default: the --lm model)")
    run.add_argument("--save-prompt", type=Path, metavar="PATH",
                     help="where the calibrated prompt goes (default: prompts/<component>.calibrated.yaml; the baseline is never overwritten)")

    ev = commands.add_parser("eval", help="score one prompt on every gold row, no optimisation",
                             description="Score one prompt (the baseline by default) on every row of a gold set.",
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(ev)
    ev.add_argument("--prompt", type=Path, help="prompt to score (default: prompts/<component>.yaml)")
    return top


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("dspy", "LiteLLM", "litellm", "httpx", "optuna", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    paths = COMPONENTS[args.component]
    goldset_path = args.goldset or paths["goldset"]
    prompt_path = args.prompt or paths["prompt"]
    if args.command == "run" and (args.save_prompt or paths["calibrated"]).resolve() == prompt_path.resolve():
        print("error: --save-prompt would overwrite the baseline prompt; choose another path", file=sys.stderr)
        return 2
    try:
        goldset = load_goldset(goldset_path)
    except GoldSetError as e:
        print(f"error: the gold set has {len(e.problems)} problem(s); nothing was run or written:\n{e}", file=sys.stderr)
        return 2

    from calibrator.lm import LMSpec, LMSpecError, open_lm
    from calibrator.lm.local import ModelMissingError
    from calibrator.prompt import load_prompt
    from calibrator.runs import RunRequest, command_line, execute

    _quiet()
    try:
        spec = LMSpec.parse(args.lm)
        proposer_spec = LMSpec.parse(args.proposer_lm) if getattr(args, "proposer_lm", None) else None
        base = load_prompt(prompt_path)
    except (LMSpecError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    request = RunRequest(
        kind=args.command, goldset_path=goldset_path, prompt_path=prompt_path,
        calibrated_path=(args.save_prompt or paths["calibrated"]) if args.command == "run" else None,
        optimizer=getattr(args, "optimizer", "auto"), budget=getattr(args, "budget", "light"), seed=args.seed,
        out=args.out, command=command_line(), show_progress=not args.no_progress,
    )
    try:
        with ExitStack() as stack:
            lm = stack.enter_context(open_lm(spec, cache_dir=args.cache_dir, seed=args.seed))
            proposer = stack.enter_context(open_lm(proposer_spec, cache_dir=args.cache_dir, seed=args.seed)) if proposer_spec else None
            record, folder = execute(request, goldset, base, lm, proposer)
    except (ModelMissingError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing half-written; run the same command again to resume from the cached LM answers", file=sys.stderr)
        return 130
    u = record.usage
    print(record.verdict)
    print(f"{u.lm_calls} LM calls, {u.cache_hits} cache hits, {u.prompt_tokens} prompt + {u.completion_tokens} completion tokens, "
          f"{record.wall_seconds:.1f} s")
    print(f"report: {folder / 'index.html'}")
    if request.calibrated_path is not None:
        print(f"calibrated prompt: {request.calibrated_path}")
    return 0
