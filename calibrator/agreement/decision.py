"""From a judge's label distribution to its label: read the distribution off token log-probabilities, then
decide with a rule fitted on train.

The sampled label throws away what the model knew: a judge that gives 0.45 to "1" and 0.55 to "0" answers 0
either way. Where the backend reports token log-probabilities (llama.cpp, vLLM, OpenAI), the label is written as
one distinct token per label (`label_tokens` in the prompt file: SmolLM2's tokenizer splits `0.5` into three
tokens, so 0 and 0.5 would share their first one), and the distribution over those tokens at the label's
position is the judgement. Three rules turn it into a label, and which one is kept is decided by
cross-validation inside the fitting rows:

- argmax: the most probable label (nothing fitted);
- prior: batch calibration, each label's probability divided by its mean over the fitting rows, then argmax;
- cuts: cut points on the expected score (sum of p(label) x label) that maximise qwk.

If no rule agrees with the gold labels out of fold (cross-validated qwk <= 0), the model has no usable signal
and the rule says so.
"""

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, model_validator

from calibrator.agreement.metrics import quadratic_weighted_kappa, qwk_of_indices

TOP_LOGPROBS = 20  # OpenAI's cap; llama.cpp and vLLM take it too
MAX_CUT_CANDIDATES = 40  # distinct cut positions tried per cut; more observed values are thinned to quantiles
MAX_GRID_CUTS = 3  # up to this many cuts (4 labels) every combination of the thinned candidates is tried
FOLDS = 5
RuleKind = Literal["argmax", "prior", "cuts"]
SIMPLEST_FIRST: tuple[RuleKind, ...] = ("argmax", "prior", "cuts")  # ties go to the rule with fewer parameters


def label_order(tokens: Mapping[str, float]) -> list[str]:
    """Label tokens by ascending label value."""
    return sorted(tokens, key=lambda t: tokens[t])


def _get(item: Any, key: str) -> Any:
    return item.get(key) if isinstance(item, Mapping) else getattr(item, key, None)


def label_distribution(logprobs: Any, field: str, tokens: Mapping[str, float]) -> list[float] | None:
    """p(label) in ascending label order, read at the position where `field`'s value starts in the generated JSON
    (DSPy's adapters write field markers first, so the label is not the first token). Alternatives whose text,
    stripped of spaces and quotes, is a label token are summed; a label missing from the top list gets the
    smallest listed probability, an upper bound on its true value. None when there are no log-probabilities or the
    field is not in the answer."""
    content = _get(logprobs, "content") if logprobs is not None else None
    if not content:
        return None
    pieces = [str(_get(t, "token") or "") for t in content]
    text = "".join(pieces)
    found = re.search(rf'"{re.escape(field)}"\s*:\s*"?', text)
    if found is None:
        return None
    offset, start = found.end(), 0
    for piece, token in zip(pieces, content):
        end = start + len(piece)
        if end > offset and piece[max(0, offset - start):].strip(' "'):  # the first piece at or after the value with text in it
            return _renormalise(token, tokens)
        start = end
    return None


def _renormalise(token: Any, tokens: Mapping[str, float]) -> list[float] | None:
    pairs = [(str(_get(a, "token")), float(_get(a, "logprob"))) for a in _get(token, "top_logprobs") or []]
    if not pairs:
        return None
    mass = {t: 0.0 for t in tokens}
    for text, logprob in pairs:
        key = text.strip().strip('"')
        if key in mass:
            mass[key] += math.exp(logprob)
    if not any(mass.values()):
        return None  # no label among the alternatives: nothing was read, and a uniform guess would pass for one
    floor = math.exp(min(lp for _, lp in pairs))
    probs = [mass[t] or floor for t in label_order(tokens)]
    total = sum(probs)
    return [p / total for p in probs]


def expected_score(probs: Sequence[float], labels: Sequence[float]) -> float:
    return float(sum(p * v for p, v in zip(probs, labels)))


def label_by_cuts(score: float, cuts: Sequence[float], labels: Sequence[float]) -> float:
    """The label whose interval holds `score`: one step up for every cut the score is above."""
    return labels[sum(score > c for c in cuts)]


def fit_cuts(scores: Sequence[float], gold: Sequence[float], labels: Sequence[float]) -> list[float]:
    """len(labels) - 1 ascending cut points on `scores` that maximise qwk against `gold`. Any cut between two
    neighbouring observed scores makes the same decisions, so the candidates are the midpoints of those gaps, plus one
    below and one above every score (a label never given). Up to MAX_GRID_CUTS cuts every combination of
    MAX_CUT_CANDIDATES quantiles of them is tried (beyond that: cuts at the gold label shares); then each cut is moved to
    its best candidate among all of them, the others held, until nothing improves. Scores that are all equal carry no
    ranking: every row gets the most common gold label."""
    x = np.asarray(scores, dtype=float)
    values = np.unique(x)
    span = max(labels) - min(labels)
    below, above = float(values[0]) - span, float(values[-1]) + span
    if values.size == 1:
        common = max(labels, key=lambda v: (list(gold).count(v), -labels.index(v)))
        index = list(labels).index(common)
        return [below] * index + [above] * (len(labels) - 1 - index)
    candidates = np.concatenate([[below], (values[1:] + values[:-1]) / 2, [above]])
    coarse = candidates if candidates.size <= MAX_CUT_CANDIDATES else np.unique(
        np.quantile(candidates, np.linspace(0, 1, MAX_CUT_CANDIDATES), method="nearest"))

    def qwks(cut_rows: np.ndarray) -> np.ndarray:  # (r, len(labels) - 1) cuts -> r qwks, computed together
        return qwk_of_indices(gold, (x[None, :, None] > cut_rows[:, None, :]).sum(axis=2), labels)

    def qwk(cuts: Sequence[float]) -> float:
        return float(qwks(np.asarray([cuts], dtype=float))[0])

    if len(labels) - 1 <= MAX_GRID_CUTS:
        grid = list(itertools.combinations_with_replacement(coarse.tolist(), len(labels) - 1))
        best = grid[int(np.argmax(qwks(np.asarray(grid, dtype=float))))]  # the first best, as max() would take
    else:
        shares = np.cumsum([list(gold).count(v) for v in labels])[:-1] / len(gold)
        best = tuple(float(c) for c in np.quantile(x, shares))
    cuts, score = list(best), qwk(best)
    improved = True
    while improved:
        improved = False
        for i in range(len(cuts)):
            low = cuts[i - 1] if i else -math.inf
            high = cuts[i + 1] if i + 1 < len(cuts) else math.inf
            for c in candidates[(candidates >= low) & (candidates <= high)].tolist():
                trial = cuts[:i] + [c] + cuts[i + 1:]
                if (q := qwk(trial)) > score + 1e-12:
                    cuts, score, improved = trial, q, True
    return cuts


def batch_prior(probs: Sequence[Sequence[float]]) -> list[float]:
    """The model's mean label distribution over the fitting rows: what it leans to whatever the input."""
    return np.asarray(probs, dtype=float).mean(axis=0).tolist()


class DecisionRule(BaseModel):
    """How a label distribution becomes a label, with the evidence it was chosen on (all from the fitting rows)."""

    kind: RuleKind
    labels: list[float]
    prior: list[float] | None = None  # kind prior: the mean distribution divided out
    cuts: list[float] | None = None  # kind cuts: ascending cut points on the expected score
    fitted_on: int  # rows the rule was fitted and cross-validated on: train rows the prompt does not show as demos
    cv_qwk: dict[str, float]  # out-of-fold qwk of each rule inside those rows
    rank_correlation: float | None  # Spearman correlation of the expected score with the gold label on those rows
    signal: bool  # the chosen rule agrees with gold out of fold (cv qwk > 0)

    @model_validator(mode="after")
    def _complete(self) -> "DecisionRule":
        """A rule read back from a prompt file must be one that can decide: its parameters present and of the right size."""
        if self.kind == "prior" and (self.prior is None or len(self.prior) != len(self.labels) or min(self.prior) < 0):
            raise ValueError(f"a prior rule needs `prior`: {len(self.labels)} non-negative numbers, one per label")
        if self.kind == "cuts" and (self.cuts is None or len(self.cuts) != len(self.labels) - 1 or self.cuts != sorted(self.cuts)):
            raise ValueError(f"a cuts rule needs `cuts`: {len(self.labels) - 1} ascending numbers")
        return self

    def apply(self, probs: Sequence[float]) -> float:
        if len(probs) != len(self.labels):
            raise ValueError(f"expected {len(self.labels)} label probabilities, got {len(probs)}")
        if self.kind == "cuts":
            return label_by_cuts(expected_score(probs, self.labels), self.cuts or [], self.labels)
        weights = np.asarray(probs, dtype=float)
        if self.kind == "prior":
            weights = weights / np.maximum(np.asarray(self.prior, dtype=float), 1e-12)
        return self.labels[int(np.argmax(weights))]

    def describe(self) -> str:
        how = {"argmax": "the most probable label",
               "prior": "the most probable label after dividing out the model's mean distribution (batch calibration)",
               "cuts": f"cut points {', '.join(f'{c:.3f}' for c in self.cuts or [])} on the expected score"}[self.kind]
        cv = ", ".join(f"{k} {v:.2f}" for k, v in self.cv_qwk.items())
        rho = "–" if self.rank_correlation is None else f"{self.rank_correlation:+.2f}"
        verdict = "" if self.signal else "; no rule agrees with gold out of fold: the model's label probabilities carry no signal"
        return f"{how} (chosen by {FOLDS}-fold cross-validation inside {self.fitted_on} train rows, qwk {cv}; rank correlation {rho}){verdict}"


def _rule(kind: RuleKind, probs: list[list[float]], gold: list[float], labels: list[float]) -> DecisionRule:
    """A rule of `kind` fitted on these rows (the evidence fields are filled in by `fit_rule`)."""
    blank = {"fitted_on": len(gold), "cv_qwk": {}, "rank_correlation": None, "signal": False}
    if kind == "prior":
        return DecisionRule(kind=kind, labels=labels, prior=batch_prior(probs), **blank)
    if kind == "cuts":
        return DecisionRule(kind=kind, labels=labels, cuts=fit_cuts([expected_score(p, labels) for p in probs], gold, labels), **blank)
    return DecisionRule(kind=kind, labels=labels, **blank)


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float | None:
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def fit_rule(probs: Sequence[Sequence[float]], gold: Sequence[float], labels: Sequence[float], *, seed: int = 0) -> DecisionRule:
    """Score each rule out of fold (FOLDS folds, at most one per row), keep the best (ties: fewer parameters), and refit
    it on all rows."""
    probs, gold, labels = [list(map(float, p)) for p in probs], [float(g) for g in gold], [float(v) for v in labels]
    n = len(gold)
    if n < 2:
        raise ValueError(f"need at least 2 rows with label probabilities to fit a decision rule, got {n}")
    folds = min(FOLDS, n)
    order = np.random.default_rng(seed).permutation(n)
    fold_of = np.empty(n, dtype=int)
    fold_of[order] = np.arange(n) % folds
    cv: dict[str, float] = {}
    for kind in SIMPLEST_FIRST:
        predicted = [0.0] * n
        for f in range(folds):
            inside = [i for i in range(n) if fold_of[i] != f]
            rule = _rule(kind, [probs[i] for i in inside], [gold[i] for i in inside], labels)
            for i in range(n):
                if fold_of[i] == f:
                    predicted[i] = rule.apply(probs[i])
        cv[kind] = quadratic_weighted_kappa(gold, predicted, labels)
    best = max(SIMPLEST_FIRST, key=lambda k: (cv[k], -SIMPLEST_FIRST.index(k)))
    rho = rank_correlation([expected_score(p, labels) for p in probs], gold)
    return _rule(best, probs, gold, labels).model_copy(update={"cv_qwk": cv, "rank_correlation": rho, "signal": cv[best] > 0})
