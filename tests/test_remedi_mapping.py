"""ReMeDi's human action labels mapped onto split decisions and extractor fields, and bench/remedi_actions.py's scoring:
the bench's figures are only as good as this logic, and it runs with no LM."""

import importlib.util
import math

import pytest

from calibrator.corpora.remedi import (INQUIRY_FIELDS, Action, AnnotatedSession, gold_stop_turn, read_annotated, turn_decision,
                                       turn_fields)
from calibrator.expert_logs.logs import Message, Session
from calibrator.prompt import load_prompt
from support import ROOT

FIXTURE = ROOT / "tests" / "fixtures" / "corpora" / "remedi.txt"
_spec = importlib.util.spec_from_file_location("remedi_actions", ROOT / "bench" / "remedi_actions.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def act(text: str) -> Action:
    act, _, slot = text.partition(" ")
    return Action(act=act, slot=slot)


def consultation(session_id: str, turns: list[tuple[str, str, list[str]]], greeting: str = "") -> AnnotatedSession:
    """(patient, doctor, actions) per exchange; an optional doctor greeting before the patient's first message."""
    messages = [Message(role="assistant", content=greeting)] if greeting else []
    for patient, doctor, _ in turns:
        messages += [Message(role="user", content=patient), Message(role="assistant", content=doctor)]
    actions = ([[act("Chitchat")]] if greeting else []) + [[act(a) for a in acts] for _, _, acts in turns]
    return AnnotatedSession(session=Session(session_id=session_id, messages=messages), actions=actions)


# A: asks once, then advises; "end" calls the advice `continue` because the patient speaks again.
A = consultation("a", [("头疼", "多久了？", ["Inquire time"]), ("两天", "吃布洛芬", ["Recommend medicine"]),
                       ("好的", "注意休息", ["Inform"]), ("谢谢", "不客气", ["Chitchat"])])
# B: the second inquiry has no question mark or particle, so `asks` misses it and "advice" stops one turn early.
B = consultation("b", [("发烧", "发烧吗", ["Inquire symptom"]), ("有点", "量一下体温", ["Inquire temperature"]),
                       ("38度", "可能是感冒", ["Diagnosis disease"])])


@pytest.mark.parametrize(("actions", "expected"), [
    (["Inquire time", "Recommend medicine"], "continue"),
    (["Inquire"], "continue"),
    (["Chitchat"], None),
    (["Other", "Chitchat"], None),
    ([], None),
    (["QuestionAnswering"], "stop"),
    (["Diagnosis disease"], "stop"),
    (["Chitchat", "Recommend precaution"], "stop"),
    (["Inform time"], "stop"),
])
def test_turn_decision(actions, expected):
    assert turn_decision([act(a) for a in actions]) == expected


def test_turn_fields_maps_inquiries_only():
    assert turn_fields([act("Inquire symptom"), act("Inquire time"), act("Recommend medicine")]) == {"symptom", "duration"}
    assert turn_fields([act("Inquire dose"), act("Inquire medicine")]) == {"current medication"}
    assert turn_fields([act("Inquire other"), act("Inquire precaution"), act("Inquire")]) == set()


def test_inquiry_fields_are_the_prompts_vocabulary():
    assert INQUIRY_FIELDS == {
        "symptom": "symptom", "time": "duration", "medicine": "current medication", "dose": "current medication",
        "check_item": "test results", "frequency": "frequency", "treatment": "previous treatment",
        "effect": "previous treatment", "disease_history": "medical history", "disease": "medical history",
        "range_body": "location", "degree": "severity", "temperature": "symptom", "pathogeny": "trigger",
    }
    assert set(INQUIRY_FIELDS.values()) <= set(load_prompt(ROOT / "prompts" / "extractor.primary-care.yaml").fields)


@pytest.mark.parametrize(("decisions", "expected"), [
    (["continue", "stop", "stop"], 1),  # advice after the last inquiry
    (["continue", "stop", "continue"], None),  # the last labelled turn still asks
    (["continue", None], None),
    (["continue", None, "stop", None], 2),  # unlabelled turns are skipped
    ([None, "stop", "continue", None, "stop"], 4),
    (["stop", "stop"], 0),  # never asks: stops at once
    ([None], None),
])
def test_gold_stop_turn(decisions, expected):
    assert gold_stop_turn(decisions) == expected


def test_split_decisions_count_advice_drops_as_stop():
    assert bench.split_decisions(A.session, "end") == {0: "continue", 1: "continue", 2: "continue", 3: "stop"}
    assert bench.split_decisions(A.session, "advice") == {0: "continue", 1: "stop", 2: "stop", 3: "stop"}
    greeted = consultation("g", [("头疼", "多喝水", ["Recommend"])], greeting="你好")
    assert bench.split_decisions(greeted.session, "end") == {1: "stop"}  # the greeting answers nobody: no sample


def test_rule_and_asks_agreement_with_labels():
    end, advice = (bench.decision_scores(bench.split_scored([A, B], stop), seed=0) for stop in ("end", "advice"))
    asked = bench.decision_scores(bench.asks_scored([A, B]), seed=0)
    assert (end.n, end.accuracy.hits, end.confusion) == (6, 4, [[3, 0, 0], [2, 1, 0]])
    assert (end.continue_recall, end.stop_recall) == (1.0, pytest.approx(1 / 3))
    assert (advice.accuracy.hits, advice.confusion) == (5, [[2, 1, 0], [0, 3, 0]])
    assert (advice.continue_recall, advice.stop_recall) == (pytest.approx(2 / 3), 1.0)
    assert (asked.accuracy.hits, asked.confusion) == (5, [[2, 1, 0], [0, 3, 0]])
    # resampling consultations: A alone scores 1/3, B alone 1, so both ends are reached
    assert (end.accuracy.low, end.accuracy.high) == (pytest.approx(1 / 3), 1.0)


def test_stop_point_agreement():
    end, advice = (bench.stop_scores([A, B], stop, seed=0) for stop in ("end", "advice"))
    assert (end.n, end.exact.hits, end.within_one.hits, end.no_stop) == (2, 1, 1, 0)  # A: 3 vs 1; B: 2 vs 2
    assert (advice.exact.hits, advice.within_one.hits) == (1, 2)  # A: 1 vs 1; B: 1 vs 2
    open_ended = consultation("o", [("头疼", "多久了？", ["Inquire time"]), ("两天", "吃布洛芬", ["Recommend"]),
                                    ("好", "疼吗？", ["Inform"])])  # the rule asks last; the labels stop at turn 1
    assert bench.stop_scores([open_ended], "advice", seed=0).no_stop == 1


def test_session_share_resamples_consultations():
    share = bench.session_share([("a", 0, 1), ("b", 1, 1), ("b", 1, 1), ("b", 1, 1)], seed=0)
    assert (share.value, share.low, share.high) == (0.75, 0.0, 1.0)  # a turn-level bootstrap would not reach 0
    weighted = bench.session_share([("a", 0, 0), ("b", 1, 2)], seed=0)
    assert (weighted.value, weighted.low, weighted.high) == (0.5, 0.5, 0.5)  # replicates with nothing to count are left out
    empty = bench.session_share([], seed=0)
    assert math.isnan(empty.value) and str(empty) == "n/a (nothing to count)"


def test_field_scores():
    accuracy, precision = bench.field_scores([("a", {"symptom"}, ["Symptom: 发热", "duration: 两天"]),
                                              ("a", {"duration"}, None),  # unparsed: wrong, no items
                                              ("b", {"location"}, ["severity: 重"])], seed=0)
    assert (accuracy.hits, accuracy.total) == (1, 3)
    assert (precision.hits, precision.total) == (1, 3)


def test_labelled_samples_of_the_fixture():
    sessions, _ = read_annotated(FIXTURE)
    got = [[(bench.doctor_turn(s), gold, fields) for s, gold, fields in bench.labelled_samples(a)] for a in sessions]
    assert got == [[(0, "continue", {"symptom"}), (1, "continue", {"duration"})],  # turn 2 has no action: no label
                   [(0, "continue", {"symptom"}), (1, "stop", set())]]
