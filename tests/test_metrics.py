"""Tests for calibrator.agreement.metrics; sklearn is the reference implementation here only."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from calibrator.agreement.metrics import (
    LABELS,
    METRICS,
    OrdinalScores,
    PairedComparison,
    confusion_matrix,
    describe,
    paired_bootstrap,
    quadratic_weighted_kappa,
    qwk_of_indices,
    score_ordinal,
)
from support import examples

TO_INT = {0.0: 0, 0.5: 1, 1.0: 2}


def sk_qwk(gold, pred) -> float:
    """sklearn's QWK on labels mapped to 0/1/2; nan in the degenerate case."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cohen_kappa_score(
            [TO_INT[g] for g in gold],
            [TO_INT[p] for p in pred],
            labels=[0, 1, 2],
            weights="quadratic",
        )


def noisy(gold, rng, flip=0.3, fail=0.0):
    """Predictions that move one step off gold with probability flip, or fail to parse."""
    out = []
    for g in gold:
        if rng.random() < fail:
            out.append(None)
        elif rng.random() < flip:
            out.append(float(np.clip(g + rng.choice([-0.5, 0.5]), 0.0, 1.0)))
        else:
            out.append(float(g))
    return out


label = st.sampled_from(LABELS)
pairs = st.lists(st.tuples(label, label), min_size=1, max_size=60)
pairs_with_none = st.lists(st.tuples(label, st.one_of(st.none(), label)), min_size=1, max_size=60)


# --- quadratic weighted kappa ---------------------------------------------


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        ([0.0, 0.5, 1.0], [0.0, 0.5, 1.0]),
        ([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]),
        ([0.0, 0.0, 0.5, 0.5, 1.0, 1.0], [0.0, 0.5, 0.5, 1.0, 1.0, 0.5]),
        ([0.0, 1.0, 0.0, 1.0], [0.5, 0.5, 0.5, 0.5]),
        ([0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 1.0]),
        ([1.0, 1.0, 0.5, 0.0, 0.0, 0.5, 1.0], [1.0, 0.5, 0.5, 0.0, 0.5, 0.0, 0.0]),
        ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
    ],
)
def test_qwk_matches_sklearn_fixed(gold, pred):
    assert quadratic_weighted_kappa(gold, pred) == pytest.approx(sk_qwk(gold, pred), abs=1e-12)


@settings(max_examples=examples(300), deadline=None)
@given(pairs)
def test_qwk_matches_sklearn_random(data):
    gold, pred = map(list, zip(*data))
    expected = sk_qwk(gold, pred)
    ours = quadratic_weighted_kappa(gold, pred)
    if math.isnan(expected):
        assert ours == 0.0
    else:
        assert ours == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("seed", range(5))
def test_qwk_of_many_predictions_at_once_is_each_ones_qwk_to_the_last_bit(seed):
    """fit_cuts scores a whole grid of cut points in one call: each row's qwk must be the very number the one-at-a-time
    function gives, or a tie between two cut points could be broken the other way."""
    rng = np.random.default_rng(seed)
    gold = rng.choice(LABELS, size=int(rng.integers(5, 80))).tolist()
    rows = rng.integers(0, len(LABELS), size=(12, len(gold)))
    rows[0] = [LABELS.index(g) for g in gold]  # perfect agreement
    rows[1] = 0  # one label for every row: no expected disagreement
    many = qwk_of_indices(gold, rows)
    assert many.shape == (12,)
    assert many.tolist() == [quadratic_weighted_kappa(gold, [LABELS[i] for i in row]) for row in rows]
    assert many[0] == 1.0


@pytest.mark.parametrize("seed", range(10))
def test_qwk_matches_sklearn_seeded_noisy(seed):
    rng = np.random.default_rng(seed)
    gold = rng.choice(LABELS, size=int(rng.integers(20, 500))).tolist()
    pred = noisy(gold, rng, flip=rng.uniform(0.0, 0.9))
    assert quadratic_weighted_kappa(gold, pred) == pytest.approx(sk_qwk(gold, pred), abs=1e-9)


def test_qwk_perfect_and_degenerate():
    assert quadratic_weighted_kappa([0.0, 0.5, 1.0], [0.0, 0.5, 1.0]) == pytest.approx(1.0)
    assert quadratic_weighted_kappa([0.5] * 5, [0.5] * 5) == 0.0


@pytest.mark.parametrize(
    ("gold", "pred"),
    [
        ([0.0, 0.5], [0.0, None]),
        ([0.0, 0.5], [0.0, 0.25]),
        ([0.0, 0.7], [0.0, 0.5]),
        ([0.0, 0.5], [0.0]),
        ([], []),
    ],
)
def test_qwk_rejects_bad_input(gold, pred):
    with pytest.raises(ValueError):
        quadratic_weighted_kappa(gold, pred)


def test_gold_may_not_be_none():
    with pytest.raises(ValueError):
        score_ordinal([None, 0.5], [0.0, 0.5], n_boot=10)


# --- confusion matrix -------------------------------------------------------


@settings(max_examples=examples(200), deadline=None)
@given(pairs_with_none)
def test_confusion_matrix_matches_sklearn(data):
    gold, pred = map(list, zip(*data))
    parsed = [(TO_INT[g], TO_INT[p]) for g, p in data if p is not None]
    ours = confusion_matrix(gold, pred)
    if not parsed:
        assert ours == [[0, 0, 0], [0, 0, 0], [0, 0, 0]]
        return
    sk_gold, sk_pred = zip(*parsed)
    assert ours == sk_confusion_matrix(sk_gold, sk_pred, labels=[0, 1, 2]).tolist()


def test_confusion_matrix_orientation():
    assert confusion_matrix([0.0, 0.0, 1.0], [0.5, None, 1.0]) == [[0, 1, 0], [0, 0, 0], [0, 0, 1]]


# --- accuracy, mae, conventions around parse failures ---------------------


def test_hand_computed_with_parse_failure():
    gold = [0.0, 0.5, 1.0, 1.0, 0.5]
    pred = [0.0, 1.0, None, 0.5, 0.5]
    assert METRICS["accuracy"](gold, pred) == pytest.approx(2 / 5)
    assert METRICS["mae"](gold, pred) == pytest.approx((0 + 0.5 + 0.5 + 0) / 4)
    assert METRICS["qwk"](gold, pred) == pytest.approx(
        quadratic_weighted_kappa([0.0, 0.5, 1.0, 0.5], [0.0, 1.0, 0.5, 0.5])
    )

    scores = score_ordinal(gold, pred, n_boot=200)
    assert scores.n == 5
    assert scores.n_parsed == 4
    assert scores.parse_failure_rate == pytest.approx(0.2)
    assert scores.accuracy == pytest.approx(0.4)
    assert scores.mae == pytest.approx(0.25)
    assert scores.qwk == pytest.approx(METRICS["qwk"](gold, pred))
    assert scores.confusion == confusion_matrix(gold, pred)


def test_nothing_parsed():
    scores = score_ordinal([0.0, 0.5, 1.0], [None, None, None], n_boot=50)
    assert scores.n_parsed == 0
    assert scores.parse_failure_rate == 1.0
    assert scores.accuracy == 0.0
    assert scores.qwk == 0.0
    assert scores.mae == 1.0
    assert scores.qwk_ci == (0.0, 0.0)
    assert scores.mae_ci == (1.0, 1.0)
    assert scores.confusion == [[0, 0, 0], [0, 0, 0], [0, 0, 0]]


def test_score_ordinal_rejects_empty():
    with pytest.raises(ValueError):
        score_ordinal([], [])


@settings(max_examples=examples(100), deadline=None)
@given(pairs_with_none)
def test_metrics_agree_with_plain_python(data):
    gold, pred = map(list, zip(*data))
    parsed = [(g, p) for g, p in data if p is not None]
    assert METRICS["accuracy"](gold, pred) == pytest.approx(
        sum(g == p for g, p in data) / len(data)
    )
    expected_mae = sum(abs(g - p) for g, p in parsed) / len(parsed) if parsed else 1.0
    assert METRICS["mae"](gold, pred) == pytest.approx(expected_mae)


# --- bootstrap intervals ----------------------------------------------------


def sample(n=300, seed=0, flip=0.3, fail=0.05):
    rng = np.random.default_rng(seed)
    gold = rng.choice(LABELS, size=n).tolist()
    return gold, noisy(gold, rng, flip=flip, fail=fail)


def test_bootstrap_ci_contains_point_estimate():
    gold, pred = sample()
    s = score_ordinal(gold, pred)
    for value, (low, high) in [
        (s.accuracy, s.accuracy_ci),
        (s.qwk, s.qwk_ci),
        (s.mae, s.mae_ci),
    ]:
        assert low <= value <= high
        assert low < high


def test_bootstrap_is_deterministic_for_a_seed():
    gold, pred = sample()
    assert score_ordinal(gold, pred, seed=7) == score_ordinal(gold, pred, seed=7)
    assert score_ordinal(gold, pred, seed=7) != score_ordinal(gold, pred, seed=8)


def test_higher_confidence_gives_wider_interval():
    gold, pred = sample()
    narrow = score_ordinal(gold, pred, confidence=0.8).qwk_ci
    wide = score_ordinal(gold, pred, confidence=0.99).qwk_ci
    assert wide[0] <= narrow[0] and narrow[1] <= wide[1]
    # strictly wider at both ends, for every interval, by about the ratio of the normal quantiles (2.58 / 1.28)
    a, b = score_ordinal(gold, pred, confidence=0.8), score_ordinal(gold, pred, confidence=0.99)
    for name in ("accuracy_ci", "qwk_ci", "mae_ci"):
        (nl, nh), (wl, wh) = getattr(a, name), getattr(b, name)
        assert wl < nl and nh < wh, name
        assert (wh - wl) > 1.5 * (nh - nl), name


@pytest.mark.parametrize("kwargs", [{"n_boot": 0}, {"confidence": 1.0}, {"confidence": 0.0}])
def test_bootstrap_rejects_bad_settings(kwargs):
    gold, pred = sample(n=20)
    with pytest.raises(ValueError):
        score_ordinal(gold, pred, **kwargs)


def test_scores_model_round_trips():
    gold, pred = sample(n=50)
    s = score_ordinal(gold, pred, n_boot=100)
    assert OrdinalScores.model_validate_json(s.model_dump_json()) == s


# --- paired bootstrap -------------------------------------------------------


@pytest.mark.parametrize("metric", ["accuracy", "qwk", "mae"])
def test_paired_clear_improvement(metric):
    gold, baseline = sample(n=200, flip=0.6, fail=0.1)
    c = paired_bootstrap(gold, baseline, gold, metric=metric)
    assert c.verdict == "improved"
    assert c.delta == pytest.approx(c.calibrated - c.baseline)
    assert c.baseline == pytest.approx(METRICS[metric](gold, baseline))
    assert c.calibrated == pytest.approx(METRICS[metric](gold, gold))


@pytest.mark.parametrize("metric", ["accuracy", "qwk", "mae"])
def test_paired_clear_regression(metric):
    gold, worse = sample(n=200, flip=0.6, fail=0.1)
    assert paired_bootstrap(gold, gold, worse, metric=metric).verdict == "worse"


@pytest.mark.parametrize("metric", ["accuracy", "qwk", "mae"])
def test_paired_identical_is_no_change(metric):
    gold, pred = sample(n=200)
    c = paired_bootstrap(gold, pred, list(pred), metric=metric)
    assert c.verdict == "no significant change"
    assert c.delta == 0.0
    assert c.delta_ci == (0.0, 0.0)


def test_paired_small_noise_is_no_change():
    rng = np.random.default_rng(3)
    gold = rng.choice(LABELS, size=100).tolist()
    baseline = noisy(gold, rng, flip=0.3)
    calibrated = list(baseline)
    calibrated[0] = gold[0]
    assert paired_bootstrap(gold, baseline, calibrated).verdict == "no significant change"


def test_paired_mae_direction_is_flipped():
    gold, baseline = sample(n=200, flip=0.6, fail=0.0)
    better = paired_bootstrap(gold, baseline, gold, metric="mae")
    assert better.delta < 0
    assert better.delta_ci[1] < 0
    assert better.verdict == "improved"
    worse = paired_bootstrap(gold, gold, baseline, metric="mae")
    assert worse.delta > 0
    assert worse.delta_ci[0] > 0
    assert worse.verdict == "worse"


def test_paired_too_few_examples():
    gold = [0.0, 0.5, 1.0, 0.5, 0.0]
    c = paired_bootstrap(gold, [1.0, 0.0, 0.0, 1.0, 1.0], gold)
    assert c.verdict == "too few examples"
    assert c.n == 5
    at_threshold = paired_bootstrap(gold, [1.0, 0.0, 0.0, 1.0, 1.0], gold, min_n=5)
    assert at_threshold.verdict != "too few examples"


def test_paired_parse_failures_count_against_accuracy():
    gold, _ = sample(n=100)
    baseline = [None if i % 2 else g for i, g in enumerate(gold)]
    c = paired_bootstrap(gold, baseline, gold, metric="accuracy")
    assert c.baseline == pytest.approx(0.5)
    assert c.verdict == "improved"


def test_paired_is_deterministic_and_validates():
    gold, baseline = sample(n=100)
    _, calibrated = sample(n=100, seed=1)
    a = paired_bootstrap(gold, baseline, calibrated, seed=5)
    assert a == paired_bootstrap(gold, baseline, calibrated, seed=5)
    with pytest.raises(ValueError):
        paired_bootstrap(gold, baseline, calibrated, metric="f1")
    with pytest.raises(ValueError):
        paired_bootstrap(gold, baseline, calibrated[:-1])


# --- describe -----------------------------------------------------------------


def test_describe_improvement():
    c = PairedComparison(
        metric="qwk",
        n=20,
        baseline=0.41,
        calibrated=0.63,
        delta=0.22,
        delta_ci=(0.08, 0.35),
        verdict="improved",
    )
    assert describe(c) == (
        "qwk 0.41 → 0.63 on 20 held-out examples, +0.22, 95% CI [+0.08, +0.35]: improved"
    )


def test_describe_negative_delta_and_confidence():
    c = PairedComparison(
        metric="mae",
        n=1,
        baseline=0.3,
        calibrated=0.1,
        delta=-0.2,
        delta_ci=(-0.3, 0.05),
        verdict="too few examples",
        confidence=0.9,
    )
    assert describe(c) == (
        "mae 0.30 → 0.10 on 1 held-out example, -0.20, 90% CI [-0.30, +0.05]: too few examples"
    )


def test_describe_from_paired_bootstrap():
    gold, baseline = sample(n=50)
    text = describe(paired_bootstrap(gold, baseline, gold, confidence=0.9))
    assert text.startswith("qwk ")
    assert "on 50 held-out examples" in text
    assert "90% CI [" in text
