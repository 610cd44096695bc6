"""The reward's format term: the question-count rule against the gold format_score, both agreements (LM and rule)
with CIs in the grader's scores and calibration record, the trainer's choice of source on val (never test), and
the reward taking R_format from the chosen source."""

from pathlib import Path

import pytest

from calibrator.components.grader import GraderRow
from calibrator.components.grader import GRADER, GraderPrediction, choose_format_source, count_questions, format_by_rule
from calibrator.gold.goldset import load_goldset
from calibrator.prompt import Calibration, load_prompt, save_prompt
from train.__main__ import _format_source
from train.config import TrainConfig
from calibrator.reward.functions import RewardFunction
from calibrator.reward.terms import score_terms
from support import ROOT
from support.training import calibration



def test_the_rule_equals_every_shipped_gold_format_score():
    rows = [r for r in load_goldset(ROOT / "goldsets/grader.csv", GraderRow).rows if r.format_score is not None]
    assert len(rows) >= 75
    assert [(r.id, r.candidate) for r in rows if format_by_rule(r.candidate) != r.format_score] == []


@pytest.mark.parametrize("candidate, questions, score", [
    ("Is it worse at night?", 1, 1.0),
    ("Oh dear. Is it worse at night?", 1, 1.0),
    ("Is it worse at night?? Really??", 2, 0.5),  # a run of ? is one question
    ("Is it worse at night?! Any fever?", 2, 0.5),  # ?! is one question
    ("Really!? How long has it lasted?", 2, 0.5),  # so is !?
    ("Great! That helps. Any fever?", 1, 1.0),  # ! alone is not a question
    ("How long? Any fever? Any rash?", 3, 0.0),
    ("How long? Any fever? Any rash? Any cough?", 4, 0.0),
    ("Tell me how long it has lasted.", 0, 0.0),  # a request without ? is not counted
    ("", 0, 0.0),
    ('"How long has it lasted?"', 1, 1.0),  # a turn wrapped in quotes still asks its question
    ('Did the leaflet say "any allergies?" at all?', 2, 0.5),  # punctuation, not meaning: a quoted question counts
    ("Any fever ? Any rash ?", 2, 0.5),
])
def test_rule_counts_runs_of_question_marks(candidate, questions, score):
    assert count_questions(candidate) == questions
    assert format_by_rule(candidate) == score


def row(i: int, candidate: str, fmt: float | None) -> GraderRow:
    return GraderRow(id=f"r{i}", context="patient: I have a cough", target_info=["duration: 3 days"], candidate=candidate,
                     content_score=1.0, format_score=fmt)


ROWS = [row(0, "How long?", 1.0), row(1, "How long? Any fever?", 0.5), row(2, "Take two a day.", 0.0),
        row(3, "How long? Any fever? Any rash?", 0.0), row(4, "Any fever?", None),  # no gold format: not counted
        row(5, "Any rash?", 0.5)]  # the human disagrees with the count here
PREDS = [GraderPrediction(content_score=1.0, format_score=1.0), GraderPrediction(content_score=1.0, format_score=1.0),
         GraderPrediction(content_score=1.0, format_score=0.0), GraderPrediction(content_score=1.0, format_score=None),
         GraderPrediction(content_score=1.0, format_score=0.0), GraderPrediction(content_score=1.0, format_score=0.5)]


def test_scores_carry_both_format_agreements_with_bootstrap_intervals():
    scores = GRADER.score(ROWS, PREDS, seed=0, n_boot=500)
    assert scores.format_n == 5
    assert scores.format_accuracy == pytest.approx(3 / 5)  # rows 0, 2, 5 right; row 3 unparsed counts as wrong
    assert scores.format_rule_accuracy == pytest.approx(4 / 5)  # all but row 5
    for value, (low, high) in ((scores.format_accuracy, scores.format_accuracy_ci),
                               (scores.format_rule_accuracy, scores.format_rule_accuracy_ci)):
        assert 0.0 <= low < value < high <= 1.0
    again = GRADER.score(ROWS, PREDS, seed=0, n_boot=500)
    assert again.format_accuracy_ci == scores.format_accuracy_ci  # a seed gives the same interval


def test_no_gold_format_score_means_no_format_figures():
    rows = [r.model_copy(update={"format_score": None}) for r in ROWS]
    scores = GRADER.score(rows, PREDS, seed=0, n_boot=50)
    assert (scores.format_n, scores.format_accuracy, scores.format_accuracy_ci, scores.format_rule_accuracy,
            scores.format_rule_accuracy_ci) == (0, None, None, None, None)


def saved_grader(tmp_path: Path, record: Calibration | None) -> Path:
    path = tmp_path / "grader.calibrated.yaml"
    save_prompt(load_prompt(ROOT / "prompts/grader.yaml").model_copy(update={"calibration": record}), path)
    return path


def fmt(lm: float, rule: float) -> dict:
    return {"format_n": 20, "format_accuracy": lm, "format_accuracy_ci": [lm - 0.1, min(1.0, lm + 0.1)],
            "format_rule_accuracy": rule, "format_rule_accuracy_ci": [rule - 0.1, min(1.0, rule + 0.1)]}


def test_the_summary_records_both_agreements_and_survives_the_prompt_file(tmp_path):
    summary = GRADER.summary(GRADER.score(ROWS, PREDS, seed=0, n_boot=200), len(ROWS))
    assert {"format_n", "format_accuracy", "format_accuracy_ci", "format_rule_accuracy", "format_rule_accuracy_ci"} <= set(summary)
    path = saved_grader(tmp_path, calibration(val=summary, test=summary))
    choice = _format_source(TrainConfig(grader_prompt=path))
    assert (choice.source, choice.val_n, choice.lm_val_accuracy, choice.rule_val_accuracy) == ("rule", 5, 0.6, 0.8)
    assert choice.rule_val_accuracy_ci == pytest.approx(summary["format_rule_accuracy_ci"])


@pytest.mark.parametrize("val, test, source", [
    (fmt(lm=0.95, rule=0.80), fmt(lm=0.50, rule=1.00), "lm"),  # the LM better on val, the rule on test: val decides
    (fmt(lm=0.80, rule=0.95), fmt(lm=1.00, rule=0.50), "rule"),
    (fmt(lm=0.90, rule=0.90), fmt(lm=1.00, rule=0.50), "rule"),  # a tie goes to the rule
])
def test_the_source_is_chosen_on_val_never_test(tmp_path, val, test, source):
    choice = _format_source(TrainConfig(grader_prompt=saved_grader(tmp_path, calibration(val=val, test=test))))
    assert choice.source == source
    assert (choice.lm_val_accuracy, choice.rule_val_accuracy) == (val["format_accuracy"], val["format_rule_accuracy"])


def test_without_a_record_of_format_agreement_the_rule_is_used(tmp_path):
    none = _format_source(TrainConfig(grader_prompt=saved_grader(tmp_path, None)))
    assert none.source == "rule" and "no calibration record" in none.reason
    old = _format_source(TrainConfig(grader_prompt=saved_grader(tmp_path, calibration(val={"qwk": 0.1, "n": 24}, test={"qwk": 0.0}))))
    assert old.source == "rule" and "no format agreement on val" in old.reason
    assert choose_format_source({**fmt(0.9, 0.8), "format_accuracy": None}).source == "rule"


def lying_grader(format_score: float):
    """A grader whose content answer is right and whose format answer is always `format_score`."""
    def grade(context: str, target: str, candidate: str) -> GraderPrediction:
        return GraderPrediction(content_score=1.0, format_score=format_score)
    return grade


def test_with_the_rule_the_lms_format_answer_does_not_change_r_format():
    one, three = "How long has it lasted?", "How long? Any fever? Any rash?"
    for answer in (0.0, 0.5, 1.0):
        assert score_terms(one, "continue", "c", "duration: x", lying_grader(answer), "rule").format == 1.0
        assert score_terms(three, "continue", "c", "duration: x", lying_grader(answer), "rule").format == 0.0
    assert score_terms(one, "continue", "c", "duration: x", lying_grader(0.0), "lm").format == 0.0  # the LM's answer when chosen


def test_the_reward_function_takes_r_format_from_the_chosen_source():
    batch = {"prompts": [[]] * 2, "completions": ["How long has it lasted?", "How long? Any fever? Any rash?"],
             "context": ["patient: a"] * 2, "target_info": ["duration: 2 days"] * 2, "decision": ["continue"] * 2}
    assert RewardFunction(lying_grader(0.5), "default", "rule", concurrency=2)(**batch) == [3 + 1.0, 3 + 0.0]
    assert RewardFunction(lying_grader(0.5), "default", "lm", concurrency=2)(**batch) == [3 + 0.5, 3 + 0.5]
