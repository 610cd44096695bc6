"""Is the judge above the model-free floor? Baseline, knn, threshold, knn + threshold and the floors on one gold set.

    .venv/bin/python bench/judge_floor.py [--goldset goldsets/grader.csv] [--lm local] [--cache-dir .cache]

Every row of the table is built the way `run` builds it, from the train split only (knn's pool and settings, the
decision rules, the floors), and scored on val and on test with 95% bootstrap intervals; test qwk is the figure to
read, val is what `run --optimizer auto` would choose by. Each prompt row is also compared with the best floor on
val, on test (paired bootstrap of prompt - floor).
"""

import argparse
import time
from pathlib import Path

import dspy

from calibrator.components.grader import GRADER
from calibrator.calibration.evaluate import evaluator
from calibrator.gold.goldset import load_goldset
from calibrator.lm import LMSpec, open_lm
from calibrator.lm.adapter import CompactJSONAdapter
from calibrator.calibration.optimize import choose_retrieval, fit_threshold, knn_prompt
from calibrator.prompt import load_prompt

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--goldset", type=Path, default=ROOT / "goldsets/grader.csv")
    parser.add_argument("--prompt", type=Path, default=ROOT / "prompts/grader.yaml", help="the baseline prompt")
    parser.add_argument("--lm", default="local")
    parser.add_argument("--cache-dir", type=Path, default=ROOT / ".cache")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    gold = load_goldset(args.goldset, GRADER.row_model)
    train, val, test = gold.split("train"), gold.split("val"), gold.split("test")
    base = load_prompt(args.prompt)
    started = time.perf_counter()
    rows: dict[str, tuple[dict, dict, str]] = {}
    test_preds = {}
    with open_lm(LMSpec.parse(args.lm), cache_dir=args.cache_dir, seed=args.seed) as lm, \
            dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
        evaluate = evaluator(GRADER)
        k, keys, _ = choose_retrieval(GRADER, train, (2, 3))
        prompts = {"baseline": base, "knn": knn_prompt(GRADER, base, train, k, keys)}
        notes = {"baseline": "generated label, no demos", "knn": f"{k} retrieved demos on {'+'.join(keys)}, generated label"}
        for name, source in (("threshold", "baseline"), ("knn+threshold", "knn")):
            fitted = fit_threshold(GRADER, prompts[source], train, evaluate, name=name, rows=None, seed=args.seed)
            if fitted.prompt is None:
                print(fitted.note)
                continue
            prompts[name] = fitted.prompt
            notes[name] = fitted.note.split(": ", 1)[1]
        for name, prompt in prompts.items():
            v, t = evaluate(prompt, val, f"{name} val"), evaluate(prompt, test, f"{name} test")
            test_preds[name] = t
            rows[name] = (GRADER.score(val, v, seed=args.seed).model_dump(), GRADER.score(test, t, seed=args.seed).model_dump(), notes[name])
        usage = lm.usage()
    floors = {}
    for floor in GRADER.floors():
        floor.fit(train)
        t = floor.predict(test)
        floors[floor.name] = t
        rows[f"floor: {floor.name}"] = (GRADER.score(val, floor.predict(val), seed=args.seed).model_dump(),
                                         GRADER.score(test, t, seed=args.seed).model_dump(), floor.describe())
    best_floor = max(floors, key=lambda n: rows[f"floor: {n}"][0]["qwk"])
    wall = time.perf_counter() - started

    print(f"grader gold set {args.goldset.name} (train {len(train)} / val {len(val)} / test {len(test)}), LM {args.lm}")
    print(f"{'row':<26} {'val qwk':>8} {'test qwk':>8} {'95% CI':>16}  {'vs floor on test (paired)':<34} how")
    for name, (v, t, how) in rows.items():
        vs = ""
        if name in test_preds:
            c = GRADER.compare(test, floors[best_floor], test_preds[name], seed=args.seed)
            vs = f"{c.delta:+.2f} [{c.delta_ci[0]:+.2f}, {c.delta_ci[1]:+.2f}] {c.verdict}"
        ci = f"[{t['qwk_ci'][0]:+.2f}, {t['qwk_ci'][1]:+.2f}]"
        print(f"{name:<26} {v['qwk']:>8.2f} {t['qwk']:>8.2f} {ci:>16}  {vs:<34} {how}")
    print(f"floor compared with: {best_floor} (best floor on val)")
    print(f"{usage.lm_calls} LM calls, {usage.cache_hits} cache hits, {wall:.0f} s")


if __name__ == "__main__":
    main()
