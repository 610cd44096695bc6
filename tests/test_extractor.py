"""The extractor's pure parts: gold rows, the item matcher and metrics, parsing, the optimizers' metric, and
the resumable extract loop (driven by DSPy's DummyLM; the real-LM path is in test_e2e)."""

import csv
import json
from pathlib import Path

import dspy
import numpy as np
import pytest
from dspy.utils.dummies import DummyLM
from pydantic import TypeAdapter

from calibrator.components.extractor import ExtractorRow
from calibrator.cli import main
from calibrator.components.extractor import DEFAULT_FIELDS, EXTRACTOR, MAX_ITEMS, items_type, observed_future
from calibrator.components.extract import MadeBy, SampleIndex, TrainingSample, extract_samples, partial_path
from calibrator.gold.goldset import GoldSetError, load_goldset
from calibrator.agreement.items import match_items, normalise, paired_items, score_items, value_overlap
from calibrator.lm.spec import LMSpec
from calibrator.prompt import load_prompt
from train.data import read_samples
from support import ROOT
from support.extraction import Dies, samples

LOCAL = LMSpec.parse("local")
SHIPPED = ROOT / "goldsets" / "extractor.csv"
HEADER = ["id", "context", "future", "target_info", "decision", "note"]


def write(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=HEADER, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def good(**changes: str) -> dict:
    row = {"id": "x1", "context": "patient: I've got a cough", "future": "pharmacist: How long?\npatient: three days",
           "target_info": "duration: three days", "decision": "continue"}
    return row | changes


# ---- gold set -------------------------------------------------------------------------------------------

def test_shipped_goldset_has_both_decisions_in_every_split():
    gold = load_goldset(SHIPPED, ExtractorRow)
    assert len(gold.rows) >= 40
    for split in ("train", "val", "test"):
        assert {r.decision for r in gold.split(split)} == {"continue", "stop"}
    assert all(r.target_info == [] for r in gold.rows if r.decision == "stop")


@pytest.mark.parametrize("changes, column, words", [
    ({"decision": "stop"}, "decision", "patient"),  # a patient line follows the run
    ({"future": "pharmacist: Take this twice a day."}, "decision", "no `patient:` line"),
    ({"future": "pharmacist: Take this.", "decision": "stop"}, "decision", "no target_info"),
    ({"target_info": ""}, "decision", "at least one"),
    ({"future": "patient: hello"}, "future", "start with the pharmacist"),
    ({"context": "pharmacist: Hello, how can I help?"}, "context", "no `patient:` line"),
    ({"decision": "maybe"}, "decision", "`continue` or `stop`"),
    ({"target_info": "duration"}, "target_info", "not `field: value`"),
])
def test_bad_extractor_rows_name_row_and_column(tmp_path, changes, column, words):
    path = write(tmp_path / "e.csv", [good(id="ok"), good(**changes)])
    with pytest.raises(GoldSetError) as e:
        load_goldset(path, ExtractorRow)
    [problem] = e.value.problems
    assert (problem.row, problem.column) == (3, column)
    assert words in problem.message


def test_cli_reports_extractor_goldset_problems_and_runs_nothing(tmp_path, capsys):
    path = write(tmp_path / "e.csv", [good(decision="stop")])
    assert main(["eval", "--component", "extractor", "--goldset", str(path), "--out", str(tmp_path / "r")]) == 2
    assert "row 2, column 'decision'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_refuses_a_prompt_of_the_other_component(tmp_path, capsys):
    code = main(["eval", "--component", "extractor", "--prompt", str(ROOT / "prompts/grader.yaml"), "--out", str(tmp_path)])
    assert code == 2 and "is a grader prompt" in capsys.readouterr().err


# ---- matcher and metrics ------------------------------------------------------------------------------

def test_matcher_normalises_and_needs_the_same_field():
    assert normalise("  Duration:  About THREE days!! ") == "duration about three days"
    assert value_overlap("about three days", "three days") == pytest.approx(0.8)
    assert match_items(["Duration: about three days"], ["duration: three days."]) == [(0, 0)]
    assert match_items(["duration: three days"], ["severity: three days"]) == []
    assert match_items(["duration: three days"], ["duration: since monday"]) == []
    # one-to-one: a repeated prediction earns one match, the best overlap wins
    assert match_items(["allergies: none"], ["allergies: none at all", "allergies: none"]) == [(0, 1)]
    assert match_items(["pregnancy/breastfeeding: breastfeeding"], ["pregnancy / breastfeeding: yes, breastfeeding"]) == [(0, 0)]


def test_item_scores_by_hand():
    gold = [(["duration: three days", "allergies: none"], "continue"), (["age group: child"], "continue"), ([], "stop"), ([], "stop")]
    pred = [(["duration: since monday", "allergies: none"], "continue"),  # 1 of 2 match
            (["age group: a child", "symptom: cough"], "continue"),  # 1 match, 1 invented
            ([], "stop"),  # clean stop
            (None, None)]  # parse failure: no items, wrong decision
    s = score_items(gold, pred, seed=1)
    assert (s.n, s.n_parsed, s.n_stop) == (4, 3, 2)
    assert s.item_precision == pytest.approx(2 / 4) and s.item_recall == pytest.approx(2 / 3)
    assert s.item_f1 == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert s.decision_accuracy == pytest.approx(3 / 4) and s.parse_failure_rate == pytest.approx(0.25)
    assert s.no_invention_rate == pytest.approx(1.0)
    assert s.decision_confusion == [[2, 0], [0, 1]]
    assert s.per_field["duration"].gold == 1 and s.per_field["duration"].matched == 0
    assert s.per_field["symptom"].predicted == 1 and s.per_field["symptom"].precision == 0
    for name in ("item_precision", "item_recall", "item_f1", "decision_accuracy"):
        low, high = getattr(s, f"{name}_ci")
        assert low <= getattr(s, name) <= high


def test_no_invention_rate_counts_parsed_answers_only():
    """An unparsed answer on a stop sample predicts no items, yet it did not refrain from inventing one."""
    gold = [([], "stop"), ([], "stop"), ([], "stop"), (["duration: a week"], "continue")]
    pred = [([], "stop"),  # refrained
            (["symptom: cough"], "continue"),  # invented
            (None, None),  # did not parse: neither
            (["duration: a week"], "continue")]
    s = score_items(gold, pred, seed=1)
    assert s.no_invention_rate == pytest.approx(1 / 2)
    assert s.n_stop == 3 and s.parse_failure_rate == pytest.approx(1 / 4)
    unparsed = score_items([([], "stop"), (["duration: a week"], "continue")], [(None, None), (["duration: a week"], "continue")])
    assert unparsed.no_invention_rate is None and unparsed.no_invention_rate_ci is None


def test_a_parse_failure_rate_of_one_in_twenty_is_exactly_five_percent():
    gold = [(["duration: a week"], "continue")] * 20
    assert score_items(gold, [(None, None)] + gold[1:], n_boot=10).parse_failure_rate == 0.05


def test_no_prediction_scores_zero_and_no_stop_samples_give_no_invention_rate():
    s = score_items([(["duration: a week"], "continue")], [([], "continue")])
    assert (s.item_precision, s.item_recall, s.item_f1) == (0.0, 0.0, 0.0)
    assert s.no_invention_rate is None and s.no_invention_rate_ci is None


def test_paired_items_verdict():
    rng = np.random.default_rng(0)
    gold = [([f"duration: {i} days"], "continue") for i in range(30)]
    same = [([f"duration: {i} days"], "continue") if rng.random() < 0.5 else ([], "continue") for i in range(30)]
    assert paired_items(gold, same, same).verdict == "no significant change"
    perfect = [(items, d) for items, d in gold]
    better = paired_items(gold, [([], "continue")] * 30, perfect)
    assert better.verdict == "improved" and better.delta == pytest.approx(1.0)
    assert paired_items(gold[:5], same[:5], perfect[:5]).verdict == "too few examples"


# ---- component ------------------------------------------------------------------------------------------

def test_observed_future_stops_after_the_patient_reply():
    future = "pharmacist: How long?\npharmacist: And any fever?\npatient: a week\npatient: no fever\npharmacist: OK.\npatient: thanks"
    assert observed_future(future) == "pharmacist: How long?\npharmacist: And any fever?\npatient: a week\npatient: no fever"
    assert observed_future("pharmacist: Take two a day.") == "pharmacist: Take two a day."


def test_items_schema_pins_the_vocabulary_but_parsing_stays_lenient():
    adapter = TypeAdapter(items_type(DEFAULT_FIELDS))
    schema = adapter.json_schema()
    assert schema["maxItems"] == MAX_ITEMS and "current medication" in schema["items"]["pattern"]
    assert adapter.validate_python(["anything at all"]) == ["anything at all"]


def test_parse_metric_and_feedback():
    assert EXTRACTOR.parse(dspy.Prediction(decision=" Stop ", target_info=[])).decision == "stop"
    parsed = EXTRACTOR.parse(dspy.Prediction(decision="continue", target_info="duration: 3 days; allergies: none"))
    assert parsed.target_info == ["duration: 3 days", "allergies: none"]
    assert EXTRACTOR.parse(dspy.Prediction(decision="maybe", target_info=[])).error.startswith("parse:")
    example = dspy.Example(decision="continue", target_info=["duration: three days"])
    assert EXTRACTOR.metric(example, dspy.Prediction(decision="continue", target_info=["duration: three days"])) == 1.0
    assert EXTRACTOR.metric(example, dspy.Prediction(decision="stop", target_info=[])) == 0.0
    assert EXTRACTOR.metric(example, dspy.Prediction(decision="continue", target_info=["age group: adult"])) == 0.5
    stop = dspy.Example(decision="stop", target_info=[])
    assert EXTRACTOR.metric(stop, dspy.Prediction(decision="stop", target_info=[])) == 1.0
    assert EXTRACTOR.metric(stop, dspy.Prediction(decision="stop", target_info=["allergies: none"])) == 0.5
    text = EXTRACTOR.feedback(example, dspy.Prediction(decision="continue", target_info=["age group: adult"])).feedback
    assert "missed: duration: three days" in text and "not asked by the pharmacist: age group: adult" in text


def test_fields_come_from_the_prompt_file():
    prompt = load_prompt(ROOT / "prompts/extractor.yaml").model_copy(update={"fields": ["sputum colour"]})
    signature = EXTRACTOR.signature_for(prompt)
    assert "sputum colour" in signature.output_fields["target_info"].json_schema_extra["desc"]
    assert "allergies" not in signature.output_fields["target_info"].json_schema_extra["desc"]


def test_loo_score_rewards_neighbours_with_the_same_fields_and_decision():
    rows = load_goldset(SHIPPED, ExtractorRow).rows
    same = [r for r in rows if r.decision == "stop"][:3]
    neighbours = [[((i + 1) % 3, 0.9)] for i in range(3)]
    assert EXTRACTOR.loo_score(same, neighbours) == 1.0


# ---- extract: resumable, never truncated -----------------------------------------------------------------

def test_extract_resumes_without_redoing_or_duplicating(tmp_path):
    prompt = load_prompt(ROOT / "prompts/extractor.yaml")
    out, todo = tmp_path / "samples.jsonl", samples(5)
    with dspy.context(lm=Dies(3), adapter=dspy.ChatAdapter()), pytest.raises(KeyboardInterrupt):
        extract_samples(todo, prompt, LOCAL, out, show_progress=False)
    # the 3 answers that came back, and the stop sample if it was read before the kill (it needs no LM call and is
    # written as soon as it is read)
    kept = [json.loads(line)["id"] for line in partial_path(out).read_text().splitlines()]
    assert not out.exists() and len(kept) == len(set(kept))
    assert {s.id for s in todo[:3]} <= set(kept) <= {s.id for s in todo[:3]} | {todo[-1].id}
    with open(partial_path(out), "a") as f:
        f.write('{"id": "s3_0", "session_id": "s3", "conte')  # a line torn by the kill
    second = Dies(100)
    with dspy.context(lm=second, adapter=dspy.ChatAdapter()):
        summary = extract_samples(todo, prompt, LOCAL, out, show_progress=False)
    assert second.made == 2 and (summary.reused, summary.extracted, summary.reextracted, summary.stops) == (len(kept), 2, 0, 1)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [s.id for s in todo]
    assert records[0]["target_info"] == ["allergies: none"] and records[0]["context"][0]["role"] == "user"
    assert records[-1] == records[-1] | {"decision": "stop", "target_info": []}
    assert not partial_path(out).exists()
    third = Dies(0)
    with dspy.context(lm=third, adapter=dspy.ChatAdapter()):
        assert extract_samples(todo, prompt, LOCAL, out, show_progress=False).reused == len(todo)


# ---- extract: a record is reused only by the prompt and LM that made it ------------------------------------

def stamps(out: Path) -> set[tuple[str | None, str | None]]:
    return {(r.get("prompt_sha256"), r.get("lm")) for r in map(json.loads, out.read_text().splitlines())}


def drop_stamps(out: Path) -> None:
    """Rewrite `out` as it was before records were stamped: no prompt_sha256, no lm."""
    records = [json.loads(line) for line in out.read_text().splitlines()]
    out.write_text("".join(json.dumps({k: v for k, v in r.items() if k not in ("prompt_sha256", "lm")}) + "\n" for r in records))


def extracted_once(tmp_path: Path):
    prompt, out, todo = load_prompt(ROOT / "prompts/extractor.yaml"), tmp_path / "samples.jsonl", samples(3)
    with dspy.context(lm=Dies(100), adapter=dspy.ChatAdapter()):
        extract_samples(todo, prompt, LOCAL, out, show_progress=False)
    return prompt, out, todo


def test_extract_stamps_every_record_and_reuses_them_for_the_same_prompt_and_lm(tmp_path):
    prompt, out, todo = extracted_once(tmp_path)
    assert stamps(out) == {(prompt.content_sha256(), "local")}  # the stop sample too, though it made no LM call
    again = Dies(100)
    with dspy.context(lm=again, adapter=dspy.ChatAdapter()):
        summary = extract_samples(todo, load_prompt(ROOT / "prompts/extractor.yaml"), LMSpec.parse("local"), out, show_progress=False)
    assert again.made == 0 and (summary.reused, summary.extracted, summary.reextracted) == (4, 0, 0)


@pytest.mark.parametrize("change", ["other prompt", "other lm", "no stamp"])
def test_extract_re_extracts_records_made_by_another_prompt_or_lm(tmp_path, change):
    prompt, out, todo = extracted_once(tmp_path)
    lm = LOCAL
    if change == "other prompt":
        prompt = prompt.model_copy(update={"instructions": prompt.instructions + "\nName only what the pharmacist asked."})
    elif change == "other lm":
        lm = LMSpec.parse("openai:gpt-4o-mini")
    else:
        drop_stamps(out)
    second = Dies(100)
    with dspy.context(lm=second, adapter=dspy.ChatAdapter()):
        summary = extract_samples(todo, prompt, lm, out, show_progress=False)
    assert second.made == 3 and (summary.reused, summary.extracted, summary.reextracted, summary.stops) == (0, 3, 3, 1)
    assert stamps(out) == {(prompt.content_sha256(), str(lm))}


class Fails(DummyLM):
    """An LM that fails every call, like a backend that answers garbage."""

    def __init__(self):
        super().__init__([])
        self.made = 0

    def forward(self, *args, **kwargs):
        self.made += 1
        raise RuntimeError("the backend answered 500 five times")


def test_a_failed_re_extraction_shows_the_failure_not_the_other_prompts_record(tmp_path):
    prompt, out, todo = extracted_once(tmp_path)
    other = prompt.model_copy(update={"instructions": prompt.instructions + "\nName only what the pharmacist asked."})
    failing = Fails()
    with dspy.context(lm=failing, adapter=dspy.ChatAdapter()):
        summary = extract_samples(todo, other, LOCAL, out, show_progress=False)
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    continues = [s.id for s in todo if s.decision == "continue"]
    assert failing.made >= len(continues) and summary.failed == len(continues)
    assert all(records[i]["error"] and records[i]["prompt_sha256"] == other.content_sha256() for i in continues)
    assert records[todo[-1].id]["error"] is None  # the stop sample needs no LM call


def test_read_samples_reads_records_from_before_stamping(tmp_path):
    _, out, todo = extracted_once(tmp_path)
    drop_stamps(out)
    records = read_samples(out)
    assert [r.id for r in records] == [s.id for s in todo]
    assert {(r.prompt_sha256, r.lm) for r in records} == {(None, None)}


def test_a_record_by_this_prompt_and_lm_wins_over_a_stale_one_for_the_same_sample(tmp_path):
    [sample] = samples(1)[:1]
    made_by = MadeBy(prompt_sha256="a" * 64, lm="local")
    base = TrainingSample(id=sample.id, session_id=sample.session_id, context=sample.context, future=sample.future,
                          target_info=["allergies: none"], decision="continue")
    fresh = base.model_copy(update=made_by.model_dump())
    stale = base.model_copy(update={"prompt_sha256": "b" * 64, "lm": "local"})

    def state(*records):
        index = SampleIndex(tmp_path / "index.sqlite", made_by)
        for record in records:
            index.add(record)
        try:
            return index.state(sample)
        finally:
            index.close()

    assert state(stale, fresh) == state(fresh, stale) == "reuse"
    assert state(stale) == "stale"
    assert state() == "new"
    assert state(fresh.model_copy(update={"future": sample.future[:1]})) == "new"  # another future: not this sample's record
    assert state(fresh.model_copy(update={"error": "parse: no JSON"})) == "new"  # a failed record is not finished