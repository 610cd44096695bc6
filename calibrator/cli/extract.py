"""`extract` and `extract merge`: expert logs to training samples (calibrator/components/extract.py says with which
component), streamed, sharded, resumable."""

import argparse
import sys

from calibrator.cli.quiet import quiet


def extract(args: argparse.Namespace) -> int:
    if args.task == "merge":
        return merge(args)
    if args.logs is None or args.out is None:
        print("error: extract needs --logs and --out (or: extract merge SHARD... --out FILE)", file=sys.stderr)
        return 2
    from calibrator.cli.backend import backend_stop, usage_line
    from calibrator.cli.parser import call_policy
    from calibrator.components.extract import COMPONENT, default_prompt, extract_stream
    from calibrator.lm import LMSpec, LMSpecError, open_lm
    from calibrator.lm.adapter import CompactJSONAdapter
    from calibrator.lm.local import ModelMissingError
    from calibrator.corpora import open_log
    from calibrator.expert_logs.logs import LogError, segment
    from calibrator.parallel import Progress
    from calibrator.prompt import load_prompt, write_atomic
    from calibrator.expert_logs.shards import Manifest, Selection, Shard, file_sha256, manifest_path, read_session_ids

    prompt_path = args.prompt or default_prompt()
    try:
        if args.limit is not None and args.limit < 1:
            raise ValueError(f"--limit {args.limit}: must be at least 1")
        stream = open_log(args.logs)
        spec = LMSpec.parse(args.lm)
        policy = call_policy(args, spec)
        prompt = load_prompt(prompt_path)
        selection = Selection(shard=Shard.parse(args.shard) if args.shard else None,
                              sessions=read_session_ids(args.sessions) if args.sessions else None, limit=args.limit)
    except (LogError, LMSpecError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if prompt.component != COMPONENT.name:
        print(f"error: {prompt_path} is a {prompt.component} prompt, not an {COMPONENT.name} prompt", file=sys.stderr)
        return 2
    note = "" if prompt.calibration else f" (not calibrated: run `python -m calibrator run --component {COMPONENT.name}` first)"
    scope = "".join([f", shard {selection.shard}" if selection.shard else "", f", {len(selection.sessions)} listed sessions"
                     if selection.sessions else "", f", at most {selection.limit} sessions" if selection.limit else ""])
    print(f"{args.logs}{scope}; LM {spec}, concurrency {policy.concurrency}; prompt {prompt_path} "
          f"(content sha256 {prompt.content_sha256()[:12]}){note}")
    quiet()
    import dspy

    total = stream.lines() if stream.streaming else None
    if total is not None and selection.shard is not None:
        total = -(-total // selection.shard.count)  # an estimate: a hash spreads sessions evenly
    if selection.limit is not None:
        total = min(total, selection.limit) if total is not None else selection.limit
    progress = Progress(total, "extract", "session", not args.no_progress, None)
    picked = {"sessions": 0}
    listed_seen: set[str] = set()

    def samples():
        for position, session in selection.pick(stream):
            picked["sessions"] += 1
            if selection.sessions is not None:
                listed_seen.add(session.session_id)
            progress.step()
            for sample in segment(session, args.stop_rule, args.context_cut):
                yield position, sample

    manifest_path(args.out).unlink(missing_ok=True)  # a manifest only ever describes the file beside it
    lm = None
    try:
        # no DSPy call history: it would keep the last 10,000 prompts and answers, memory a stream must not hold
        with open_lm(spec, cache_dir=args.cache_dir, seed=args.seed, policy=policy) as lm, \
                dspy.context(lm=lm.lm, adapter=CompactJSONAdapter(), disable_history=True):
            progress.in_flight = lm.in_flight
            summary = extract_stream(samples(), prompt, spec, args.out, concurrency=policy.concurrency, progress=progress,
                                     sessions=lambda: picked["sessions"], shape=args.format)
    except KeyboardInterrupt:
        print(f"interrupted: finished samples are kept in {args.out}.partial; run the same command again to continue", file=sys.stderr)
        return 130
    except LogError as e:  # a transcript file is read whole when extraction starts
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        if (stop := backend_stop([lm], args.cache_dir)) is not None:
            print(stop, file=sys.stderr)
            print(f"finished samples are kept in {args.out}.partial", file=sys.stderr)
            return 1
        if isinstance(e, ModelMissingError | RuntimeError):
            print(f"error: {e}", file=sys.stderr)
            return 1
        raise
    finally:
        progress.close()
    write_atomic(manifest_path(args.out), Manifest(
        logs=str(args.logs), logs_sha256=file_sha256(args.logs), shard=selection.shard, limit=selection.limit,
        sessions_file=str(args.sessions) if args.sessions else None, sessions=summary.sessions or 0, samples=summary.samples,
        prompt_sha256=prompt.content_sha256(), lm=str(spec), stop_rule=args.stop_rule,
        context_cut=args.context_cut).model_dump_json(indent=2))
    for problem in stream.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if selection.sessions is not None and (unseen := len(selection.sessions - listed_seen)) and selection.limit is None:
        print(f"warning: {unseen} session id(s) listed in {args.sessions} are not in {args.logs}{' shard ' + str(selection.shard) if selection.shard else ''}",
              file=sys.stderr)
    print(f"{summary.sessions} sessions extracted, {stream.skipped} skipped; wrote {summary.samples} samples to {args.out}: "
          f"{summary.extracted} extracted now ({summary.reextracted} re-extracted: made by another prompt or LM), "
          f"{summary.reused} from an earlier run, {summary.stops} stop (no LM call), {summary.failed} failed (retried on the next run)")
    print(usage_line(lm))
    return 0


def merge(args: argparse.Namespace) -> int:
    from calibrator.prompt import write_atomic, write_atomic_lines
    from calibrator.expert_logs.shards import Manifest, ShardError, check_shards, manifest_path, merge_lines

    try:
        manifests, warnings = check_shards(args.shards)
        write_atomic_lines(args.merged_out, merge_lines(args.shards, manifests))
    except ShardError as e:
        print(f"error: {e}; nothing written", file=sys.stderr)
        return 2
    first = manifests[0]
    write_atomic(manifest_path(args.merged_out), Manifest(
        logs=first.logs, logs_sha256=first.logs_sha256, shard=None, limit=None, sessions_file=None,
        sessions=sum(m.sessions for m in manifests), samples=sum(m.samples for m in manifests),
        prompt_sha256=first.prompt_sha256, lm=first.lm, stop_rule=first.stop_rule,
        context_cut=first.context_cut).model_dump_json(indent=2))
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"merged {len(manifests)} shards of {first.logs}: {sum(m.sessions for m in manifests)} sessions, "
          f"{sum(m.samples for m in manifests)} samples, in log order, to {args.merged_out}")
    return 0
