"""Search for a prompt that agrees with the humans: strategies are scored on val, never on test.

Each strategy turns the baseline prompt plus the train split into a candidate prompt:
- knn: demonstrations retrieved per input by MiniLM similarity (DSPy's KNN retriever), nearest last;
  which input fields to compare and how many neighbours to show are chosen without any LM call, by
  leave-one-out agreement of the neighbours' labels within the train split;
- mipro: DSPy MIPROv2, Optuna TPE over proposed instructions x demo sets;
- gepa: DSPy GEPA, reflective instruction evolution driven by the component's feedback (which way a score
  was off; which items were missed or invented);
- reasoning: any candidate prompt, asked to reason before it answers (DSPy's ChainOfThought), as the reference's
  judge does ("knn+reasoning"); scored on val like the others (from --budget medium on, or --compare-reasoning).
  Not composed with threshold: the label's probabilities are read at the answer's first token, which reasoning moves;
- threshold: for a component with an ordinal label, read the label as a distribution from token log-probabilities
  and fit the rule that turns it into a label (argmax, prior correction or cut points; see calibrator/agreement/decision.py)
  on train rows the prompt does not show as demonstrations. It composes: `auto` fits one on the baseline and on
  each other strategy's prompt ("knn+threshold").
MIPROv2 and GEPA learn from train minus its dev slice and select their own candidates on the dev slice,
never on val. `auto` runs the strategies the budget affords and keeps whichever (baseline included)
scores best on val; test is left to the verdict.
"""

from typing import Literal

import dspy
import numpy as np
from pydantic import BaseModel

from calibrator.components import Component
from calibrator.components.base import nearest
from calibrator.components.retrieval import retrieval_text
from calibrator.agreement.decision import fit_rule
from calibrator.embedder import EMBEDDER_NAME, encode
from calibrator.calibration.evaluate import Evaluate
from calibrator.gold.goldset import GoldRow, GoldSet
from calibrator.prompt import PromptFile, Retrieval
from calibrator.gold.splits import sample_rows

Strategy = Literal["knn", "mipro", "gepa"]
OptimizerName = Literal["auto", "knn", "mipro", "gepa", "threshold"]
BudgetName = Literal["smoke", "light", "medium", "heavy"]
MIPRO_BOOTSTRAPPED_DEMOS = 1


class Budget(BaseModel, frozen=True):
    """How much search a run may spend; `smoke` is the smallest run that still exercises every step."""

    auto: tuple[Strategy, ...]
    eval_rows: int | None  # rows per val/test split (stratified); None = all
    knn_ks: tuple[int, ...]
    mipro_candidates: int
    mipro_trials: int
    mipro_demos: int
    gepa_metric_calls: int
    threshold: bool  # auto fits a decision rule on every candidate prompt (when the component has an ordinal label)
    threshold_rows: int | None  # train rows read for the fit (stratified); None = all
    reasoning: bool = False  # auto also scores each candidate reasoning first (ChainOfThought) on val


BUDGETS: dict[str, Budget] = {
    "smoke": Budget(auto=("knn",), eval_rows=6, knn_ks=(2,), mipro_candidates=2, mipro_trials=2, mipro_demos=2, gepa_metric_calls=12,
                    threshold=False, threshold_rows=12),
    "light": Budget(auto=("knn",), eval_rows=None, knn_ks=(2, 3), mipro_candidates=3, mipro_trials=4, mipro_demos=3, gepa_metric_calls=60,
                    threshold=True, threshold_rows=None),
    "medium": Budget(auto=("knn", "mipro"), eval_rows=None, knn_ks=(2, 3, 4), mipro_candidates=6, mipro_trials=12, mipro_demos=4,
                     gepa_metric_calls=200, threshold=True, threshold_rows=None, reasoning=True),
    "heavy": Budget(auto=("knn", "mipro", "gepa"), eval_rows=None, knn_ks=(2, 3, 4), mipro_candidates=10, mipro_trials=30, mipro_demos=4,
                    gepa_metric_calls=600, threshold=True, threshold_rows=None, reasoning=True),
}


class Trial(BaseModel):
    """One candidate the search scored. DSPy's optimizers score by the component's per-example metric
    on val (minibatch or full); knn's settings by a leave-one-out proxy on train; strategies are
    compared by the component's selection metric (qwk, item_f1) on the full val split."""

    strategy: str
    trial: int
    metric: str  # "example_metric", "loo", "cv_qwk" (a decision rule, out of fold on train), or the selection metric's name
    score: float
    kind: Literal["full", "minibatch", "train-loo", "train-cv"]
    detail: str = ""


class Candidate(BaseModel):
    strategy: str
    prompt: PromptFile
    metric: str
    val_score: float
    val_secondary: float


class Optimization(BaseModel):
    winner: str
    candidates: list[Candidate]
    trials: list[Trial]
    notes: list[str] = []  # what a strategy found or could not do (e.g. no log-probabilities from the backend)
    fitted: dict[str, list[str]] = {}  # threshold strategy -> the train ids its decision rule was fitted on

    @property
    def best(self) -> Candidate:
        return next(c for c in self.candidates if c.strategy == self.winner)


def knn_prompt(component: Component, base: PromptFile, train: list[GoldRow], k: int, keys: list[str]) -> PromptFile:
    pool = [component.demo_record(component.to_example(r, demo=True)) for r in train]
    return base.model_copy(update={"demos": [], "calibration": None,
                                   "retrieval": Retrieval(k=k, keys=keys, embedder=EMBEDDER_NAME, pool=pool)})


def choose_retrieval(component: Component, train: list[GoldRow], ks: tuple[int, ...]) -> tuple[int, list[str], list[Trial]]:
    """Pick fields and k whose nearest other train rows best reproduce each train row's label (the
    component's leave-one-out proxy). No LM call and no val/test row: a cheap, honest proxy for which
    neighbours make useful demonstrations."""
    records = [component.demo_record(component.to_example(r, demo=True)) for r in train]
    trials, best = [], None
    for keys in component.retrieval_key_choices:
        vectors = encode([retrieval_text(r, keys) for r in records])
        similarity = vectors @ vectors.T
        np.fill_diagonal(similarity, -np.inf)
        for k in ks:
            score = component.loo_score(train, nearest(similarity, k))
            trials.append(Trial(strategy="knn", trial=len(trials) + 1, metric="loo", score=score, kind="train-loo",
                                detail=f"fields={'+'.join(keys)} k={k}"))
            if best is None or score > best[0]:
                best = (score, k, list(keys))
    return best[1], best[2], trials


def _prompt_of(component: Component, base: PromptFile, program: dspy.Module) -> PromptFile:
    predictor = program.predictors()[0]
    return base.model_copy(update={"instructions": predictor.signature.instructions, "calibration": None, "retrieval": None,
                                   "demos": [component.demo_record(d) for d in predictor.demos]})


def run_mipro(component: Component, base: PromptFile, fit: list[GoldRow], dev: list[GoldRow], budget: Budget, seed: int,
              proposer: dspy.LM, threads: int = 1) -> tuple[PromptFile, list[Trial]]:
    """MIPROv2 learns demo sets from `fit` and ranks (instruction, demo set) pairs on `dev`.

    Its shuffled demo sets draw a size in [1, max_bootstrapped_demos], so that must be at least 1 (at 0, any
    budget asking for more than 3 candidate sets crashed); `metric_threshold=1.0` keeps a bootstrapped demo only
    when the model's answer equals the gold label, so no demonstration teaches a wrong label."""
    optimizer = dspy.MIPROv2(metric=component.metric, prompt_model=proposer, auto=None, num_candidates=budget.mipro_candidates,
                             max_bootstrapped_demos=MIPRO_BOOTSTRAPPED_DEMOS, max_labeled_demos=budget.mipro_demos,
                             metric_threshold=1.0, num_threads=threads, seed=seed, verbose=False)
    program = optimizer.compile(
        component.build_program(base), trainset=[component.to_example(r, demo=True) for r in fit],
        valset=[component.to_example(r) for r in dev],
        num_trials=budget.mipro_trials, minibatch=len(dev) > 35, seed=seed,
        program_aware_proposer=False, data_aware_proposer=False, fewshot_aware_proposer=True, tip_aware_proposer=True,
    )
    trials = []  # DSPy's Evaluate reports percentages; trials keep the metric's own 0-1 scale
    for number, log in sorted(program.trial_logs.items()):
        if "full_eval_score" in log:
            trials.append(Trial(strategy="mipro", trial=number, metric="example_metric", score=float(log["full_eval_score"]) / 100, kind="full"))
        elif "mb_score" in log:
            trials.append(Trial(strategy="mipro", trial=number, metric="example_metric", score=float(log["mb_score"]) / 100, kind="minibatch"))
    return _prompt_of(component, base, program), trials


def run_gepa(component: Component, base: PromptFile, fit: list[GoldRow], dev: list[GoldRow], budget: Budget, seed: int,
             proposer: dspy.LM, threads: int = 1) -> tuple[PromptFile, list[Trial]]:
    """GEPA reflects on minibatches of `fit` and keeps its Pareto front of candidates on `dev`."""
    optimizer = dspy.GEPA(metric=component.feedback, max_metric_calls=budget.gepa_metric_calls, reflection_lm=proposer,
                          reflection_minibatch_size=3, num_threads=threads, track_stats=True, seed=seed, use_merge=False)
    program = optimizer.compile(component.build_program(base), trainset=[component.to_example(r) for r in fit],
                                valset=[component.to_example(r) for r in dev])
    scores = program.detailed_results.val_aggregate_scores
    trials = [Trial(strategy="gepa", trial=i + 1, metric="example_metric", score=float(s), kind="full") for i, s in enumerate(scores)]
    return _prompt_of(component, base, program), trials


class ThresholdFit(BaseModel):
    """A decision rule fitted on one prompt's label distributions over train rows, and the ids it was fitted on."""

    prompt: PromptFile | None  # None: the backend gave no log-probabilities
    fitted_ids: list[str]
    trials: list[Trial]
    note: str


def fit_threshold(component: Component, prompt: PromptFile, train: list[GoldRow], evaluate: Evaluate, *, name: str,
                  rows: int | None, seed: int) -> ThresholdFit:
    """Read `prompt`'s labels as distributions on the train rows it does not show as fixed demonstrations (a retrieving
    prompt never shows a row itself) and fit the decision rule on them, never on val or test."""
    reading = prompt.model_copy(update={"label_tokens": component.label_tokens(), "decision": None, "calibration": None})
    pool = prompt.retrieval.pool if prompt.retrieval else []
    # retrieval leaves out a row's own pool record by its id; a record kept without one cannot be told apart, so its row is
    # not fitted on at all
    checked = prompt if any(r.get("id") is None for r in pool) else prompt.model_copy(update={"retrieval": None})
    shown = set(component.rows_in_prompt(checked, train))
    fit_rows = sample_rows([r for r in train if r.id not in shown], rows)
    ids = [r.id for r in fit_rows]
    if len(fit_rows) < 2:
        return ThresholdFit(prompt=None, fitted_ids=ids, trials=[], note=f"{name}: {len(fit_rows)} train row(s) the prompt does "
                            "not show as demonstrations: too few to fit a decision rule")
    preds = evaluate(reading, fit_rows, f"{name} train")
    read = [(p.label_probs, r.label) for r, p in zip(fit_rows, preds) if p.label_probs is not None]
    if len(read) < 2:
        return ThresholdFit(prompt=None, fitted_ids=ids, trials=[], note=f"{name}: the LM gave no token log-probabilities "
                            f"({len(read)} of {len(fit_rows)} train rows), so no decision rule could be fitted")
    rule = fit_rule([p for p, _ in read], [g for _, g in read], component.ordinal_labels, seed=seed)
    trials = [Trial(strategy=name, trial=i + 1, metric="cv_qwk", score=score, kind="train-cv", detail=kind)
              for i, (kind, score) in enumerate(rule.cv_qwk.items())]
    return ThresholdFit(prompt=reading.model_copy(update={"decision": rule}), fitted_ids=ids, trials=trials,
                        note=f"{name}: {rule.describe()}")


def val_candidate(component: Component, strategy: str, prompt: PromptFile, val: list[GoldRow], evaluate: Evaluate) -> Candidate:
    scores = component.score(val, evaluate(prompt, val, f"{strategy} val"), n_boot=1)
    return Candidate(strategy=strategy, prompt=prompt, metric=component.selection_metric,
                     val_score=getattr(scores, component.selection_metric), val_secondary=getattr(scores, component.secondary_metric))


def optimize(
    component: Component,
    goldset: GoldSet,
    base: PromptFile,
    optimizer: OptimizerName,
    budget: Budget,
    seed: int,
    proposer: dspy.LM,
    evaluate: Evaluate,
    val: list[GoldRow],
    baseline_val: Candidate,
    threads: int = 1,
    reasoning: bool | None = None,
) -> Optimization:
    """Run the chosen strategies on train, score each on val, keep the best (the baseline can win).

    `proposer` writes MIPROv2's instruction candidates and GEPA's reflections; the graded calls use the
    LM in the active dspy context; MIPROv2 and GEPA evaluate `threads` examples at once (`--concurrency`).
    reasoning: also score each candidate reasoning first (None: as the budget says)."""
    strategies: tuple[Strategy, ...] = budget.auto if optimizer == "auto" else () if optimizer == "threshold" else (optimizer,)
    ordinal = component.ordinal_field is not None
    thresholds = ordinal and (optimizer == "threshold" or (optimizer == "auto" and budget.threshold))
    if optimizer == "threshold" and not ordinal:
        raise ValueError(f"--optimizer threshold needs an ordinal label to read as probabilities; the {component.name} has none")
    train = goldset.split("train")
    fit, dev = goldset.fit_and_dev()
    base = base.model_copy(update={"label_tokens": None, "decision": None})  # other strategies start from the plain prompt
    candidates = [baseline_val]
    metric = component.selection_metric
    trials = [Trial(strategy="baseline", trial=0, metric=metric, score=baseline_val.val_score, kind="full")]
    notes: list[str] = []
    fitted_on: dict[str, list[str]] = {}
    for strategy in strategies:
        if strategy == "knn":
            k, keys, found = choose_retrieval(component, train, budget.knn_ks)
            prompt = knn_prompt(component, base, train, k, keys)
        elif strategy == "mipro":
            prompt, found = run_mipro(component, base, fit, dev, budget, seed, proposer, threads)
        else:
            prompt, found = run_gepa(component, base, fit, dev, budget, seed, proposer, threads)
        candidate = val_candidate(component, strategy, prompt, val, evaluate)
        trials += found + [Trial(strategy=strategy, trial=len(found) + 1, metric=metric, score=candidate.val_score, kind="full")]
        candidates.append(candidate)
    if thresholds:
        for base_candidate in list(candidates):
            name = "threshold" if base_candidate.strategy == "baseline" else f"{base_candidate.strategy}+threshold"
            fitted = fit_threshold(component, base_candidate.prompt, train, evaluate, name=name, rows=budget.threshold_rows, seed=seed)
            notes.append(fitted.note)
            fitted_on[name] = fitted.fitted_ids
            if fitted.prompt is None:
                continue
            candidate = val_candidate(component, name, fitted.prompt, val, evaluate)
            trials += fitted.trials + [Trial(strategy=name, trial=len(fitted.trials) + 1, metric=metric, score=candidate.val_score, kind="full")]
            candidates.append(candidate)
    if budget.reasoning if reasoning is None else reasoning:
        for plain in [c for c in candidates if not c.prompt.label_tokens and not c.prompt.reasoning]:
            name = "reasoning" if plain.strategy == "baseline" else f"{plain.strategy}+reasoning"
            candidate = val_candidate(component, name, plain.prompt.model_copy(update={"reasoning": True}), val, evaluate)
            trials.append(Trial(strategy=name, trial=1, metric=metric, score=candidate.val_score, kind="full"))
            candidates.append(candidate)
    best = max(candidates, key=lambda c: (c.val_score, c.val_secondary, -candidates.index(c)))
    return Optimization(winner=best.strategy, candidates=candidates, trials=trials, notes=notes, fitted=fitted_on)
