"""Agreement metrics between gold ordinal labels and model predictions.

Labels are ordinal values from ``LABELS`` (0.0 < 0.5 < 1.0 by default). A
prediction of ``None`` means the model's output failed to parse.

Conventions:

* accuracy is over all ``n`` examples and a parse failure counts as wrong, so a
  model cannot look better by failing to answer the hard items.
* qwk (quadratic weighted kappa) and mae are over parsed pairs only, with
  ``parse_failure_rate`` reported beside them. If nothing parsed, qwk is 0.0
  and mae is the largest possible distance between labels (1.0 by default).
* qwk is 0.0 when the expected disagreement is zero (gold and predictions
  constant at the same label): chance alone explains that agreement, so there
  is no evidence of more. sklearn returns nan in this case.
* Empty inputs raise ``ValueError``: there is nothing to score.
* Confidence intervals are percentile bootstrap intervals from resampling
  examples with replacement, drawn from ``numpy.random.default_rng(seed)`` so a
  given seed always gives the same interval.
* Paired comparisons resample the same example indices for baseline and
  calibrated predictions, so the interval is on the per-replicate difference.
  ``delta`` is always calibrated - baseline, also for mae where lower is better.
"""

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

LABELS: tuple[float, ...] = (0.0, 0.5, 1.0)
Interval = tuple[float, float]
Verdict = Literal["improved", "no significant change", "worse", "too few examples"]

LOWER_IS_BETTER: frozenset[str] = frozenset({"mae"})

_TOLERANCE = 1e-9
_MAX_RESAMPLED = 4_000_000


class OrdinalScores(BaseModel):
    """Point estimates and bootstrap intervals for one set of predictions."""

    model_config = ConfigDict(frozen=True)

    n: int
    n_parsed: int
    accuracy: float
    qwk: float
    mae: float
    parse_failure_rate: float
    accuracy_ci: Interval
    qwk_ci: Interval
    mae_ci: Interval
    confusion: list[list[int]]


class PairedComparison(BaseModel):
    """Baseline vs calibrated on the same examples; ``delta`` is calibrated - baseline."""

    model_config = ConfigDict(frozen=True)

    metric: str
    n: int
    baseline: float
    calibrated: float
    delta: float
    delta_ci: Interval
    verdict: Verdict
    confidence: float = 0.95


def _check_labels(labels: Sequence[float]) -> np.ndarray:
    """Validate labels once so every metric agrees on their order and spacing."""
    values = np.asarray(labels, dtype=float)
    if (
        values.ndim != 1
        or values.size < 2
        or not np.all(np.isfinite(values))
        or np.any(np.diff(values) <= 0)
    ):
        raise ValueError(f"labels must be >= 2 strictly increasing finite values, got {labels!r}")
    return values


def _encode(
    values: Sequence[float | None], labels: np.ndarray, name: str, allow_none: bool
) -> np.ndarray:
    """Label index of each value; None becomes len(labels), the parse-failure column."""
    missing = np.array([v is None for v in values], dtype=bool)
    if missing.any() and not allow_none:
        first = int(np.argmax(missing))
        raise ValueError(f"{name}[{first}] is None; only predictions may be unparsed")
    x = np.array([np.nan if v is None else float(v) for v in values], dtype=float)
    match = np.abs(x[:, None] - labels[None, :]) <= _TOLERANCE
    bad = ~missing & ~match.any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        allowed = tuple(labels.tolist())
        raise ValueError(f"{name}[{i}] = {x[i]!r} is not one of the labels {allowed}")
    return np.where(missing, labels.size, match.argmax(axis=1))


def _cells(
    gold: Sequence[float],
    pred: Sequence[float | None],
    labels: np.ndarray,
    *,
    pred_name: str = "pred",
    allow_none: bool = True,
) -> np.ndarray:
    """Flat index of each (gold, pred) pair in a k x (k + 1) table, so counting is one bincount."""
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} items but {pred_name} has {len(pred)}")
    if len(gold) == 0:
        raise ValueError("no examples to score")
    g = _encode(gold, labels, "gold", allow_none=False)
    p = _encode(pred, labels, pred_name, allow_none)
    return g * (labels.size + 1) + p


def _count(cells: np.ndarray, k: int, idx: np.ndarray | None = None) -> np.ndarray:
    """Contingency tables of shape (replicates, k, k + 1), one per row of example indices."""
    if idx is None:
        idx = np.arange(cells.size)[None, :]
    size = k * (k + 1)
    flat = (np.arange(idx.shape[0])[:, None] * size + cells[idx]).ravel()
    return np.bincount(flat, minlength=idx.shape[0] * size).reshape(-1, k, k + 1)


def _metrics(counts: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """All metrics from contingency tables at once, so bootstrap replicates need no Python loop."""
    k = labels.size
    table = counts.astype(float)
    n = table.sum(axis=(1, 2))
    parsed_table = table[:, :, :k]
    parsed = parsed_table.sum(axis=(1, 2))

    accuracy = np.trace(parsed_table, axis1=1, axis2=2) / n

    distance = np.abs(labels[:, None] - labels[None, :])
    mae = np.divide(
        (parsed_table * distance).sum(axis=(1, 2)),
        parsed,
        out=np.full_like(parsed, distance.max()),
        where=parsed > 0,
    )

    rank = np.arange(k)
    weights = (rank[:, None] - rank[None, :]) ** 2 / (k - 1) ** 2
    outer = parsed_table.sum(axis=2)[:, :, None] * parsed_table.sum(axis=1)[:, None, :]
    expected = np.divide(
        (outer * weights).sum(axis=(1, 2)), parsed, out=np.zeros_like(parsed), where=parsed > 0
    )
    observed = (parsed_table * weights).sum(axis=(1, 2))
    ratio = np.divide(observed, expected, out=np.ones_like(expected), where=expected > 0)

    return {"accuracy": accuracy, "qwk": 1.0 - ratio, "mae": mae}


def _point(
    gold: Sequence[float], pred: Sequence[float | None], labels: Sequence[float]
) -> dict[str, float]:
    """Point estimates through the same code path as the bootstrap, so they cannot drift apart."""
    values = _check_labels(labels)
    metrics = _metrics(_count(_cells(gold, pred, values), values.size), values)
    return {name: float(value[0]) for name, value in metrics.items()}


def _resampled_counts(
    cell_arrays: Sequence[np.ndarray], k: int, n_boot: int, seed: int
) -> list[np.ndarray]:
    """Bootstrap tables for each array, all drawn from the same example indices (paired).

    Replicates are drawn in chunks to bound memory for large n.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n = cell_arrays[0].size
    rng = np.random.default_rng(seed)
    step = max(1, _MAX_RESAMPLED // n)
    chunks = []
    for start in range(0, n_boot, step):
        idx = rng.integers(0, n, size=(min(step, n_boot - start), n))
        chunks.append([_count(cells, k, idx) for cells in cell_arrays])
    return [np.concatenate(tables) for tables in zip(*chunks)]


def percentile_interval(samples: np.ndarray, confidence: float) -> Interval:
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(samples, [alpha, 1.0 - alpha])
    return float(low), float(high)


def quadratic_weighted_kappa(
    gold: Sequence[float], pred: Sequence[float], labels: Sequence[float] = LABELS
) -> float:
    """Cohen's kappa with quadratic weights over the label order.

    Returns 0.0 when the expected disagreement is zero (see module docstring).
    Predictions must all have parsed; use ``METRICS["qwk"]`` to skip None.
    """
    values = _check_labels(labels)
    cells = _cells(gold, pred, values, allow_none=False)
    return float(_metrics(_count(cells, values.size), values)["qwk"][0])


def qwk_of_indices(gold: Sequence[float], predicted: np.ndarray, labels: Sequence[float] = LABELS) -> np.ndarray:
    """quadratic_weighted_kappa of many predictions of one gold at once: `predicted` holds label indices, one row per
    prediction (shape (r, n)); one qwk per row, each the same number quadratic_weighted_kappa gives for that row."""
    values = _check_labels(labels)
    k = values.size
    g = _encode(gold, values, "gold", allow_none=False)
    rows = np.atleast_2d(predicted)
    cells = g[None, :] * (k + 1) + rows
    return _metrics(_count(cells.ravel(), k, np.arange(cells.size).reshape(cells.shape)), values)["qwk"]


def confusion_matrix(
    gold: Sequence[float], pred: Sequence[float | None], labels: Sequence[float] = LABELS
) -> list[list[int]]:
    """Rows = gold label, columns = predicted label; None predictions are left out."""
    values = _check_labels(labels)
    k = values.size
    return _count(_cells(gold, pred, values), k)[0, :, :k].tolist()


def _accuracy(
    gold: Sequence[float], pred: Sequence[float | None], labels: Sequence[float] = LABELS
) -> float:
    """Share of all examples predicted exactly; parse failures count as wrong."""
    return _point(gold, pred, labels)["accuracy"]


def _qwk(
    gold: Sequence[float], pred: Sequence[float | None], labels: Sequence[float] = LABELS
) -> float:
    """Quadratic weighted kappa over parsed pairs; 0.0 if nothing parsed."""
    return _point(gold, pred, labels)["qwk"]


def _mae(
    gold: Sequence[float], pred: Sequence[float | None], labels: Sequence[float] = LABELS
) -> float:
    """Mean absolute error over parsed pairs; the largest label distance if nothing parsed."""
    return _point(gold, pred, labels)["mae"]


METRICS: dict[str, Callable[..., float]] = {"accuracy": _accuracy, "qwk": _qwk, "mae": _mae}


def score_ordinal(
    gold: Sequence[float],
    pred: Sequence[float | None],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    labels: Sequence[float] = LABELS,
) -> OrdinalScores:
    """Score predictions against gold with percentile bootstrap intervals."""
    values = _check_labels(labels)
    k = values.size
    cells = _cells(gold, pred, values)
    table = _count(cells, k)
    point = _metrics(table, values)
    boot = _metrics(_resampled_counts([cells], k, n_boot, seed)[0], values)
    n = int(cells.size)
    n_parsed = int(table[0, :, :k].sum())
    return OrdinalScores(
        n=n,
        n_parsed=n_parsed,
        accuracy=float(point["accuracy"][0]),
        qwk=float(point["qwk"][0]),
        mae=float(point["mae"][0]),
        parse_failure_rate=(n - n_parsed) / n,
        accuracy_ci=percentile_interval(boot["accuracy"], confidence),
        qwk_ci=percentile_interval(boot["qwk"], confidence),
        mae_ci=percentile_interval(boot["mae"], confidence),
        confusion=table[0, :, :k].tolist(),
    )


def verdict_for(metric: str, n: int, ci: Interval, min_n: int) -> Verdict:
    if n < min_n:
        return "too few examples"
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    low, high = sorted((sign * ci[0], sign * ci[1]))
    if low > 0:
        return "improved"
    if high < 0:
        return "worse"
    return "no significant change"


def paired_bootstrap(
    gold: Sequence[float],
    baseline: Sequence[float | None],
    calibrated: Sequence[float | None],
    *,
    metric: str = "qwk",
    n_boot: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    min_n: int = 10,
    labels: Sequence[float] = LABELS,
) -> PairedComparison:
    """Compare two prediction sets on the same examples.

    Pairing cancels the example-to-example variation both sets share, so the
    interval on the difference is much tighter than comparing two separate CIs.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {sorted(METRICS)}")
    values = _check_labels(labels)
    k = values.size
    base_cells = _cells(gold, baseline, values, pred_name="baseline")
    cal_cells = _cells(gold, calibrated, values, pred_name="calibrated")

    base_boot, cal_boot = _resampled_counts([base_cells, cal_cells], k, n_boot, seed)
    deltas = _metrics(cal_boot, values)[metric] - _metrics(base_boot, values)[metric]
    delta_ci = percentile_interval(deltas, confidence)

    base = float(_metrics(_count(base_cells, k), values)[metric][0])
    cal = float(_metrics(_count(cal_cells, k), values)[metric][0])
    n = int(base_cells.size)
    return PairedComparison(
        metric=metric,
        n=n,
        baseline=base,
        calibrated=cal,
        delta=cal - base,
        delta_ci=delta_ci,
        verdict=verdict_for(metric, n, delta_ci, min_n),
        confidence=confidence,
    )


def describe(c: PairedComparison) -> str:
    """One plain sentence for reports and logs."""
    examples = "example" if c.n == 1 else "examples"
    low, high = c.delta_ci
    return (
        f"{c.metric} {c.baseline:.2f} → {c.calibrated:.2f} on {c.n} held-out {examples}, "
        f"{c.delta:+.2f}, {c.confidence * 100:g}% CI [{low:+.2f}, {high:+.2f}]: {c.verdict}"
    )
