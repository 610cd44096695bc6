"""`extract`: expert logs to training samples (calibrator/components/extract.py says with which component)."""

import argparse
import sys

from calibrator.cli.quiet import quiet


def extract(args: argparse.Namespace) -> int:
    from calibrator.components.extract import COMPONENT, default_prompt, extract_samples
    from calibrator.lm import LMSpec, LMSpecError, open_lm
    from calibrator.lm.adapter import CompactJSONAdapter
    from calibrator.lm.local import ModelMissingError
    from calibrator.logs import LogError, read_logs, segment_all
    from calibrator.prompt import load_prompt

    prompt_path = args.prompt or default_prompt()
    try:
        logs = read_logs(args.logs)
        spec = LMSpec.parse(args.lm)
        prompt = load_prompt(prompt_path)
    except (LogError, LMSpecError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if prompt.component != COMPONENT.name:
        print(f"error: {prompt_path} is a {prompt.component} prompt, not an {COMPONENT.name} prompt", file=sys.stderr)
        return 2
    for problem in logs.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    samples = segment_all(logs.sessions)
    note = "" if prompt.calibration else f" (not calibrated: run `python -m calibrator run --component {COMPONENT.name}` first)"
    print(f"{len(logs.sessions)} sessions read, {logs.skipped} skipped; {len(samples)} samples; LM {spec}; "
          f"prompt {prompt_path} (content sha256 {prompt.content_sha256()[:12]}){note}")
    quiet()
    import dspy

    try:
        with open_lm(spec, cache_dir=args.cache_dir, seed=args.seed) as lm, dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            summary = extract_samples(samples, prompt, spec, args.out, show_progress=not args.no_progress)
            usage = lm.usage()
    except (ModelMissingError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: finished samples are kept in {args.out}.partial; run the same command again to continue", file=sys.stderr)
        return 130
    print(f"wrote {summary.samples} samples to {args.out}: {summary.extracted} extracted now "
          f"({summary.reextracted} re-extracted: made by another prompt or LM), {summary.reused} from an earlier run, "
          f"{summary.stops} stop (no LM call), {summary.failed} failed (retried on the next run)")
    print(f"{usage.lm_calls} LM calls, {usage.cache_hits} cache hits; {logs.skipped} session(s) skipped")
    return 0
