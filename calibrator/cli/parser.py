"""The command line's shape: the components' default files, the examples `--help` shows, and the argparse tree of `run`,
`eval`, `extract`, `review`, `goldset` and `serve` (component choices come from the registry, components/__init__.py)."""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from calibrator.lm.policy import CallPolicy
    from calibrator.lm.spec import LMSpec

DESCRIPTION = ("calibrate a component's prompt against a gold set, score a prompt as it is, extract training targets "
               "from expert logs, or serve the calibrated grader as a reward")



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
  python -m calibrator serve --lm openai:gpt-4o-mini --port 8000     # the grader as a reward for OpenRLHF, TRL, verl
  python -m calibrator suggest --from .cache/served/grader.jsonl --n 20 -o suggested.xlsx   # what to label next

Every LM answer is cached under --cache-dir: re-running a finished command makes no LM calls, and a
command killed half-way resumes from its last answer. API keys are read from OPENAI_API_KEY /
ANTHROPIC_API_KEY only and never written anywhere.
"""


SERVE_EPILOG = """\
examples:
  python -m calibrator serve --lm openai:gpt-4o-mini --prompt prompts/grader.calibrated.yaml --port 8000
  python -m calibrator serve --allow-below-gate --port 0        # the embedded model's judge, below the gate (said in /health)
  curl -s localhost:8000/get_reward -d '{"query": ["<prompt>Any fever?"], "prompts": ["<prompt>"],
       "labels": ["{\\"decision\\": \\"continue\\", \\"target_info\\": [\\"fever: none\\"]}"]}'
  python -m calibrator review --graded .cache/served/grader.jsonl --n 60 -o served-review.xlsx
"""


LOGS_EPILOG = """\
log formats:
  RealMedConv JSONL, one session per line:
    {"session_id": "s1", "diagn": "...", "messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}]}
  transcript JSONL or CSV, one message per line: dialogue_id, turn, speaker (patient/pharmacist/...), text

A malformed session is reported with its line number and skipped; the others are processed.
"""

EXTRACT_EXAMPLES = """
examples:
  python -m calibrator extract --logs sessions.jsonl --out samples.jsonl
  python -m calibrator extract --logs sessions.jsonl --out samples.jsonl --lm openai:gpt-4o-mini --concurrency 32 --rpm 5000
  python -m calibrator extract --logs sessions.jsonl --out part1.jsonl --shard 1/4     # and 2/4, 3/4, 4/4 elsewhere
  python -m calibrator extract merge part1.jsonl part2.jsonl part3.jsonl part4.jsonl --out samples.jsonl
  python -m calibrator extract --logs sessions.jsonl --out trial.jsonl --limit 100    # a trial on the first 100 sessions
"""


def call_policy(args: argparse.Namespace, spec: "LMSpec") -> "CallPolicy":
    """--concurrency/--rpm/--tpm as the engine's policy (the backend's default concurrency when not given)."""
    from calibrator.lm.policy import CallPolicy, default_concurrency

    for flag, value in (("--concurrency", args.concurrency), ("--rpm", args.rpm), ("--tpm", args.tpm)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} {value:g}: must be at least 1")
    return CallPolicy(concurrency=args.concurrency or default_concurrency(spec), rpm=args.rpm, tpm=args.tpm)


def build() -> argparse.ArgumentParser:
    from calibrator.components import COMPONENTS, DEFAULT_COMPONENT
    from calibrator.lm.policy import API_CONCURRENCY, LOCAL_MAX_SLOTS, LOCAL_SLOTS
    from calibrator.lm.spec import SPEC_HELP
    from calibrator.calibration.optimize import BUDGETS
    from calibrator.reward.gate import MIN_HELDOUT, MIN_QWK

    top = argparse.ArgumentParser(prog="python -m calibrator", description=DESCRIPTION, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="{run,eval,extract,review,goldset,serve,suggest}")

    def lm_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--lm", default="local", metavar="SPEC", help=SPEC_HELP)
        p.add_argument("--seed", type=int, default=0, help="seed for splits' bootstrap, the optimizers and the LM sampler (default: 0)")
        p.add_argument("--cache-dir", type=Path, default=Path(".cache"), help="LM call cache (default: .cache)")
        p.add_argument("--no-progress", action="store_true", help="no progress bars (for logs and CI)")
        p.add_argument("--concurrency", type=int, metavar="N",
                       help=f"LM calls in flight at once, for every step: evaluation, MIPROv2/GEPA, extraction (default: "
                            f"{API_CONCURRENCY} for API backends, {LOCAL_SLOTS} for the embedded model, which then serves N "
                            f"slots, at most {LOCAL_MAX_SLOTS}). Results are identical to a sequential run; on 429/503 the "
                            "engine halves what is in flight and grows it back on success")
        p.add_argument("--rpm", type=float, metavar="N", help="at most N requests per minute (your provider's rate limit)")
        p.add_argument("--tpm", type=float, metavar="N",
                       help="at most N tokens per minute (prompt estimated at 4 characters a token, plus max_tokens)")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--component", choices=sorted(COMPONENTS), default=DEFAULT_COMPONENT,
                       help=f"which LLM component (default: {DEFAULT_COMPONENT}): "
                            + "; ".join(f"{name}: {c.help_line}" for name, c in sorted(COMPONENTS.items())))
        p.add_argument("--goldset", type=Path, help="gold set, .csv or .xlsx (default: goldsets/<component>.csv)")
        p.add_argument("--out", type=Path, default=Path("reports"), help="where run folders go (default: reports)")
        p.add_argument("--prices", type=Path, metavar="FILE",
                       help="USD per 1M tokens for API models, YAML keyed as --lm spells each model, `openai:MODEL: {input: .., output: ..}`, "
                            "on top of calibrator/lm/prices.py")
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
    run.add_argument("--compare-reasoning", action=argparse.BooleanOptionalAction, default=None,
                     help="also score every candidate prompt reasoning before it answers (DSPy's ChainOfThought, as the "
                          "reference's judge does) on val, and keep it if it wins (default: from --budget medium on)")
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
                                         "and run the extractor on each, --concurrency at a time. It streams: memory stays flat "
                                         "whatever the log's size. Killed half-way (even kill -9) and started again, it continues "
                                         "where it stopped; the output file appears only when complete, in log order, with "
                                         "<out>.manifest.json beside it. Split a big log across processes or machines with "
                                         "--shard I/N and join the pieces with `extract merge`.",
                             epilog=LOGS_EPILOG + EXTRACT_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    ex.add_argument("--logs", type=Path, help="RealMedConv JSONL, a transcript .jsonl/.csv (dialogue_id, turn, speaker, text), or a "
                    "public corpus: a PriMock57 folder, an MTS-Dialog CSV, a ReMeDi file")
    ex.add_argument("--stop-rule", choices=("end", "advice"), default="end",
                    help="where a session's stop point is: end (default; the expert's last run, as in a pharmacy chat) or "
                         "advice (the expert's first run after their last question: consultations that go on advising)")
    ex.add_argument("--context-cut", choices=("history", "round"), default="history",
                    help="each sample's context: history (default; the whole dialogue before the cut, as the paper "
                         "defines it) or round (only the patient's last messages, as one version of the reference code)")
    ex.add_argument("--out", type=Path, help="samples JSONL to write (id, session_id, context, future, target_info, decision)")
    ex.add_argument("--format", choices=("ours", "reference"), default="ours",
                    help="the samples' shape: ours (default) or the Learn-to-Ask reference's processed samples (cid, "
                         "session_id, diagn, messages, remaining_chat, decision_truth, info_truth, plus the provenance "
                         "keys a resume needs); `train run --samples` and `train eval --samples` read either")
    ex.add_argument("--prompt", type=Path, help="extractor prompt (default: prompts/extractor.calibrated.yaml if present, else prompts/extractor.yaml)")
    ex.add_argument("--shard", metavar="I/N",
                    help="only the sessions of shard I of N (1 <= I <= N), chosen by a hash of the session id: every process "
                         "given the same log and N agrees, and no session is in two shards")
    ex.add_argument("--sessions", type=Path, metavar="FILE", help="only the session ids listed in FILE, one per line")
    ex.add_argument("--limit", type=int, metavar="N", help="only the first N selected sessions (a trial run on a big log)")
    lm_flags(ex)
    merge = ex.add_subparsers(dest="task", metavar="{merge}").add_parser(
        "merge", help="join the outputs of `extract --shard I/N` into one file in log order",
        description="Check that the shard files are one whole extraction (same log, prompt and LM; every shard 1..N exactly "
                    "once; every record in its own shard, none twice, counts as their manifests say) and join them in log order.")
    merge.add_argument("shards", type=Path, nargs="+", metavar="SHARD", help="the --out file of each `extract --shard I/N`")
    merge.add_argument("--out", type=Path, required=True, dest="merged_out", metavar="FILE", help="the merged samples JSONL to write")

    rv = commands.add_parser("review", help="export a run's disagreements and a sample of its agreements, shuffled, to adjudicate blind",
                             description="Write every row of the run's predictions.csv (every split) where the prediction differs "
                                         "from gold, plus a random sample of rows where it agrees (drawn from every split), "
                                         "shuffled together, to a spreadsheet in the gold-set column contract with empty "
                                         "adjudicated_label / adjudication_note columns. The run's columns (split, prediction, "
                                         "error) come last: in an XLSX a column group collapsed by default, so the reviewer "
                                         "labels blind; in a CSV plain last columns to hide. Rows keep their ids (so their "
                                         "splits): fill in the wrong labels, leave the right ones empty, and bring the file "
                                         "back with `goldset add`; an untouched row comes back unchanged.")
    rv.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="a run folder, e.g. reports/<run-id>")
    rv.add_argument("--graded", type=Path, metavar="LOG",
                    help="instead of a run: the log of `calibrator serve` (--log); draws --n of the gradings the judge made, "
                         "stratified by its content score and by training step, into a blind review sheet of policy outputs")
    rv.add_argument("--n", type=int, default=60, help="with --graded: rows to draw (default: 60)")
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
    component = {"choices": sorted(COMPONENTS), "default": DEFAULT_COMPONENT, "help": f"which component's gold set (default: {DEFAULT_COMPONENT})"}
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
    sv = commands.add_parser(
        "serve", help="serve the calibrated grader as a reward over HTTP (OpenRLHF's /get_reward, a typed /grade)",
        description="Serve the grader's reward, gated as `python -m train run` gates it: OpenRLHF's remote reward protocol at "
                    "POST /get_reward (--remote_rm_url http://HOST:PORT/get_reward), a typed POST /grade, GET /health and "
                    "GET /judge (the calibration record, the gate's outcome and the judge's agreement on the policy's own "
                    "outputs). Every grading is appended to --log for `calibrator review --graded LOG`.",
        epilog=SERVE_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sv.add_argument("--component", choices=["grader"], default="grader", help="only the grader is a reward (default: grader)")
    sv.add_argument("--prompt", type=Path, default=Path("prompts/grader.calibrated.yaml"),
                    help="the calibrated grader prompt (default: prompts/grader.calibrated.yaml)")
    sv.add_argument("--fusion", choices=("default", "sum", "content", "stop"), default="default",
                    help="how the terms combine (default: default, R_stop * (1 + 2 R_content) + R_format)")
    sv.add_argument("--target-scope", choices=("next", "rest"), default="next", help="the targets' scope the prompt must grade (default: next)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    sv.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port, printed)")
    sv.add_argument("--log", type=Path, default=Path(".cache/served/grader.jsonl"),
                    help="every grading, one JSON line (default: .cache/served/grader.jsonl)")
    sv.add_argument("--log-max-mb", type=float, default=50.0, help="rotate the log past this size (default: 50)")
    sv.add_argument("--log-backups", type=int, default=5, help="rotated logs kept (default: 5)")
    sv.add_argument("--policy-goldset", type=Path, metavar="PATH",
                    help="labelled policy outputs (`review --graded`, then `goldset add --goldset PATH`): the judge's agreement "
                         "on them is shown beside its seed agreement, and /health warns when it is below the gate")
    sv.add_argument("--allow-below-gate", action="store_true", help="serve a judge whose held-out agreement fails the gate (said in /health)")
    sv.add_argument("--accept-newer-goldset", action="store_true", help="accept a calibration made on an earlier version of its gold set")
    sv.add_argument("--allow-uncalibrated", action="store_true", help="serve a prompt without a calibration record (said in /health)")
    sv.add_argument("--min-qwk", type=float, default=MIN_QWK, help=f"the gate: lower end of the held-out qwk CI (default: {MIN_QWK})")
    sv.add_argument("--min-heldout", type=int, default=MIN_HELDOUT, help=f"the gate: held-out rows at least (default: {MIN_HELDOUT})")
    sv.add_argument("--max-body-mb", type=float, default=32.0, help="larger request bodies are refused with 413 (default: 32)")
    sv.add_argument("--max-batch", type=int, default=4096, help="responses or candidates in one request at most (default: 4096)")
    sv.add_argument("--check", action="store_true", help="load, gate and measure the judge, print what /judge would answer, and exit")
    lm_flags(sv)

    sg = commands.add_parser(
        "suggest", help="rank unlabelled grader rows by how much labelling them would tell about the judge",
        description="Rank the judge's gradings in a served log (or the experts' turns in a samples file) by four signals, each "
                    "0-1: judge and similarity floor disagreeing; the floors' own evidence split (similarity near a cut, "
                    "neighbours voting both ways); a label the gold set holds few rows of; a target field it holds few rows "
                    "of. The top N not already in the gold set are written as a sheet ready for `goldset add`, the reasons "
                    "in hidden columns. They are where the judge is likely wrong (demonstrations, re-calibration), chosen on "
                    "purpose: measured on the shipped gold set, labelling them narrows the judge's held-out interval more "
                    "slowly than labelling at random and biases its agreement down; to measure the judge, label a random "
                    "draw (`review --graded`).")
    sg.add_argument("--component", choices=["grader"], default="grader", help="only the grader (default: grader)")
    source = sg.add_mutually_exclusive_group(required=True)
    source.add_argument("--from", dest="source", type=Path, metavar="LOG|SAMPLES",
                        help="a `calibrator serve` log (JSON lines of gradings) or a samples file of `calibrator extract`")
    sg.add_argument("--n", type=int, default=20, help="rows to suggest (default: 20)")
    sg.add_argument("--goldset", type=Path, default=Path("goldsets/grader.csv"), help="the gold set to grow (default: goldsets/grader.csv)")
    sg.add_argument("-o", "--output", type=Path, default=Path("suggested.xlsx"), help="suggested.xlsx (default) or a .csv")
    sg.add_argument("--seed", type=int, default=0, help="breaks ties at random (default: 0)")
    return top


