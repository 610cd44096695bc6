"""goldsets/primary_care.py: the in-domain grader gold set ships as labels pointing at MTS-Dialog cut points, built into a
gold set from the corpus (never copied here); drafts are drawn from training sessions only."""

import csv
import importlib.util
import io
import json
import re
import tempfile
from pathlib import Path

import pytest

from calibrator.components.grader import GRADER
from calibrator.expert_logs.logs import render
from calibrator.gold.goldset import load_goldset
from calibrator.gold.splits import split_of
from support import ROOT
from train import data
from train.config import CONFIGS, load_config

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


def test_built_with_expert_question_targets_the_rows_carry_the_doctors_next_question(tmp_path):
    """The same labels with the target a `targets: expert_question` run grades against: the doctor's next question, read
    from the corpus, on every row of the cut, whatever the labellers wrote as field: value."""
    path = labels(tmp_path / "labels.csv", [
        {"id": "pc-1", "cut": "0_0", "candidate_source": "written", "candidate": "Did you fall?",
         "target_info": "symptom: pain on stairs", "content_score": "0", "format_score": "1", "annotator": "a"},
        {"id": "pc-2", "cut": "1_0", "candidate_source": "written", "candidate": "How many a day?",
         "target_info": "dose: two tablets", "content_score": "1", "format_score": "1", "annotator": "a"}])
    built = tmp_path / "gold.csv"
    built.write_text(primary_care.build(path, FIXTURE, targets="expert_question"))
    rows = {r.id: r for r in load_goldset(built, GRADER.row_model).rows}
    assert rows["pc-1"].target_info == ["asked: Does it hurt on the stairs?"]
    assert rows["pc-2"].target_info == ["asked: How much, and how often?"]
    assert rows["pc-2"].content_score == 1 and rows["pc-1"].candidate == "Did you fall?"


def test_a_label_naming_a_cut_the_corpus_lacks_is_an_error_naming_its_row(tmp_path):
    path = labels(tmp_path / "labels.csv", [
        {"id": "pc-1", "cut": "0_0", "candidate_source": "expert", "target_info": "x: y", "content_score": "1"},
        {"id": "pc-2", "cut": "9_0", "candidate_source": "written", "candidate": "?", "target_info": "x: y", "content_score": "0"}])
    with pytest.raises(SystemExit, match=r"labels.csv, row 3, column 'cut': '9_0' is not a cut point"):
        primary_care.build(path, FIXTURE)


def trainer_held_out(corpus) -> set[str]:
    """What the shipped MTS-Dialog configs evaluate on when they read `corpus`, found by running the trainer's own
    sample stage (`samples_from_logs`, content off as in those configs) and its split."""
    held = set()
    for name in ("cpu-learn.yaml", "cpu-table.yaml"):
        config = load_config(CONFIGS / name, logs=corpus)
        with tempfile.TemporaryDirectory() as tmp:
            samples = data.samples_from_logs(config, Path(tmp) / "samples.jsonl")
        held |= {s.session_id for s in data.split(samples, config.eval_fraction, config.seed, config.content)[1]}
    return held


def test_a_draft_offers_only_training_sessions_with_the_policys_own_answers(tmp_path):
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"id": f"{cut}#abc@0", "completion": f" answer at {cut} "}) + "\n"
                               for cut in ("0_0", "1_0", "3_0")) + '{"id": "torn')
    held = primary_care.held_out_sessions(FIXTURE)
    assert held == trainer_held_out(FIXTURE) == {"3"}
    rows = list(csv.DictReader(io.StringIO(primary_care.draft(samples, FIXTURE, cuts=10, seed=0))))
    cuts = {r["cut"] for r in rows}
    assert len(cuts) == 2 and not {c.split("_")[0] for c in cuts} & held
    assert [r["candidate_source"] for r in rows] == ["expert", "policy", "written"] * 2
    assert {r["candidate"] for r in rows if r["candidate_source"] == "policy"} == {f"answer at {c}" for c in cuts}
    # the question an expert row scores, shown to the labeller (the sessions held out: session 3's)
    assert {r["cut"]: r["candidate"] for r in rows if r["candidate_source"] == "expert"} == {
        "0_0": "Does it hurt on the stairs?", "1_0": "How much, and how often?"}


def test_the_shipped_labels_build_a_valid_gold_set_of_training_sessions_spanning_every_label(tmp_path):
    assert SHIPPED_CORPUS.is_file(), "../shared/data holds MTS-Dialog beside every checkout this project runs in"
    samples = primary_care.cut_points(SHIPPED_CORPUS)
    with primary_care.LABELS.open(encoding="utf-8", newline="") as f:
        shipped = list(csv.DictReader(f))
    sessions = {samples[r["cut"]].session_id for r in shipped}
    assert len(shipped) >= 150 and not sessions & trainer_held_out(SHIPPED_CORPUS)
    assert {r["candidate_source"] for r in shipped} == set(primary_care.SOURCES)
    for row in shipped:  # the corpus's words stay in the corpus: an expert's question is read from it at build time
        dialogue = words(render(samples[row["cut"]].context + samples[row["cut"]].future))
        assert row["candidate_source"] != "expert" or row["candidate"] == "", row["id"]
        for column in ("target_info", "note", *(("candidate",) if row["candidate_source"] != "policy" else ())):
            assert longest_shared_run(words(row[column]), dialogue) < 6, (row["id"], column)
    path = tmp_path / "gold.csv"
    path.write_text(primary_care.build(primary_care.LABELS, SHIPPED_CORPUS))
    rows = load_goldset(path, GRADER.row_model).rows
    assert len(rows) == len(shipped) and {r.content_score for r in rows} == {0.0, 0.5, 1.0}
    splits = {}
    for row in shipped:  # a cut point's rows share one split: a context seen in train never comes back in val or test
        splits.setdefault(row["cut"], set()).add(split_of(row["id"]))
    assert all(len(s) == 1 for s in splits.values()) and set().union(*splits.values()) == {"train", "val", "test"}


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def longest_shared_run(a: list[str], b: list[str]) -> int:
    """The longest run of consecutive words `a` shares with `b`."""
    grams = {n: {tuple(b[i:i + n]) for i in range(len(b) - n + 1)} for n in range(1, 8)}
    return max((n for n in range(1, 8) for i in range(len(a) - n + 1) if tuple(a[i:i + n]) in grams[n]), default=0)


def test_the_copy_check_sees_a_copied_sentence():
    dialogue = words("patient: I have had a dry cough for three weeks now and it is worse at night")
    assert longest_shared_run(words("dry cough for three weeks now"), dialogue) == 6
    assert longest_shared_run(words("duration: about three weeks"), dialogue) == 2
