"""Does labelling the rows `calibrator suggest` ranks first narrow the judge's interval faster than labelling at random,
and what does choosing rows on purpose do to the figure? A simulation on the shipped grader gold set, no LM.

    .venv/bin/python bench/suggest_gold.py [--seeds 100]

The judge is the neighbours floor and the reference floor the similarity floor, both fitted on the gold set's train
split (what `suggest` fits). The pool is the val and test rows with their labels hidden. Each seed starts from 10 pool
rows drawn at random and adds 5 rows at a time, either the next by `suggest`'s ranking (made once, as `suggest` makes it
for one sheet) or at random, up to 40; after each step the judge's qwk against the revealed labels, its 95% bootstrap
interval, and the gap between that qwk and the judge's qwk on the whole pool (the figure a random sample estimates).
"""

import argparse
import random
import statistics
import sys
from pathlib import Path

from calibrator.components.grader import GRADER
from calibrator.gold.goldset import load_goldset
from calibrator.agreement.metrics import score_ordinal
from calibrator.reward.suggest import Candidate, rank

ROOT = Path(__file__).resolve().parents[1]
START, STEP, END = 10, 5, 40


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--goldset", type=Path, default=ROOT / "goldsets" / "grader.csv")
    args = ap.parse_args()
    gold = load_goldset(args.goldset, GRADER.row_model)
    train = gold.split("train")
    pool = gold.split("val") + gold.split("test")
    judge = next(f for f in GRADER.floors() if f.name == "neighbours")
    judge.fit(train)
    judged = [p.content_score for p in judge.predict(pool)]
    truth = score_ordinal([r.content_score for r in pool], judged).qwk
    candidates = [Candidate(context=r.context, target_info=r.target_info, candidate=r.candidate, judge=j, source=r.id)
                  for r, j in zip(pool, judged)]
    results = {"suggest": {}, "random": {}}
    order_by_suggest = [s.row.source for s in rank(candidates, gold)]
    for seed in range(args.seeds):
        rng = random.Random(seed)
        start = rng.sample(range(len(pool)), START)
        for strategy in results:
            labelled = list(start)
            rest = [i for i in range(len(pool)) if i not in labelled]
            if strategy == "random":
                rng2 = random.Random(1000 + seed)
                rest = rng2.sample(rest, len(rest))
            else:
                position = {source: k for k, source in enumerate(order_by_suggest)}
                rest = sorted(rest, key=lambda i: position[pool[i].id])
            while True:
                scores = score_ordinal([pool[i].content_score for i in labelled], [judged[i] for i in labelled], seed=seed)
                results[strategy].setdefault(len(labelled), []).append((scores.qwk_ci[1] - scores.qwk_ci[0], scores.qwk - truth))
                if len(labelled) >= END or not rest:
                    break
                labelled += rest[:STEP]
                rest = rest[STEP:]
    print(f"{args.goldset.name}: judge = neighbours floor fitted on {len(train)} train rows; pool = {len(pool)} val+test rows, "
          f"judge qwk on the whole pool {truth:.2f}; {args.seeds} seeds, {START} random rows to start, {STEP} added a step")
    print(f"{'labelled':>8}  {'width, suggest':>15}{'width, random':>15}  {'qwk - pool qwk, suggest':>24}{'random':>10}")
    for n in sorted(results["random"]):
        s, r = results["suggest"].get(n), results["random"][n]
        if not s:
            continue
        print(f"{n:>8}  {statistics.mean(w for w, _ in s):>15.3f}{statistics.mean(w for w, _ in r):>15.3f}  "
              f"{statistics.mean(b for _, b in s):>+24.3f}{statistics.mean(b for _, b in r):>+10.3f}")


if __name__ == "__main__":
    sys.exit(main())
