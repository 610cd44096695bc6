"""A rate measured by a judge, corrected by a few human labels: prediction-powered inference (Angelopoulos et al.,
2023), with the power-tuned weight of PPI++ (Angelopoulos, Duchi and Zrnic, 2023).

The judge scores every output; humans label a random n of them. The estimate is the judge's rate on the N outputs
nobody labelled plus the mean human-minus-judge difference on the labelled ones (the rectifier), so a judge biased in
either direction is corrected, and its interval carries both the sampling error of the N unlabelled outputs and the
judge's error measured on the n labelled ones. The two sets must not overlap: with the labelled rows counted among the
"unlabelled" too, the interval is too narrow when n is a large share of the outputs (measured: 88% coverage instead of
95% with 100 of 150 labelled). The weight lambda on the judge (0: labels alone, 1: plain PPI) is chosen from the data to
minimise the variance, so the interval is never much wider than the labelled-only one and much narrower when the
judge agrees with humans. Normal-approximation intervals: they need tens of labelled rows, which `train eval --review`
samples; with fewer the figure is shown but its interval is not trusted (`enough_labels`)."""

import math
from statistics import NormalDist

import numpy as np
from pydantic import BaseModel

MIN_LABELS = 30  # below this, a normal interval on the labelled rows is not to be trusted


class CorrectedRate(BaseModel):
    judge: float  # the judge's rate over every judged output
    corrected: float  # the PPI estimate
    ci: tuple[float, float]
    se: float  # the estimate's standard error (normal approximation), for a difference of two rates
    labelled_only: float  # the humans' rate on the labelled rows alone
    labelled_only_ci: tuple[float, float]
    weight: float  # lambda: how much the judge's scores are trusted
    n_judged: int  # every output the judge scored, labelled or not
    n_labelled: int
    judge_agreement: float  # share of labelled rows where the judge's score equals the human's
    enough_labels: bool


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def _clip(low: float, high: float) -> tuple[float, float]:
    return max(0.0, low), min(1.0, high)


def corrected_rate(unlabelled: list[float], judged_labelled: list[float], human: list[float], confidence: float = 0.95,
                   weight: float | None = None) -> CorrectedRate:
    """unlabelled: the judge's 0/1 (or [0, 1]) score on every output nobody labelled; judged_labelled and human: the
    judge's and the humans' scores on the labelled outputs, in the same order. weight=None tunes lambda; 1.0 is plain
    PPI. With fewer than 2 unlabelled outputs the labels stand alone (weight 0)."""
    f_unl, f_lab, y = (np.asarray(v, dtype=float) for v in (unlabelled, judged_labelled, human))
    if len(f_lab) != len(y):
        raise ValueError(f"{len(f_lab)} judge scores for {len(y)} human labels")
    if len(y) < 2:
        raise ValueError("need at least 2 labelled outputs")
    n, big_n = len(y), len(f_unl)
    if big_n < 2:
        weight = 0.0
    elif weight is None:
        var_f = float(np.var(np.concatenate([f_unl, f_lab]), ddof=1))
        cov = float(np.cov(y, f_lab, ddof=1)[0, 1]) if np.var(f_lab) > 0 and np.var(y) > 0 else 0.0
        weight = 0.0 if var_f == 0 else min(1.0, max(0.0, cov / ((1 + n / big_n) * var_f)))
    judged_part = weight * (f_unl.mean() if big_n else 0.0)
    estimate = judged_part + (y - weight * f_lab).mean()
    se = math.sqrt((weight ** 2 * np.var(f_unl, ddof=1) / big_n if weight else 0.0) + np.var(y - weight * f_lab, ddof=1) / n)
    se_labels = math.sqrt(np.var(y, ddof=1) / n)
    z = _z(confidence)
    return CorrectedRate(
        judge=float(np.concatenate([f_unl, f_lab]).mean()), corrected=float(min(1.0, max(0.0, estimate))),
        ci=_clip(estimate - z * se, estimate + z * se), se=se, labelled_only=float(y.mean()),
        labelled_only_ci=_clip(y.mean() - z * se_labels, y.mean() + z * se_labels), weight=float(weight),
        n_judged=big_n + n, n_labelled=n, judge_agreement=float(np.mean(f_lab == y)), enough_labels=n >= MIN_LABELS)


class CorrectedDifference(BaseModel):
    """b minus a, two corrected rates of independent labelled samples: its interval adds their variances."""

    delta: float
    ci: tuple[float, float]
    enough_labels: bool


def corrected_difference(a: CorrectedRate, b: CorrectedRate, scale_a: float = 1.0, scale_b: float = 1.0,
                         confidence: float = 0.95) -> CorrectedDifference:
    """scale: a factor on each rate taken as known (a share of outputs the judge saw, say). The sides' variances are
    added, as for independent estimates: their labelled rows are drawn independently, but their unlabelled outputs
    often answer the same inputs, a covariance left out (it widens the interval when positive). Taking the scale as
    known and the outputs as independent (several rollouts of one sample are not) narrows it: the interval is exact
    only for independent outputs and fixed scales, which is what the simulation in tests/test_ppi.py checks."""
    delta = scale_b * b.corrected - scale_a * a.corrected
    half = _z(confidence) * math.sqrt((scale_a * a.se) ** 2 + (scale_b * b.se) ** 2)
    return CorrectedDifference(delta=delta, ci=(delta - half, delta + half), enough_labels=a.enough_labels and b.enough_labels)
