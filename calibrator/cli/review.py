"""`review`: a run's disagreements and a sample of its agreements, to adjudicate blind."""

import argparse
import sys
from pathlib import Path

from calibrator.cli.goldset import problems
from calibrator.gold.goldset import GoldSetError


def review(args: argparse.Namespace) -> int:
    from calibrator.curation.review import build_review, hidden_columns, write_review

    if args.graded is not None:
        return _graded(args)
    if args.run_dir is None:
        print("error: give a run folder (RUN_DIR), or --graded LOG for the gradings `calibrator serve` logged", file=sys.stderr)
        return 2
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


def _graded(args: argparse.Namespace) -> int:
    """A blind sheet of policy outputs the served judge graded, stratified by its score and by training step."""
    from calibrator.reward.log import LogLineError
    from calibrator.reward.watch import export_graded_review

    if args.run_dir is not None:
        print("error: give a run folder or --graded LOG, not both", file=sys.stderr)
        return 2
    if args.output.suffix.lower() not in (".xlsx", ".csv"):
        print("error: --output must end in .xlsx or .csv", file=sys.stderr)
        return 2
    if args.n < 1:
        print(f"error: --n must be at least 1, got {args.n}", file=sys.stderr)
        return 2
    try:
        done = export_graded_review(args.graded, args.n, args.output, args.seed)
    except LogLineError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if done.written == 0:
        print(f"error: {args.graded} holds {done.entries} gradings and none the judge made (a wrong decision or a grader "
              "failure scores without it): nothing to review", file=sys.stderr)
        return 2
    short = f" (only {done.judged} the judge made)" if done.written < args.n else ""
    print(f"wrote {done.written} rows to {args.output}{short}, drawn from {done.judged} judged of {done.entries} gradings, "
          f"stratified ({', '.join(f'{k}: {v}' for k, v in sorted(done.strata.items()))}), shuffled; the judge's score, "
          "the step and the grading's id are hidden")
    print(f"label them, then: python -m calibrator goldset add {args.output} --component grader --goldset POLICY_GOLD.csv, "
          "and serve with --policy-goldset POLICY_GOLD.csv")
    return 0
