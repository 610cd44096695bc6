"""`review`: a run's disagreements and a sample of its agreements, to adjudicate blind."""

import argparse
import sys
from pathlib import Path

from calibrator.cli.goldset import problems
from calibrator.goldset import GoldSetError


def review(args: argparse.Namespace) -> int:
    from calibrator.review import build_review, hidden_columns, write_review

    if not (args.run_dir / "run.json").is_file() or not (args.run_dir / "predictions.csv").is_file():
        print(f"error: {args.run_dir} is not a run folder (no run.json and predictions.csv)", file=sys.stderr)
        return 2
    if args.output.suffix.lower() not in (".xlsx", ".csv"):
        print("error: --output must end in .xlsx or .csv", file=sys.stderr)
        return 2
    if args.agreements is not None and args.agreements < 0:
        print(f"error: --agreements must be 0 or more, got {args.agreements}", file=sys.stderr)
        return 2
    if args.goldset is not None and not args.goldset.is_file():
        print(f"error: --goldset {args.goldset}: no such file", file=sys.stderr)
        return 2
    try:
        review = build_review(args.run_dir, agreements=args.agreements, seed=args.seed, goldset=args.goldset)
    except GoldSetError as e:
        problems(e, Path(e.problems[0].file))
        return 2
    write_review(review, args.output)
    wanted = review.disagreements if args.agreements is None else args.agreements
    short = f" (only {review.agreements_available} exist)" if review.agreements < wanted else ""
    where = (f"are grouped and hidden in columns {hidden_columns(review)}: expand them only after labelling"
             if args.output.suffix.lower() == ".xlsx" else f"are the last {len(review.hidden)} columns: hide them before labelling")
    print(f"wrote {len(review.rows)} rows to {args.output}: {review.disagreements} disagreements and {review.agreements} agreements{short}, "
          f"shuffled ({', '.join(f'{s} {n}' for s, n in review.splits.items())}); the run's columns ({', '.join(review.hidden)}) {where}")
    if not review.goldset_found:
        print(f"warning: gold set not found at {review.goldset}: rows were taken from predictions.csv "
              "without their note and annotator columns, so a row whose note this drops comes back as an update; "
              "pass --goldset PATH", file=sys.stderr)
    if review.relabelled:
        print(f"note: {len(review.relabelled)} row(s) were relabelled since this run and are exported as they are now: "
              f"{', '.join(review.relabelled[:10])}{' …' if len(review.relabelled) > 10 else ''}")
    if review.dropped:
        print(f"note: {len(review.dropped)} row(s) of this run are no longer in {review.goldset} and were left out")
    print(f"fill adjudicated_label (and adjudication_note) where the gold label is wrong, leave both empty where it is right, then: "
          f"python -m calibrator goldset add {args.output} --component {review.component}")
    return 0
