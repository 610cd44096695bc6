"""`goldset`: template, add, validate, stats and audit of the spreadsheets the labels live in."""

import argparse
import sys
from pathlib import Path

from calibrator.cli.parser import default_paths
from calibrator.gold.goldset import GoldSetError, load_goldset


def problems(e: GoldSetError, file: Path) -> None:
    print(f"error: {file} has {len(e.problems)} problem(s); nothing was written:", file=sys.stderr)
    print(e, file=sys.stderr)


def goldset(args: argparse.Namespace) -> int:
    from calibrator.curation import curation
    from calibrator.components import COMPONENTS

    row_model = COMPONENTS[args.component].row_model
    store = getattr(args, "goldset", None) or default_paths(args.component)["goldset"]
    try:
        if args.task == "template":
            from calibrator.curation.template import write_template

            write_template(args.component, args.output)
            print(f"wrote {args.output}: fill the `data` sheet (see `instructions`), then "
                  f"python -m calibrator goldset add {args.output} --component {args.component}")
        elif args.task == "add":
            result = curation.add_rows(store, args.file, row_model, sheet=args.sheet, dry_run=args.dry_run)
            for change in result.updated:
                print(f"updated {change.id}: {change.before} → {change.after}")
            verb = "would be" if args.dry_run else "were"
            print(f"added {len(result.added)}, updated {len(result.updated)}, unchanged {result.unchanged}, rejected 0"
                  + (f"; {store} {'written' if result.written else 'not changed'}" if not args.dry_run else f" (dry run: nothing {verb} written)")
                  + (f", previous version in {result.backup}" if result.backup else ""))
        elif args.task == "validate":
            goldset = load_goldset(args.file, row_model, sheet=args.sheet)
            print(f"{args.file}: valid {args.component} gold set")
            print(curation.describe_stats(curation.stats(goldset)))
        elif args.task == "stats":
            goldset = load_goldset(store, row_model)
            print(f"{store} ({args.component}), sha256 {goldset.sha256[:12]}")
            print(curation.describe_stats(curation.stats(goldset)))
        else:
            if args.top < 0:
                print(f"error: --top must be 0 or more, got {args.top}", file=sys.stderr)
                return 2
            suspects = curation.audit(args.component, args.run)
            print(f"{len(suspects)} gold row(s) that baseline and calibrated both contradict in at least one of {len(args.run)} run(s); "
                  "re-check them by hand (nothing is changed):")
            for s in suspects[: args.top]:
                print(f"  {s.id}: gold {s.gold}; both wrong in {s.both_wrong}/{s.runs} run(s), mean |error| {s.mean_error:.2f}; "
                      f"baseline/calibrated: {', '.join(s.predictions)}")
    except GoldSetError as e:
        problems(e, getattr(args, "file", store))
        rejected = getattr(e, "rejected", None)
        if rejected is not None:
            print(f"added 0, updated 0, unchanged 0, rejected {rejected}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
