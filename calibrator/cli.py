"""`python -m calibrator`: calibrate a component's prompt against a gold set, score a prompt as it is, or
extract training targets from expert logs."""

import argparse
import logging
import sys
import warnings
from contextlib import ExitStack
from pathlib import Path

from calibrator.goldset import GoldSetError, load_goldset

COMPONENT_NAMES = ("extractor", "grader")


def default_paths(component: str) -> dict[str, Path]:
    return {"goldset": Path(f"goldsets/{component}.csv"), "prompt": Path(f"prompts/{component}.yaml"),
            "calibrated": Path(f"prompts/{component}.calibrated.yaml")}


EPILOG = """\
examples:
  python -m calibrator run --component grader                       # offline, embedded SmolLM2, budget light
  python -m calibrator run --component grader --lm openai:gpt-4o-mini --optimizer mipro --budget medium
  python -m calibrator run --component grader --lm openai-compatible:qwen2.5-7b@http://127.0.0.1:8000/v1
  python -m calibrator eval --component grader --prompt prompts/grader.calibrated.yaml
  python -m calibrator run --component extractor                    # calibrate the extractor the same way
  python -m calibrator extract --logs sessions.jsonl --out samples.jsonl
  python -m calibrator review reports/<run-id> -o review.xlsx        # disagreements + agreements, shuffled, to adjudicate blind
  python -m calibrator goldset template --component grader -o new.xlsx
  python -m calibrator goldset add new.xlsx --component grader      # also takes an adjudicated review.xlsx

Every LM answer is cached under --cache-dir: re-running a finished command makes no LM calls, and a
command killed half-way resumes from its last answer. API keys are read from OPENAI_API_KEY /
ANTHROPIC_API_KEY only and never written anywhere.
"""


def _parser() -> argparse.ArgumentParser:
    from calibrator.lm.spec import SPEC_HELP
    from calibrator.optimize import BUDGETS

    top = argparse.ArgumentParser(prog="python -m calibrator", description=__doc__, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="{run,eval,extract,review,goldset}")

    def lm_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--lm", default="local", metavar="SPEC", help=SPEC_HELP)
        p.add_argument("--seed", type=int, default=0, help="seed for splits' bootstrap, the optimizers and the LM sampler (default: 0)")
        p.add_argument("--cache-dir", type=Path, default=Path(".cache"), help="LM call cache (default: .cache)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and CI)")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--component", choices=COMPONENT_NAMES, default="grader", help="which LLM component (default: grader)")
        p.add_argument("--goldset", type=Path, help="gold set, .csv or .xlsx (default: goldsets/<component>.csv)")
        p.add_argument("--out", type=Path, default=Path("reports"), help="where run folders go (default: reports)")
        p.add_argument("--prices", type=Path, metavar="FILE",
                       help="USD per 1M tokens for API models, YAML `model: {input: .., output: ..}`, on top of calibrator/lm/prices.py")
        lm_flags(p)

    run = commands.add_parser("run", help="calibrate: search prompts on train/val, judge on test, save the winner",
                              description="Calibrate a component's prompt: score the baseline, search on train/val, judge the winner on the held-out test split, save it under prompts/ and write reports/<run-id>/.",
                              epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(run)
    run.add_argument("--optimizer", choices=("auto", "mipro", "gepa", "knn", "threshold"), default="auto",
                     help="auto: the strategies the budget affords, best on val wins (default; from --budget light on, "
                          "also each strategy + threshold where the component has an ordinal label); mipro: DSPy MIPROv2; "
                          "gepa: DSPy GEPA with ordinal feedback; knn: demonstrations retrieved per input; threshold: read the "
                          "label's probabilities from token log-probabilities and fit the rule that decides it (argmax, prior "
                          "correction or cut points, chosen by cross-validation on train)")
    run.add_argument("--budget", choices=list(BUDGETS), default="light",
                     help="smoke: tiny, for tests; light: minutes on a laptop CPU (default); medium/heavy: more search")
    run.add_argument("--prompt", type=Path, help="baseline prompt (default: prompts/<component>.yaml)")
    run.add_argument("--proposer-lm", metavar="SPEC",
                     help="LM that writes instruction candidates (mipro) and reflections (gepa); a stronger model than "
                          "the one being calibrated usually proposes better prompts (default: the --lm model)")
    run.add_argument("--save-prompt", type=Path, metavar="PATH",
                     help="where the calibrated prompt goes (default: prompts/<component>.calibrated.yaml, except after a "
                          "--budget smoke run or a `worse` verdict; naming a PATH saves it even then; the baseline is never overwritten)")

    ev = commands.add_parser("eval", help="score one prompt on the gold rows it was not built from, no optimisation",
                             description="Score one prompt (the baseline by default) on every row of a gold set except the rows "
                                         "it carries as demonstrations or retrieval pool (counted and named). The headline is "
                                         "the test split; a prompt calibrated on another version of the gold set is flagged "
                                         "with the rows that changed since.",
                             epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common(ev)
    ev.add_argument("--prompt", type=Path, help="prompt to score (default: prompts/<component>.yaml)")

    ex = commands.add_parser("extract", help="segment expert logs and extract a (micro-goal, stop) target for every pharmacist run",
                             description="Cut every session of an expert log into Learn-to-Ask samples (one per pharmacist run "
                                         "after the patient has spoken: full history as context, the run and the rest as future) "
                                         "and run the extractor on each. Killed half-way and started again, it continues where it "
                                         "stopped; the output file appears only when complete.",
                             epilog=LOGS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("--logs", type=Path, required=True, help="RealMedConv JSONL, or a transcript .jsonl/.csv (dialogue_id, turn, speaker, text)")
    ex.add_argument("--out", type=Path, required=True, help="samples JSONL to write (id, session_id, context, future, target_info, decision)")
    ex.add_argument("--prompt", type=Path, help="extractor prompt (default: prompts/extractor.calibrated.yaml if present, else prompts/extractor.yaml)")
    lm_flags(ex)

    rv = commands.add_parser("review", help="export a run's disagreements and a sample of its agreements, shuffled, to adjudicate blind",
                             description="Write every row of the run's predictions.csv (every split) where the prediction differs "
                                         "from gold, plus a random sample of rows where it agrees (drawn from every split), "
                                         "shuffled together, to a spreadsheet in the gold-set column contract with empty "
                                         "adjudicated_label / adjudication_note columns. The run's columns (split, prediction, "
                                         "error) come last: in an XLSX a column group collapsed by default, so the reviewer "
                                         "labels blind; in a CSV plain last columns to hide. Rows keep their ids (so their "
                                         "splits): fill in the wrong labels, leave the right ones empty, and bring the file "
                                         "back with `goldset add`; an untouched row comes back unchanged.")
    rv.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a run folder, e.g. reports/<run-id>")
    rv.add_argument("-o", "--output", type=Path, default=Path("review.xlsx"), help="review.xlsx (default) or a .csv")
    rv.add_argument("--agreements", type=int, metavar="N",
                    help="how many agreeing rows to mix in (default: as many as the disagreements; 0: disagreements only)")
    rv.add_argument("--seed", type=int, default=0, help="seed of the agreement sample and the shuffle (default: 0)")
    rv.add_argument("--goldset", type=Path, metavar="PATH",
                    help="the gold set the rows are read from, so notes and annotator columns round-trip "
                         "(default: the gold set recorded in the run's run.json)")

    gs = commands.add_parser("goldset", help="make, add to, check and describe gold sets as spreadsheets",
                             description="Gold sets are spreadsheets people fill in: get a template, add the filled file, "
                                         "check a file, describe the gold set, or list labels worth a second look.")
    tasks = gs.add_subparsers(dest="task", required=True, metavar="{template,add,validate,stats,audit}")
    component = {"choices": COMPONENT_NAMES, "default": "grader", "help": "which component's gold set (default: grader)"}
    t = tasks.add_parser("template", help="write an .xlsx template: data sheet with dropdowns, instructions sheet with the rubric")
    t.add_argument("--component", **component)
    t.add_argument("-o", "--output", type=Path, required=True, help="the .xlsx to write")
    a = tasks.add_parser("add", help="validate a filled spreadsheet and merge it into goldsets/<component>.csv",
                         description="Validate every row of FILE (.xlsx: every sheet with the contract's header, or --sheet; or .csv). "
                                     "If any row is bad, nothing is written and every problem is listed. Otherwise new rows are "
                                     "appended, rows with a known id and changed labels are updated (this is how an adjudicated "
                                     "review.xlsx comes back), rows already present are skipped, and the previous file is kept "
                                     "as <name>.csv.bak.")
    a.add_argument("file", type=Path, metavar="FILE")
    a.add_argument("--component", **component)
    a.add_argument("--sheet", help="read only this sheet of an .xlsx")
    a.add_argument("--goldset", type=Path, help="the gold set to add to (default: goldsets/<component>.csv)")
    a.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    v = tasks.add_parser("validate", help="check a file against the contract and describe it, write nothing")
    v.add_argument("file", type=Path, metavar="FILE")
    v.add_argument("--component", **component)
    v.add_argument("--sheet", help="read only this sheet of an .xlsx")
    st = tasks.add_parser("stats", help="labels, splits, duplicates, annotator agreement of a gold set")
    st.add_argument("--component", **component)
    st.add_argument("--goldset", type=Path, help="default: goldsets/<component>.csv")
    au = tasks.add_parser("audit", help="gold rows that baseline and calibrated prompts both contradict, across runs",
                          description="List gold rows where both the baseline and the calibrated prompt disagree with the gold "
                                      "label, ranked by in how many of the given runs (e.g. several seeds) that happens and by how "
                                      "much. Nothing is changed: these are candidates for a human to re-check.")
    au.add_argument("--component", **component)
    au.add_argument("--run", type=Path, action="append", required=True, metavar="RUN_DIR", help="a run folder; repeat for several seeds")
    au.add_argument("--top", type=int, default=20, help="how many to list (default: 20)")
    return top


LOGS_EPILOG = """\
log formats:
  RealMedConv JSONL, one session per line:
    {"session_id": "s1", "diagn": "...", "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
  transcript JSONL or CSV, one message per line: dialogue_id, turn, speaker (patient/pharmacist/...), text

A malformed session is reported with its line number and skipped; the others are processed.
"""


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("dspy", "LiteLLM", "litellm", "httpx", "optuna", "sentence_transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "extract":
        return _extract(args)
    if args.command == "review":
        return _review(args)
    if args.command == "goldset":
        return _goldset(args)
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

    from calibrator.lm import LMSpec, LMSpecError, open_lm
    from calibrator.lm.local import ModelMissingError
    from calibrator.lm.prices import load_prices
    from calibrator.prompt import load_prompt
    from calibrator.runs import HeldOutLeakError, RunRequest, command_line, execute, unsaved_reason

    _quiet()
    try:
        spec = LMSpec.parse(args.lm)
        proposer_spec = LMSpec.parse(args.proposer_lm) if getattr(args, "proposer_lm", None) else None
        base = load_prompt(prompt_path)
        load_prices(args.prices)
    except (LMSpecError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if base.component != component.name:
        print(f"error: {prompt_path} is a {base.component} prompt, not a {component.name} prompt", file=sys.stderr)
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
    )
    try:
        with ExitStack() as stack:
            lm = stack.enter_context(open_lm(spec, cache_dir=args.cache_dir, seed=args.seed))
            proposer = stack.enter_context(open_lm(proposer_spec, cache_dir=args.cache_dir, seed=args.seed)) if proposer_spec else None
            record, folder = execute(request, component, goldset, base, lm, proposer)
    except HeldOutLeakError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (ModelMissingError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: nothing half-written; run the same command again to resume from the cached LM answers", file=sys.stderr)
        return 130
    u = record.usage
    print(record.verdict)
    for note in (record.optimization or {}).get("notes", []):
        print(f"decision rule: {note}")
    if record.floor is not None:
        floor = record.floors[record.floor]
        print(f"model-free floor: {record.floor}, {floor.description}; fitted on {len(floor.fitted_on)} train rows, no LM call")
    for warning in record.warnings:
        print(f"warning: {warning}")
    print(f"{u.lm_calls} LM calls, {u.cache_hits} cache hits, {u.prompt_tokens} prompt + {u.completion_tokens} completion tokens, "
          f"{record.wall_seconds:.1f} s")
    print(f"report: {folder / 'index.html'}")
    if record.saved_prompt is not None:
        print(f"calibrated prompt: {record.saved_prompt}")
    elif request.calibrated_path is not None:
        print(f"calibrated prompt not saved to {request.calibrated_path}: {unsaved_reason(request, record)} "
              f"(it is in {folder / 'prompt.calibrated.yaml'}; --save-prompt PATH keeps it anyway)")
    return 0


def _extract(args: argparse.Namespace) -> int:
    from calibrator.extract import default_prompt, extract_samples
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
    if prompt.component != "extractor":
        print(f"error: {prompt_path} is a {prompt.component} prompt, not an extractor prompt", file=sys.stderr)
        return 2
    for problem in logs.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    samples = segment_all(logs.sessions)
    note = "" if prompt.calibration else " (not calibrated: run `python -m calibrator run --component extractor` first)"
    print(f"{len(logs.sessions)} sessions read, {logs.skipped} skipped; {len(samples)} samples; LM {spec}; "
          f"prompt {prompt_path} (content sha256 {prompt.content_sha256()[:12]}){note}")
    _quiet()
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


def _review(args: argparse.Namespace) -> int:
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
        _problems(e, Path(e.problems[0].file))
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


def _problems(e: GoldSetError, file: Path) -> None:
    print(f"error: {file} has {len(e.problems)} problem(s); nothing was written:", file=sys.stderr)
    print(e, file=sys.stderr)


def _goldset(args: argparse.Namespace) -> int:
    from calibrator import curation
    from calibrator.components import COMPONENTS

    row_model = COMPONENTS[args.component].row_model
    store = getattr(args, "goldset", None) or default_paths(args.component)["goldset"]
    try:
        if args.task == "template":
            from calibrator.template import write_template

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
            suspects = curation.audit(args.component, args.run)
            print(f"{len(suspects)} gold row(s) that baseline and calibrated both contradict in at least one of {len(args.run)} run(s); "
                  "re-check them by hand (nothing is changed):")
            for s in suspects[: args.top]:
                print(f"  {s.id}: gold {s.gold}; both wrong in {s.both_wrong}/{s.runs} run(s), mean |error| {s.mean_error:.2f}; "
                      f"baseline/calibrated: {', '.join(s.predictions)}")
    except GoldSetError as e:
        _problems(e, getattr(args, "file", store))
        rejected = getattr(e, "rejected", None)
        if rejected is not None:
            print(f"added 0, updated 0, unchanged 0, rejected {rejected}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
