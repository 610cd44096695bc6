"""`suggest`: the unlabelled grader rows most worth labelling next, as a sheet for `goldset add`."""

import argparse
import json
import sys

from calibrator.cli.goldset import problems
from calibrator.gold.goldset import GoldSetError


def suggest(args: argparse.Namespace) -> int:
    from calibrator.components.grader import GRADER
    from calibrator.gold.goldset import load_goldset
    from calibrator.reward.log import LogLineError
    from calibrator.expert_logs.samples_file import SamplesFileError
    from calibrator.reward.suggest import from_log, from_samples, rank, write_suggestions

    if args.n < 1:
        print(f"error: --n must be at least 1, got {args.n}", file=sys.stderr)
        return 2
    if args.output.suffix.lower() not in (".xlsx", ".csv"):
        print("error: --output must end in .xlsx or .csv", file=sys.stderr)
        return 2
    if not args.source.is_file():
        print(f"error: --from {args.source}: no such file", file=sys.stderr)
        return 2
    try:
        gold = load_goldset(args.goldset, GRADER.row_model)
    except GoldSetError as e:
        problems(e, args.goldset)
        return 2
    try:
        first = json.loads(args.source.open(encoding="utf-8").readline() or "{}")
        candidates = from_log(args.source) if "terms" in first else from_samples(args.source)
    except (LogLineError, SamplesFileError, json.JSONDecodeError) as e:
        print(f"error: --from {args.source}: {e}", file=sys.stderr)
        return 2
    if not candidates:
        print(f"error: --from {args.source}: no row to suggest (a log's judged gradings, or continue samples with a target)",
              file=sys.stderr)
        return 2
    ranked = rank(candidates, gold, args.seed)
    written = write_suggestions(ranked, args.output, {r.case_key() for r in gold.rows}, args.n)
    print(f"wrote {written} rows to {args.output}, ranked from {len(candidates)} candidates; why each was chosen is in its "
          "hidden columns")
    print(f"label them, then: python -m calibrator goldset add {args.output} --component grader --goldset {args.goldset}")
    return 0
