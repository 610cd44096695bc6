"""`serve`: the calibrated grader as an HTTP reward, gated, logged, and watched on the policy's outputs."""

import argparse
import asyncio
import signal
import sys
from contextlib import ExitStack

from calibrator.cli.parser import call_policy


def serve(args: argparse.Namespace) -> int:
    from calibrator.lm.spec import LMSpec, LMSpecError
    from calibrator.reward.functions import load_reward
    from calibrator.reward.gate import SERVE_WORDING, GateError
    from calibrator.reward.log import GradingLog
    from calibrator.reward.service import build_app
    from calibrator.reward.watch import measure_drift

    problems = [f"{flag} {value:g}: must be more than 0" for flag, value in
                (("--max-body-mb", args.max_body_mb), ("--log-max-mb", args.log_max_mb), ("--max-batch", args.max_batch),
                 ("--log-backups", args.log_backups)) if value <= 0]
    if not 0 <= args.port <= 65535:
        problems.append(f"--port {args.port}: must be 0-65535")
    if not args.prompt.is_file():
        problems.append(f"--prompt {args.prompt}: no such file")
    if args.policy_goldset is not None and not args.policy_goldset.is_file():
        problems.append(f"--policy-goldset {args.policy_goldset}: no such file (make it with `calibrator review --graded LOG` "
                        "and `goldset add SHEET --component grader --goldset PATH`)")
    try:
        policy = call_policy(args, LMSpec.parse(args.lm))
    except (LMSpecError, ValueError) as e:
        problems.append(str(e))
    if problems:
        for p in problems:
            print(f"error: {p}", file=sys.stderr)
        return 2
    with ExitStack() as stack:
        try:
            reward = load_reward(args.prompt, args.lm, args.fusion, allow_below_gate=args.allow_below_gate,
                                 accept_newer_goldset=args.accept_newer_goldset, allow_uncalibrated=args.allow_uncalibrated,
                                 min_qwk=args.min_qwk, min_heldout=args.min_heldout, target_scope=args.target_scope,
                                 cache_dir=args.cache_dir, seed=args.seed, policy=policy, wording=SERVE_WORDING)
        except (GateError, ValueError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        stack.callback(reward.close)
        card = reward.card
        judge = card.content_source["source"]
        print(f"judge: {'the LM ' + card.lm if judge == 'lm' else 'the model-free floor ' + judge} on {args.prompt} "
              f"({card.content_source['reason']}); format term: {card.format_source['source']}; fusion {args.fusion}")
        if reward.gate.overrides:
            from calibrator.reward.gate import waived

            print(f"warning: the judge does not pass the gate and is served anyway: {waived(reward.gate)}", file=sys.stderr)
        if card.note:
            print(f"note: {card.note}", file=sys.stderr)

        def measure(path):
            return measure_drift(reward.grade, path, card.heldout, args.min_qwk)

        if args.check:
            import json

            drift = measure(args.policy_goldset) if args.policy_goldset else None
            print(json.dumps({"card": card.model_dump(mode="json"), "gate": reward.gate.model_dump(mode="json"),
                              "drift": drift.model_dump(mode="json") if drift else None}, indent=2))
            if drift is not None and drift.warning:
                print(f"warning: {drift.warning}", file=sys.stderr)
            return 0
        log = GradingLog(args.log, judge, max_bytes=int(args.log_max_mb * 1e6), backups=args.log_backups)
        stack.callback(log.close)
        reward.log = log
        app = build_app(reward, max_body=int(args.max_body_mb * (1 << 20)), max_batch=args.max_batch,
                        policy_goldset=args.policy_goldset, measure=measure, log=log,
                        workers=max(8, reward.concurrency * 4))
        asyncio.run(_run(app, args.host, args.port, args.log))
    return 0


async def _run(app, host: str, port: int, log_path) -> None:
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    print(f"serving on http://{bound[0]}:{bound[1]} (POST /get_reward, POST /grade, GET /health, GET /judge); "
          f"gradings logged to {log_path}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    print("stopped", flush=True)
