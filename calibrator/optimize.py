"""Search for a prompt that agrees with the humans: strategies are scored on val, never on test.

Each strategy turns the baseline prompt plus the train split into a candidate prompt:
- knn: demonstrations retrieved per input by MiniLM similarity (DSPy's KNN retriever), nearest last;
  which input fields to compare and how many neighbours to show are chosen without any LM call, by
  leave-one-out agreement of the neighbours' labels within the train split;
- mipro: DSPy MIPROv2, Optuna TPE over proposed instructions x labelled demo sets;
- gepa: DSPy GEPA, reflective instruction evolution driven by ordinal feedback.
`auto` runs the strategies the budget affords and keeps whichever (baseline included) scores best on val.
"""

from typing import Any, Literal

import dspy
import numpy as np
from pydantic import BaseModel

from calibrator.components import grader
from calibrator.components.retrieval import retrieval_text
from calibrator.embedder import EMBEDDER_NAME, encode
from calibrator.evaluate import Evaluate
from calibrator.goldset import GoldSet, GraderRow
from calibrator.metrics import quadratic_weighted_kappa, score_ordinal
from calibrator.prompt import PromptFile, Retrieval

Strategy = Literal["knn", "mipro", "gepa"]
OptimizerName = Literal["auto", "knn", "mipro", "gepa"]
BudgetName = Literal["smoke", "light", "medium", "heavy"]


class Budget(BaseModel, frozen=True):
    """How much search a run may spend; `smoke` is the smallest run that still exercises every step."""

    auto: tuple[Strategy, ...]
    eval_rows: int | None  # rows per val/test split (stratified); None = all
    knn_ks: tuple[int, ...]
    mipro_candidates: int
    mipro_trials: int
    mipro_demos: int
    gepa_metric_calls: int


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(auto=("knn",), eval_rows=6, knn_ks=(2,), mipro_candidates=2, mipro_trials=2, mipro_demos=2, gepa_metric_calls=12),
    "light": Budget(auto=("knn",), eval_rows=None, knn_ks=(2, 3), mipro_candidates=3, mipro_trials=4, mipro_demos=3, gepa_metric_calls=60),
    "medium": Budget(auto=("knn", "mipro"), eval_rows=None, knn_ks=(2, 3, 4), mipro_candidates=6, mipro_trials=12, mipro_demos=4, gepa_metric_calls=200),
    "heavy": Budget(auto=("knn", "mipro", "gepa"), eval_rows=None, knn_ks=(2, 3, 4), mipro_candidates=10, mipro_trials=30, mipro_demos=4, gepa_metric_calls=600),
}


class Trial(BaseModel):
    """One candidate the search scored. DSPy's optimizers score by mean ordinal closeness on val
    (minibatch or full); knn's settings by leave-one-out qwk on train; strategies are compared by qwk
    on the full val split."""

    strategy: str
    trial: int
    metric: Literal["closeness", "qwk", "loo_qwk"]
    score: float
    kind: Literal["full", "minibatch", "train-loo"]
    detail: str = ""


class Candidate(BaseModel):
    strategy: str
    prompt: PromptFile
    val_qwk: float
    val_accuracy: float


class Optimization(BaseModel):
    winner: str
    candidates: list[Candidate]
    trials: list[Trial]

    @property
    def best(self) -> Candidate:
        return next(c for c in self.candidates if c.strategy == self.winner)


def _examples(rows: list[GraderRow], demo: bool = False) -> list[dspy.Example]:
    return [grader.to_example(r, demo=demo) for r in rows]


def knn_prompt(base: PromptFile, train: list[GraderRow], k: int, keys: list[str]) -> PromptFile:
    pool = [grader.demo_record(e) for e in _examples(train, demo=True)]
    return PromptFile(component=base.component, instructions=base.instructions,
                      retrieval=Retrieval(k=k, keys=keys, embedder=EMBEDDER_NAME, pool=pool))


def choose_retrieval(train: list[GraderRow], ks: tuple[int, ...]) -> tuple[int, list[str], list[Trial]]:
    """Pick fields and k whose similarity-weighted neighbour vote best reproduces each train label from
    the other train rows. No LM call and no val/test row: a cheap, honest proxy for which neighbours
    make useful demonstrations."""
    gold = [r.content_score for r in train]
    records = [grader.demo_record(e) for e in _examples(train, demo=True)]
    trials, best = [], None
    for keys in grader.RETRIEVAL_KEY_CHOICES:
        vectors = encode([retrieval_text(r, keys) for r in records])
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        for k in ks:
            votes = []
            for i in range(len(train)):
                weight: dict[float, float] = {}
                for j in np.argsort(similarity[i])[-k:]:
                    weight[gold[j]] = weight.get(gold[j], 0.0) + float(similarity[i, j])
                votes.append(max(weight, key=weight.get))
            score = quadratic_weighted_kappa(gold, votes)
            trials.append(Trial(strategy="knn", trial=len(trials) + 1, metric="loo_qwk", score=score, kind="train-loo",
                                detail=f"fields={'+'.join(keys)} k={k}"))
            if best is None or score > best[0]:
                best = (score, k, list(keys))
    return best[1], best[2], trials


def _prompt_of(base: PromptFile, program: dspy.Module) -> PromptFile:
    return PromptFile(component=base.component, instructions=grader.instructions_of(program), demos=grader.demos_of(program))


def run_mipro(base: PromptFile, train: list[GraderRow], val: list[GraderRow], budget: Budget, seed: int,
              proposer: dspy.LM) -> tuple[PromptFile, list[Trial]]:
    optimizer = dspy.MIPROv2(metric=grader.metric, prompt_model=proposer, auto=None, num_candidates=budget.mipro_candidates,
                             max_bootstrapped_demos=0, max_labeled_demos=budget.mipro_demos,
                             num_threads=1, seed=seed, verbose=False)
    program = optimizer.compile(
        grader.build_program(base), trainset=_examples(train, demo=True), valset=_examples(val),
        num_trials=budget.mipro_trials, minibatch=len(val) > 35, seed=seed,
        program_aware_proposer=False, data_aware_proposer=False, fewshot_aware_proposer=True, tip_aware_proposer=True,
    )
    trials = []
    for number, log in sorted(getattr(program, "trial_logs", {}).items()):
        if "full_eval_score" in log:
            trials.append(Trial(strategy="mipro", trial=number, metric="closeness", score=float(log["full_eval_score"]), kind="full"))
        elif "mb_score" in log:
            trials.append(Trial(strategy="mipro", trial=number, metric="closeness", score=float(log["mb_score"]), kind="minibatch"))
    return _prompt_of(base, program), trials


def run_gepa(base: PromptFile, train: list[GraderRow], val: list[GraderRow], budget: Budget, seed: int,
             proposer: dspy.LM) -> tuple[PromptFile, list[Trial]]:
    optimizer = dspy.GEPA(metric=grader.feedback, max_metric_calls=budget.gepa_metric_calls, reflection_lm=proposer,
                          reflection_minibatch_size=3, num_threads=1, track_stats=True, seed=seed, use_merge=False)
    program = optimizer.compile(grader.build_program(base), trainset=_examples(train), valset=_examples(val))
    results = getattr(program, "detailed_results", None)
    scores = list(getattr(results, "val_aggregate_scores", []) or [])
    trials = [Trial(strategy="gepa", trial=i + 1, metric="closeness", score=float(s), kind="full") for i, s in enumerate(scores)]
    return _prompt_of(base, program), trials


def val_candidate(strategy: str, prompt: PromptFile, val: list[GraderRow], evaluate: Evaluate) -> Candidate:
    preds = evaluate(prompt, val, f"{strategy} val")
    scores = score_ordinal([r.content_score for r in val], [p.content_score for p in preds], n_boot=1)
    return Candidate(strategy=strategy, prompt=prompt, val_qwk=scores.qwk, val_accuracy=scores.accuracy)


def optimize(
    goldset: GoldSet,
    base: PromptFile,
    optimizer: OptimizerName,
    budget: Budget,
    seed: int,
    proposer: dspy.LM,
    evaluate: Evaluate,
    val: list[GraderRow],
    baseline_val: Candidate,
) -> Optimization:
    """Run the chosen strategies on train, score each on val, keep the best (the baseline can win).

    `proposer` writes MIPROv2's instruction candidates and GEPA's reflections; the graded calls use the
    LM in the active dspy context."""
    strategies: tuple[Strategy, ...] = budget.auto if optimizer == "auto" else (optimizer,)
    train = goldset.split("train")
    candidates = [baseline_val]
    trials = [Trial(strategy="baseline", trial=0, metric="qwk", score=baseline_val.val_qwk, kind="full")]
    for strategy in strategies:
        if strategy == "knn":
            k, keys, found = choose_retrieval(train, budget.knn_ks)
            prompt = knn_prompt(base, train, k, keys)
        elif strategy == "mipro":
            prompt, found = run_mipro(base, train, val, budget, seed, proposer)
        else:
            prompt, found = run_gepa(base, train, val, budget, seed, proposer)
        candidate = val_candidate(strategy, prompt, val, evaluate)
        trials += found + [Trial(strategy=strategy, trial=len(found) + 1, metric="qwk", score=candidate.val_qwk, kind="full")]
        candidates.append(candidate)
    best = max(candidates, key=lambda c: (c.val_qwk, c.val_accuracy, -candidates.index(c)))
    return Optimization(winner=best.strategy, candidates=candidates, trials=trials)
