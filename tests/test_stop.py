"""The stop judge, a third component added behind the Component interface: its rows, its metrics (accuracy and Cohen's
kappa), its disagreements and floors, and the whole round trip through the command line against the stub (run, report,
review, template, add)."""

import csv
import json
import re

import pytest
from openpyxl import load_workbook
from sklearn.metrics import cohen_kappa_score

from calibrator.components import COMPONENTS
from calibrator.components.stop import STOP, StopPrediction, StopRow, pharmacist_questions
from calibrator.gold.goldset import GoldSetError, load_goldset
from support import ROOT
from support.cli import Result, calibrator



def test_the_shipped_stop_gold_set_has_both_labels_in_every_split():
    gold = load_goldset(ROOT / "goldsets/stop.csv", StopRow)
    assert len(gold.rows) >= 60 and COMPONENTS["stop"] is STOP
    for split in ("train", "val", "test"):
        assert {r.decision for r in gold.split(split)} == {"continue", "stop"}


def test_a_bad_row_is_refused_with_its_row_and_column(tmp_path):
    path = tmp_path / "stop.csv"
    path.write_text('id,context,decision\na,"patient: hi",maybe\nb,"pharmacist: hello",stop\n', encoding="utf-8")
    with pytest.raises(GoldSetError) as e:
        load_goldset(path, StopRow)
    text = str(e.value)
    assert "row 2" in text and "decision must be `continue` or `stop`" in text
    assert "row 3" in text and "context has no `patient:` line" in text


def test_kappa_is_cohens_kappa_and_accuracy_counts_unparsed_as_wrong():
    gold_labels = ["stop", "continue", "stop", "stop", "continue", "continue", "stop", "continue"]
    said = ["stop", "stop", "stop", "continue", "continue", "continue", None, "continue"]
    rows = [StopRow(id=str(i), context="patient: hi", decision=g) for i, g in enumerate(gold_labels)]
    scores = STOP.score(rows, [StopPrediction(decision=s) for s in said], n_boot=200)
    parsed = [(g, s) for g, s in zip(gold_labels, said) if s is not None]
    assert scores.kappa == pytest.approx(cohen_kappa_score([g for g, _ in parsed], [s for _, s in parsed]))
    assert scores.accuracy == pytest.approx(5 / 8) and scores.parse_failure_rate == pytest.approx(1 / 8)
    assert scores.kappa_ci[0] <= scores.kappa <= scores.kappa_ci[1]
    better = STOP.compare(rows, [StopPrediction(decision="continue")] * 8, [StopPrediction(decision=g) for g in gold_labels])
    assert better.metric == "kappa" and better.delta == pytest.approx(1.0) and better.verdict != "worse"


def test_a_disagreement_is_any_other_decision():
    row = {"id": "a", "gold": "stop", "calibrated": "continue", "calibrated_error": "", "context": "patient: hi"}
    found = STOP.disagreement(row, "calibrated")
    assert found is not None and found.error == 1.0 and found.predicted == "continue"
    assert STOP.disagreement(row | {"calibrated": "stop"}, "calibrated") is None
    assert STOP.disagreement(row | {"calibrated": ""}, "calibrated").predicted == "unparsed"


def test_questions_asked_counts_the_pharmacists_questions_only():
    context = "patient: Is it safe? Really?\npharmacist: Is it for you? Any other medicines??\npatient: Yes.\npharmacist: OK."
    assert pharmacist_questions(context) == 2


@pytest.mark.slow
def test_run_report_review_and_template_round_trip(tmp_path, stub):
    store = tmp_path / "stop.csv"
    store.write_bytes((ROOT / "goldsets/stop.csv").read_bytes())

    def cli(*args: object) -> Result:
        done = calibrator(*args)
        assert done.code == 0, done.err
        return done

    common = ["--cache-dir", str(tmp_path / "cache"), "--no-progress", "--lm", f"openai-compatible:stub@{stub.url}"]
    cli("run", "--component", "stop", "--budget", "smoke", "--goldset", str(store), "--out", str(tmp_path / "reports"),
        "--save-prompt", str(tmp_path / "stop.calibrated.yaml"), *common)
    folder = next(p for p in (tmp_path / "reports").iterdir() if p.is_dir())
    record = json.loads((folder / "run.json").read_text())
    assert record["component"] == "stop" and record["comparison"]["metric"] == "kappa"
    assert {"accuracy", "kappa", "kappa_ci", "accuracy_ci"} <= set(record["calibrated"]["test"])
    assert set(record["floors"]) == {"questions", "neighbours"} and "model-free floor" in record["verdict"]
    html = (folder / "index.html").read_text()
    assert "Cohen&#39;s kappa" in html or "Cohen's kappa" in html
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as f:
        wrong = sorted(r["id"] for r in csv.DictReader(f) if r["split"] == "test" and r["calibrated"] != r["gold"])
    assert wrong  # the stub's answers follow a hash of the messages: some test rows are wrong
    assert f"Disagreements on the test split ({len(wrong)})" in html
    table = html.split('id="disagreements-table"')[1].split("</table>")[0]
    assert sorted(re.findall(r'data-id="([^"]+)"', table)) == wrong

    review = tmp_path / "review.xlsx"
    cli("review", str(folder), "-o", str(review))
    book = load_workbook(review)
    sheet = book["review"]
    header = [c.value for c in sheet[1]]
    assert header[:4] == ["id", "context", "decision", "note"] and "adjudicated_label" in header
    first = next(sheet.iter_rows(min_row=2))
    flipped = "continue" if first[header.index("decision")].value == "stop" else "stop"
    first[header.index("adjudicated_label")].value = flipped
    book.save(review)
    added = cli("goldset", "add", str(review), "--component", "stop", "--goldset", str(store))
    assert "added 0, updated 1" in added.out
    after = {r.id: r.decision for r in load_goldset(store, StopRow).rows}
    assert after[first[0].value] == flipped

    template = tmp_path / "new.xlsx"
    cli("goldset", "template", "--component", "stop", "-o", str(template))
    book = load_workbook(template)
    data = book["data"]
    assert [c.value for c in data[1]] == ["id", "context", "decision", "note", "annotator", "labelled_at"]
    data.append(["sx1", "patient: I need something for a dry cough.\npharmacist: Is it for you?\npatient: Yes.", "continue", "", "", ""])
    book.save(template)
    added = cli("goldset", "add", str(template), "--component", "stop", "--goldset", str(store))
    assert "added 1" in added.out
    with open(store, newline="", encoding="utf-8") as f:
        assert any(r["id"] == "sx1" for r in csv.DictReader(f))
