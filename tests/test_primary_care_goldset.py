"""goldsets/primary_care.py: the in-domain grader gold set ships as labels pointing at MTS-Dialog cut points, built into a
gold set from the corpus (never copied here); drafts are drawn from training sessions only."""

import csv
import importlib.util
import io
import json

import pytest

from calibrator.components.grader import GRADER
from calibrator.goldset import load_goldset
from calibrator.splits import split_of
from support import ROOT

spec = importlib.util.spec_from_file_location("primary_care", ROOT / "goldsets" / "primary_care.py")
primary_care = importlib.util.module_from_spec(spec)
spec.loader.exec_module(primary_care)

FIXTURE = ROOT / "tests/fixtures/corpora/mts-dialog.csv"
SHIPPED_CORPUS = ROOT.parent / "shared/data/mts-dialog/Main-Dataset/MTS-Dialog-TrainingSet.csv"


def labels(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=primary_care.LABEL_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" for k in primary_care.LABEL_COLUMNS} | row)
    return path


def test_build_fills_the_dialogue_and_the_experts_question_from_the_corpus(tmp_path):
    path = labels(tmp_path / "labels.csv", [
        {"id": "pc-1", "cut": "0_0", "candidate_source": "expert", "target_info": "symptom: pain on stairs",
         "content_score": "1", "format_score": "1", "annotator": "a"},
        {"id": "pc-2", "cut": "0_0", "candidate_source": "written", "candidate": "Did you fall?",
         "target_info": "symptom: pain on stairs", "content_score": "0", "format_score": "1", "annotator": "a"}])
    built = tmp_path / "gold.csv"
    built.write_text(primary_care.build(path, FIXTURE))
    rows = {r.id: r for r in load_goldset(built, GRADER.row_model).rows}
    assert rows["pc-1"].context == "pharmacist: What brings you in today?\npatient: My right knee hurts. It started last week, after a run."
    assert rows["pc-1"].candidate == "Does it hurt on the stairs?"  # the expert's own next question, read from the corpus
    assert rows["pc-2"].candidate == "Did you fall?" and rows["pc-2"].content_score == 0
    assert "hurt on the stairs" not in path.read_text() and "knee" not in path.read_text()  # no corpus text in the labels


def test_a_label_naming_a_cut_the_corpus_lacks_is_an_error_naming_its_row(tmp_path):
    path = labels(tmp_path / "labels.csv", [
        {"id": "pc-1", "cut": "0_0", "candidate_source": "expert", "target_info": "x: y", "content_score": "1"},
        {"id": "pc-2", "cut": "9_0", "candidate_source": "written", "candidate": "?", "target_info": "x: y", "content_score": "0"}])
    with pytest.raises(SystemExit, match=r"labels.csv, row 3, column 'cut': '9_0' is not a cut point"):
        primary_care.build(path, FIXTURE)


def test_a_draft_offers_only_training_sessions_with_the_policys_own_answers(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"id": f"{cut}#abc@0", "completion": f" answer at {cut} "}) + "\n"
                               for cut in ("0_0", "1_0", "3_0")))
    held = primary_care.held_out_sessions(primary_care.cut_points(FIXTURE))
    assert held == {"3"}  # round(0.2 * 3 sessions), by train.data.split's ranking
    rows = list(csv.DictReader(io.StringIO(primary_care.draft(samples, FIXTURE, cuts=10, seed=0))))
    cuts = {r["cut"] for r in rows}
    assert len(cuts) == 2 and not {c.split("_")[0] for c in cuts} & held
    assert [r["candidate_source"] for r in rows] == ["expert", "policy", "written"] * 2
    assert {r["candidate"] for r in rows if r["candidate_source"] == "policy"} == {f"answer at {c}" for c in cuts}
    # the question an expert row scores, shown to the labeller (the sessions held out: session 3's)
    assert {r["cut"]: r["candidate"] for r in rows if r["candidate_source"] == "expert"} == {
        "0_0": "Does it hurt on the stairs?", "1_0": "How much, and how often?"}


def test_the_shipped_labels_build_a_valid_gold_set_of_training_sessions_spanning_every_label():
    assert SHIPPED_CORPUS.is_file(), "../shared/data holds MTS-Dialog beside every checkout this project runs in"
    samples = primary_care.cut_points(SHIPPED_CORPUS)
    held = primary_care.held_out_sessions(samples)
    with primary_care.LABELS.open(encoding="utf-8", newline="") as f:
        shipped = list(csv.DictReader(f))
    assert len(shipped) >= 150 and not {samples[r["cut"]].session_id for r in shipped} & held
    assert {r["candidate_source"] for r in shipped} == {"expert", "policy", "written"}
    built = io.StringIO(primary_care.build(primary_care.LABELS, SHIPPED_CORPUS))
    path = ROOT / ".cache" / "test-primary-care.csv"
    path.parent.mkdir(exist_ok=True)
    path.write_text(built.getvalue())
    try:
        rows = load_goldset(path, GRADER.row_model).rows
    finally:
        path.unlink()
    assert len(rows) == len(shipped) and {r.content_score for r in rows} == {0.0, 0.5, 1.0}
    splits = {}
    for row in shipped:  # a cut point's rows share one split: a context seen in train never comes back in val or test
        splits.setdefault(row["cut"], set()).add(split_of(row["id"]))
    assert all(len(s) == 1 for s in splits.values()) and set().union(*splits.values()) == {"train", "val", "test"}
