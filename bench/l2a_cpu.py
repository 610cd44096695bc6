"""Learn-to-Ask on real expert dialogues, on this CPU: base vs trained policy on held-out sessions.

    .venv/bin/python bench/l2a_cpu.py [--logs PATH] [--config train/configs/cpu-learn.yaml] [--out runs/l2a-bench]

Runs the one command, `python -m train run --config CONFIG --out OUT` (samples from the logs, the warm start, GRPO,
the held-out eval), timing each stage from its output; then `python -m train eval --model OUT --logs TEST` on sessions of a corpus
file training never read (the held-out sessions of the training file are looked at after every run, so choices
between runs are made on them; the test file is not); then `python -m train eval --model OUT --base OUT/warm_start/final` to
separate what GRPO added from what the warm start gave. Prints termination, continue and decision accuracy, stop
discrimination (ROC AUC of the policy's P(<stop)) and mean format with their 95% session-bootstrap CIs and paired
verdicts, P(<stop) per side, the per-step time split (generation / reward / update) and the share of GRPO groups
with zero reward variance over the run. Goal (issue 15): termination accuracy improves with a paired 95% CI above 0
and decision accuracy does not get worse. Resumable: run it again with the same
--out and finished stages are reused.
With --methods grpo,sft,dpo the paper's baselines are trained on the same samples (OUT-sft, OUT-dpo) and one table
puts base, SFT, DPO and Learn-to-Ask side by side under the reference's metric names, greedy and sampled.
With a config that grades content (train/configs/cpu-content.yaml), --judge NAME grades the held-out rollouts again with
a judge other than the reward's and reads the goal on what to ask from it (good-question rate improved with a paired 95%
CI above 0, decision accuracy not worse); --review N exports N of those rollouts blind, and once they are labelled and
added to the grader's gold set a second run of the bench (everything cached) prints the figures corrected by the labels.
Data: MTS-Dialog (Ben Abacha et al., EACL 2023; CC BY 4.0) by default, read from ../shared/data.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("good_question_rate", "mean_content", "termination_accuracy", "continue_accuracy", "decision_accuracy", "stop_discrimination", "mean_format",
           "mean_reward")
REFERENCE = {"good_question_rate": "win content", "mean_content": "mean content", "termination_accuracy": "stop acc",
             "continue_accuracy": "continue acc", "decision_accuracy": "total acc", "mean_format": "format",
             "mean_reward": "reward"}
STAGES = (("samples", ""), ("warm start", "warm start:"), ("GRPO", "format term:"),
          ("eval", re.compile(r"^(trained \d+ steps|training: done already)")), ("done", re.compile(r"^wrote ")))


def run(command: list[str]) -> dict[str, float]:
    """Runs the command with its output shown; the time at which each stage's first line appeared."""
    seen: dict[str, float] = {}
    started = time.perf_counter()
    with subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            for stage, marker in STAGES:
                found = marker.search(line) if isinstance(marker, re.Pattern) else marker in line
                if found and stage not in seen:
                    seen[stage] = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"{' '.join(command)} failed with exit code {proc.returncode}")
    seen["end"] = time.perf_counter() - started
    return seen


def table(result: dict, title: str) -> None:
    print(f"\n{title}")
    rows = {c["name"]: c for c in result["comparison"]}
    for name in METRICS:
        c = rows[name]
        if c["base"] is None:
            print(f"  {name:22} not measured")
            continue
        ci = lambda v: "" if v is None else f" [{v[0]:.2f}, {v[1]:.2f}]"  # noqa: E731
        delta = "" if c["delta_ci"] is None else f"{c['delta']:+.2f} [{c['delta_ci'][0]:+.2f}, {c['delta_ci'][1]:+.2f}]"
        print(f"  {name:22} {c['base']:.2f}{ci(c['base_ci'])} → {c['trained']:.2f}{ci(c['trained_ci'])}  Δ {delta}  "
              f"{c['verdict']} (n={c['n']}, {c['sessions']} sessions)")


def paper_table(results: dict[str, dict]) -> None:
    """The paper's table: one row per policy (the base, then each method's trained policy, all on the same held-out
    samples), the reference's metrics as columns; greedy decoding, and the sampled rollouts when the eval drew them."""
    if not results:
        return
    names = {"sft": "SFT", "dpo": "DPO", "grpo": "Learn-to-Ask (GRPO)"}
    first = next(iter(results.values()))
    for decoding in ("greedy", "sampled"):
        if decoding == "sampled" and first.get("sampled") is None:
            continue
        block = (lambda r: r) if decoding == "greedy" else (lambda r: r["sampled"])
        columns = [k for k in REFERENCE if block(first)["base"].get(k) is not None]
        print(f"\nthe paper's table, {decoding}: " + " | ".join(f"{REFERENCE[k]}" for k in columns))
        cell = lambda v: f"{v:>10.3f}" if v is not None else f"{'-':>10}"  # noqa: E731
        print(f"  {'base':22}" + "".join(cell(block(first)['base'][k]) for k in columns))
        for method, result in results.items():
            verdicts = {c["name"]: c["verdict"] for c in block(result)["comparison"]}
            print(f"  {names[method]:22}" + "".join(cell(block(result)['trained'][k]) for k in columns)
                  + "   vs base: " + ", ".join(f"{REFERENCE[k]} {verdicts.get(k, '-')}" for k in columns if k in verdicts))


def stop_mass(result: dict, title: str) -> None:
    """How much probability each side puts on `<stop`, and how greedy decoding turns it into stops."""
    print(f"\n{title}: P(<stop) per side")
    for side, scores in result["scores"].items():
        if any(s.get("p_stop") is None for s in scores):
            continue
        by = {d: [s["p_stop"] for s in scores if s["expert"] == d] for d in ("stop", "continue")}
        said = sum(s["predicted"] == "stop" for s in scores)
        print(f"  {side:8} mean on stop samples {statistics.fmean(by['stop']):.3f}, on continue samples "
              f"{statistics.fmean(by['continue']):.3f}; above 0.5 on {sum(p > 0.5 for p in by['stop'] + by['continue'])} "
              f"of {len(scores)} samples ({sum(p > 0.5 for p in by['stop'])} of them stop samples); greedy said <stop /> "
              f"on {said}")


def steps(metrics_file: Path) -> None:
    lines = [json.loads(line) for line in metrics_file.read_text().splitlines() if line.strip()]
    if not lines:
        return
    third = max(1, len(lines) // 3)
    print(f"\nGRPO steps: {len(lines)}; first third vs last third (means):")
    for key in ("zero_variance_groups", "completions/stop_share", "reward", "completions/mean_length", "step_seconds",
                "generation_seconds", "reward_seconds", "update_seconds"):
        values = [line[key] for line in lines if key in line]
        if values:
            print(f"  {key:24} {statistics.fmean(values[:third]):8.3f} → {statistics.fmean(values[-third:]):8.3f}  "
                  f"(median {statistics.median(values):.3f})")


def judged(args: argparse.Namespace, baselines: dict[str, dict]) -> None:
    """The held-out rollouts graded by a judge other than the reward's (each method's), with the review export, and the
    goal on what to ask: the good-question rate improved with a paired 95% CI above 0 by that judge and, once a labelled
    review exists, after the PPI correction; decision accuracy not worse."""
    results = {}
    for method, folder in {**{m: args.out.with_name(f"{args.out.name}-{m}") for m in baselines}, "grpo": args.out}.items():
        command = [sys.executable, "-m", "train", "eval", "--model", str(folder), "--judge", args.judge]
        command += ["--goldset", str(args.goldset)] if args.goldset else []
        exported = (folder / "review.json").is_file()  # a second run of the bench reads the labels, exports nothing
        run(command + (["--review", str(args.review)] if args.review and method == "grpo" and not exported else []))
        results[method] = json.loads((folder / f"eval.judge-{args.judge}.json").read_text())
    judge = results["grpo"]["judge"]
    print(f"\ncontent judged by {args.judge}, " + (f"not the reward's judge ({judge['reward']}):"
          if judge["other_than_reward"] else "the reward's own judge: the policy was trained on it"))
    paper_table(results)
    result = results["grpo"]
    for decoding, block in (("greedy", result), ("sampled", result.get("sampled"))):
        if block is None:
            continue
        by = {c["name"]: c for c in block["comparison"]}
        good, decision = by["good_question_rate"], by["decision_accuracy"]
        met = good["verdict"] == "improved" and decision["verdict"] != "worse"
        shown = ("not measured" if good["base"] is None else f"{good['base']:.2f} → {good['trained']:.2f}, {good['delta']:+.2f}"
                 + ("" if good["delta_ci"] is None else f" [{good['delta_ci'][0]:+.2f}, {good['delta_ci'][1]:+.2f}]"))
        print(f"goal ({decoding}, judge {args.judge}, session bootstrap): {'met' if met else 'NOT met'}: good-question rate "
              f"{shown} {good['verdict']}; decision accuracy {decision['verdict']}")
    corrected = result.get("corrected")
    if not corrected:
        print(f"no labelled review yet: label {args.out / 'review.xlsx'}, `python -m calibrator goldset add` it to the "
              f"grader's gold set, and run this bench again for the corrected figures")
        return
    for side in ("base", "trained"):
        f = corrected["figures"][side]["good_question_rate"]
        print(f"  {side:8} good-question rate: judge {f['judge']:.2f}, corrected {f['corrected']:.2f} "
              f"[{f['ci'][0]:.2f}, {f['ci'][1]:.2f}] ({f['labelled']} labels)")
    d = corrected["differences"]["good_question_rate"]
    decision = next(c for c in (result.get("sampled") or result)["comparison"] if c["name"] == "decision_accuracy")
    met = d["verdict"] == "improved" and decision["verdict"] != "worse"
    print(f"goal after the PPI correction ({corrected['source']} rollouts): {'met' if met else 'NOT met'}: trained - base "
          f"{d['delta']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}] {d['verdict']}; decision accuracy {decision['verdict']}")
    qwk = "–" if corrected["policy_qwk"] is None else f"{corrected['policy_qwk']:.2f}"
    print(f"  judge agreement on the policy's outputs: qwk {qwk}, exact {corrected['policy_agreement']:.2f} "
          f"({sum(corrected['labelled'].values())} labelled rollouts)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logs", type=Path, help="expert logs (default: the config's, MTS-Dialog's training set)")
    parser.add_argument("--config", type=Path, default=ROOT / "train/configs/cpu-learn.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/l2a-bench")
    parser.add_argument("--test-logs", type=lambda v: Path(v) if v else None, default=ROOT.parent / "shared/data/mts-dialog/Main-Dataset/MTS-Dialog-TestSet-1-MEDIQA-Chat-2023.csv",
                        help="logs training never read, evaluated after the run (default: MTS-Dialog's first test set; '' skips)")
    parser.add_argument("--test-limit", type=int, default=60, help="sessions of --test-logs to evaluate (default 60)")
    parser.add_argument("--judge", metavar="NAME", help="with a config that grades content: also grade the held-out "
                        "rollouts with this judge, not the reward's (`train eval --judge`: lm, similarity, neighbours), "
                        "into OUT/eval.judge-NAME.json; the goal on what to ask is read from it")
    parser.add_argument("--review", type=int, metavar="N", help="with --judge: export N of its judged rollouts (both sides, "
                        "blind) to OUT/review.xlsx; once labelled and added with `calibrator goldset add`, run the bench "
                        "again (everything cached) for the figures corrected by those labels")
    parser.add_argument("--goldset", type=Path, help="with --judge: the grader gold set the labelled review rows were added "
                        "to (default: the one the grader prompt was calibrated on)")
    parser.add_argument("--methods", default="grpo", help="comma-separated: grpo (Learn-to-Ask), sft, dpo (the paper's "
                        "baselines, each trained into OUT-<method> on the same samples and split); default grpo")
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods or set(methods) - {"grpo", "sft", "dpo"}:
        parser.error(f"--methods takes grpo, sft and dpo, not {args.methods!r}")
    if (args.review or args.goldset) and not args.judge:
        parser.error("--review and --goldset are about the rollouts --judge graded: name a --judge")
    if args.judge and "grpo" not in methods:
        parser.error("--judge grades the Learn-to-Ask run's rollouts beside the baselines': add grpo to --methods")
    baselines = {}
    for method in [m for m in methods if m != "grpo"]:
        out = args.out.with_name(f"{args.out.name}-{method}")
        command = [sys.executable, "-m", "train", "run", "--config", str(args.config), "--method", method, "--out", str(out)]
        marks = run(command + (["--logs", str(args.logs)] if args.logs else []))
        print(f"\n{method}: {marks['end']:.0f} s (samples, training and eval)")
        baselines[method] = json.loads((out / "eval.json").read_text())
    if "grpo" not in methods:
        paper_table(baselines)
        return 0
    command = [sys.executable, "-m", "train", "run", "--config", str(args.config), "--out", str(args.out)]
    if args.logs:
        command += ["--logs", str(args.logs)]
    marks = run(command)
    order = [s for s, _ in STAGES if s in marks] + ["end"]
    print("\nstage times (s, from the run's output; a stage found finished takes ~0):")
    for a, b in zip(order, order[1:]):
        print(f"  {a:12} {marks[b] - marks[a]:8.1f}")
    print(f"  total        {marks['end']:8.1f}")
    result = json.loads((args.out / "eval.json").read_text())
    paper_table(baselines | {"grpo": result})
    print(f"\n{result['note']}")
    table(result, "held-out sessions of the training logs: base (SmolLM2-135M-Instruct) → trained (warm start + GRPO)")
    stop_mass(result, "held-out sessions")
    results = {"held-out sessions": result}
    if args.test_logs:
        test_out = args.out / "eval-test.json"
        run([sys.executable, "-m", "train", "eval", "--model", str(args.out), "--logs", str(args.test_logs),
             "--limit", str(args.test_limit), "--out", str(test_out)])
        results["test logs"] = json.loads(test_out.read_text())
        print(f"\n{results['test logs']['note']}")
        table(results["test logs"], f"{args.test_logs.name}, first {args.test_limit} sessions: base → trained")
        stop_mass(results["test logs"], "test logs")
    for name, res in results.items():
        rows = {c["name"]: c for c in res["comparison"]}
        term, dec = rows["termination_accuracy"], rows["decision_accuracy"]
        met = term["verdict"] == "improved" and dec["verdict"] != "worse"
        print(f"goal on the {name} (termination accuracy improved with paired CI > 0, decision accuracy not worse): "
              f"{'met' if met else 'NOT met'} (termination {term['verdict']}, decision {dec['verdict']})")
    if args.judge:
        judged(args, baselines)
    warm = args.out / "warm_start" / "final"
    if warm.is_dir():
        run([sys.executable, "-m", "train", "eval", "--model", str(args.out), "--base", str(warm),
             "--out", str(args.out / "eval-vs-warm.json")])
        table(json.loads((args.out / "eval-vs-warm.json").read_text()), "held-out sessions: warm start → trained (what GRPO added)")
    steps(args.out / "metrics.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
