"""The judge-corrected rate (calibrator/agreement/ppi.py) on simulated judges whose error we set: its 95% interval covers the true
rate in about 95% of 1,000 draws whether the judge is biased up, down or near-useless, and it is narrower than the
labelled-only interval when the judge agrees with humans."""

import numpy as np
import pytest

from calibrator.agreement.ppi import MIN_LABELS, corrected_difference, corrected_rate

DRAWS, N_JUDGED, N_LABELLED = 1000, 2000, 100


def simulate(rng, rate: float, false_pos: float, false_neg: float, n_judged: int = N_JUDGED):
    """n_judged outputs whose human label is 1 with probability `rate`; a judge that says 1 on a 0 with false_pos and 0
    on a 1 with false_neg; a random N_LABELLED of them labelled: (judge on the others, judge on those, their labels)."""
    human = rng.random(n_judged) < rate
    flip = np.where(human, rng.random(n_judged) < false_neg, rng.random(n_judged) < false_pos)
    judge = (human ^ flip).astype(float)
    labelled = np.zeros(n_judged, dtype=bool)
    labelled[rng.choice(n_judged, N_LABELLED, replace=False)] = True
    return judge[~labelled], judge[labelled], human[labelled].astype(float)


@pytest.mark.parametrize("rate, false_pos, false_neg, n_judged", [
    (0.3, 0.05, 0.05, N_JUDGED),  # a good judge
    (0.3, 0.30, 0.05, N_JUDGED),  # one that says "good question" far too often
    (0.6, 0.02, 0.40, N_JUDGED),  # one that misses good questions
    (0.4, 0.45, 0.45, N_JUDGED),  # close to a coin
    (0.3, 0.05, 0.05, 150),  # few judged outputs beside the labelled ones: their sampling error counts in the interval
])
def test_the_interval_covers_the_true_rate_in_about_95_percent_of_draws(rate, false_pos, false_neg, n_judged):
    rng = np.random.default_rng(7)
    results = [corrected_rate(*simulate(rng, rate, false_pos, false_neg, n_judged)) for _ in range(DRAWS)]
    coverage = np.mean([r.ci[0] <= rate <= r.ci[1] for r in results])
    assert 0.93 <= coverage <= 0.97, coverage  # 1,000 draws: a binomial SD of 0.7 points around 95%
    assert abs(np.mean([r.corrected for r in results]) - rate) < 0.01


def test_a_biased_judges_own_rate_misses_the_truth_where_the_corrected_one_does_not():
    rng = np.random.default_rng(1)
    result = corrected_rate(*simulate(rng, 0.3, 0.30, 0.05))
    assert result.judge > 0.45 and result.ci[0] <= 0.3 <= result.ci[1]
    assert abs(result.corrected - 0.3) < 0.05 < abs(result.judge - 0.3) and result.ci[1] - result.ci[0] < 0.25


def test_a_good_judge_narrows_the_interval_and_a_useless_one_does_not_widen_it_much():
    rng = np.random.default_rng(3)
    good = [corrected_rate(*simulate(rng, 0.3, 0.05, 0.05)) for _ in range(200)]
    width = lambda r, key: r.__getattribute__(key)[1] - r.__getattribute__(key)[0]  # noqa: E731
    assert np.mean([width(r, "ci") for r in good]) < 0.6 * np.mean([width(r, "labelled_only_ci") for r in good])
    assert np.mean([r.weight for r in good]) > 0.8
    coin = [corrected_rate(*simulate(rng, 0.3, 0.5, 0.5)) for _ in range(200)]
    assert np.mean([width(r, "ci") for r in coin]) < 1.05 * np.mean([width(r, "labelled_only_ci") for r in coin])


def test_plain_ppi_is_weight_one_and_labels_alone_are_weight_zero():
    unlabelled, judged_labelled, human = simulate(np.random.default_rng(5), 0.3, 0.2, 0.1)
    plain = corrected_rate(unlabelled, judged_labelled, human, weight=1.0)
    assert plain.corrected == pytest.approx(unlabelled.mean() + (human - judged_labelled).mean())
    assert plain.judge == pytest.approx(np.concatenate([unlabelled, judged_labelled]).mean()) and plain.n_judged == N_JUDGED
    alone = corrected_rate(unlabelled, judged_labelled, human, weight=0.0)
    assert alone.corrected == pytest.approx(human.mean()) and alone.ci == pytest.approx(alone.labelled_only_ci)
    every = corrected_rate([], judged_labelled, human)  # everything labelled: the labels are the answer
    assert every.weight == 0.0 and every.corrected == pytest.approx(human.mean())


def test_few_labels_are_flagged_and_mismatched_inputs_refused():
    assert not corrected_rate([1, 0, 1, 0], [1, 0], [1, 1]).enough_labels
    with pytest.raises(ValueError, match="need at least 2 labelled outputs"):
        corrected_rate([1, 0, 1], [1], [1])
    assert corrected_rate([1, 0] * 50, [1, 0] * (MIN_LABELS // 2), [1, 0] * (MIN_LABELS // 2)).enough_labels
    with pytest.raises(ValueError, match="3 judge scores for 2 human labels"):
        corrected_rate([1, 0, 1], [1, 0, 1], [1, 0])


@pytest.mark.parametrize("scale_a, scale_b", [(1.0, 1.0), (0.8, 0.5)])
def test_the_difference_of_two_corrected_rates_covers_the_true_difference(scale_a, scale_b):
    """Base judged too kindly, trained too harshly, labelled independently (as `train eval --review` draws them): the
    interval of trained minus base, each scaled by a known share, covers the true difference in about 95% of draws."""
    rng = np.random.default_rng(11)
    base_rate, trained_rate = 0.3, 0.4
    truth = scale_b * trained_rate - scale_a * base_rate
    diffs = [corrected_difference(corrected_rate(*simulate(rng, base_rate, 0.25, 0.05, 300)),
                                  corrected_rate(*simulate(rng, trained_rate, 0.05, 0.25, 300)), scale_a, scale_b)
             for _ in range(DRAWS)]
    coverage = np.mean([d.ci[0] <= truth <= d.ci[1] for d in diffs])
    assert 0.93 <= coverage <= 0.97, coverage
    assert abs(np.mean([d.delta for d in diffs]) - truth) < 0.01  # trained minus base, not the other way round
    assert all(d.enough_labels for d in diffs)
