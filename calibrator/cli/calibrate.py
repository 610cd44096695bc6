"""`run` and `eval`: the calibration commands."""

import argparse
import sys
from contextlib import ExitStack

from calibrator.cli.parser import default_paths
from calibrator.cli.quiet import quiet
from calibrator.gold.goldset import GoldSetError, load_goldset


def calibrate(args: argparse.Namespace) -> int:
    """`run` and `eval`: load the gold set and prompt, open the LM, execute, print the verdict and where things went."""
    from calibrator.components import COMPONENTS

    component = COMPONENTS[args.component]
    paths = default_paths(args.component)
    goldset_path = args.goldset or paths["goldset"]
    prompt_path = args.prompt or paths["prompt"]
    if args.command == "run" and (args.save_prompt or paths["calibrated"]).resolve() == prompt_path.resolve():
        print("error: --save-prompt would overwrite the baseline prompt; choose another path", file=sys.stderr)
        return 2
    try:
        goldset = load_goldset(goldset_path, component.row_model)
    except GoldSetError as e:
        print(f"error: the gold set has {len(e.problems)} problem(s); nothing was run or written:\n{e}", file=sys.stderr)
        return 2

    from calibrator.cli.backend import backend_stop, usage_line
    from calibrator.cli.parser import call_policy
    from calibrator.lm import CallPolicy, LMSpec, LMSpecError, default_concurrency, open_lm
    from calibrator.lm.local import ModelMissingError
    from calibrator.lm.prices import load_prices
    from calibrator.prompt import load_prompt
    from calibrator.calibration.runs import HeldOutLeakError, RunRequest, command_line, execute, unsaved_reason
    from calibrator.report.render import write_index, write_report

    quiet()
    try:
        spec = LMSpec.parse(args.lm)
        proposer_spec = LMSpec.parse(args.proposer_lm) if getattr(args, "proposer_lm", None) else None
        policy = call_policy(args, spec)
        base = load_prompt(prompt_path)
        load_prices(args.prices)
    except (LMSpecError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if base.component != component.name:
        print(f"error: {prompt_path} is a {base.component} prompt, not a {component.name} prompt", file=sys.stderr)
        return 2
    if (mismatch := component.prompt_mismatch(base, goldset.rows)) is not None:
        print(f"error: {prompt_path} on {goldset_path}: {mismatch}", file=sys.stderr)
        return 2
    if getattr(args, "optimizer", None) == "threshold" and component.ordinal_field is None:
        print(f"error: --optimizer threshold reads an ordinal label's probabilities; the {component.name} has no ordinal label",
              file=sys.stderr)
        return 2
    request = RunRequest(
        kind=args.command, component=component.name, goldset_path=goldset_path, prompt_path=prompt_path,
        calibrated_path=(args.save_prompt or paths["calibrated"]) if args.command == "run" else None,
        save_explicit=bool(getattr(args, "save_prompt", None)),
        optimizer=getattr(args, "optimizer", "auto"), budget=getattr(args, "budget", "light"), seed=args.seed,
        out=args.out, command=command_line(), show_progress=not args.no_progress, prices=args.prices,
        compare_reasoning=getattr(args, "compare_reasoning", None),
    )
    lm = proposer = None
    try:
        with ExitStack() as stack:
            lm = stack.enter_context(open_lm(spec, cache_dir=args.cache_dir, seed=args.seed, policy=policy))
            if proposer_spec:
                proposer = stack.enter_context(open_lm(proposer_spec, cache_dir=args.cache_dir, seed=args.seed,
                                                       policy=CallPolicy(concurrency=default_concurrency(proposer_spec))))
            record, folder = execute(request, component, goldset, base, lm, proposer, write_report=write_report,
                                     write_index=write_index)
    except HeldOutLeakError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if (stop := backend_stop([lm, proposer], args.cache_dir)) is not None:
            print(stop, file=sys.stderr)
            return 1
        if isinstance(e, ModelMissingError | RuntimeError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
    except KeyboardInterrupt:
        print("interrupted: nothing half-written; run the same command again to resume from the cached LM answers", file=sys.stderr)
        return 130
    print(record.verdict)
    for note in (record.optimization or {}).get("notes", []):
        print(f"decision rule: {note}")
    if record.floor is not None:
        floor = record.floors[record.floor]
        print(f"model-free floor: {record.floor}, {floor.description}; fitted on {len(floor.fitted_on)} train rows, no LM call")
    for warning in record.warnings:
        print(f"warning: {warning}")
    print(usage_line(lm, record.wall_seconds))
    print(f"report: {folder / 'index.html'}")
    if record.saved_prompt is not None:
        print(f"calibrated prompt: {record.saved_prompt}")
    elif request.calibrated_path is not None:
        print(f"calibrated prompt not saved to {request.calibrated_path}: {unsaved_reason(request, record)} "
              f"(it is in {folder / 'prompt.calibrated.yaml'}; --save-prompt PATH keeps it anyway)")
    return 0
