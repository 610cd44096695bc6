"""The gold set lives and the held-out split holds, through the command line against the stub: calibrate with knn, adjudicate 5 rows
through `review` and add 10 new ones through `goldset add`, calibrate again. No test row of the first run is in
the second run's train or val, and `eval` of the first prompt leaves its own pool rows out and names what changed."""

import csv
import json
from pathlib import Path

import openpyxl
import pytest

from calibrator.components.grader import GraderRow
from calibrator.components.grader import GRADER
from calibrator.gold.goldset import load_goldset
from calibrator.calibration.optimize import knn_prompt
from calibrator.prompt import load_prompt, save_prompt
from support.cli import calibrator
from support.files import gold_slice

pytestmark = pytest.mark.slow
SLICE = 30


def run(tmp: Path, stub, out: str, *args: str) -> dict:
    done = calibrator(*args, "--goldset", tmp / "grader.csv", "--out", tmp / out, "--cache-dir", tmp / "cache", "--no-progress",
                      "--lm", f"openai-compatible:stub@{stub.url}")
    assert done.code == 0, done.err
    folder = next(p for p in (tmp / out).iterdir() if p.is_dir() and not p.name.startswith("."))
    return json.loads((folder / "run.json").read_text()) | {"folder": str(folder)}


def new_rows(path: Path) -> Path:
    questions = ["Is it worse at night?", "Have you taken anything for it?", "Any allergies to medicines?",
                 "How old is the patient?", "Do you take any other medicines?", "Where exactly is the pain?",
                 "Did it start after eating?", "Are you pregnant or breastfeeding?", "How bad is it out of ten?",
                 "Any fever as well?"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "context", "target_info", "candidate", "content_score", "format_score"])
        for i, q in enumerate(questions):
            writer.writerow([f"new-{i}", "patient: I've had a sore stomach since yesterday.", "severity: quite bad",
                             q, ["0", "0.5", "1"][i % 3], "1"])
    return path


def test_splits_hold_across_review_and_add(tmp_path, stub):
    gold_slice("grader", tmp_path / "grader.csv", SLICE)

    first_goldset = load_goldset(tmp_path / "grader.csv", GraderRow)
    calibrate = ["run", "--component", "grader", "--optimizer", "knn", "--budget", "smoke"]
    first = run(tmp_path, stub, "first", *calibrate, "--save-prompt", str(tmp_path / "first.yaml"))

    review = tmp_path / "review.xlsx"
    done = calibrator("review", first["folder"], "-o", review, "--goldset", tmp_path / "grader.csv")
    assert done.code == 0, done.err
    book = openpyxl.load_workbook(review)
    sheet = book["review"]
    header = [c.value for c in sheet[1]]
    relabelled = {}
    for line in list(sheet.iter_rows(min_row=2))[:5]:
        cells = dict(zip(header, line))
        new = "1" if cells["content_score"].value != "1" else "0"
        cells["adjudicated_label"].value = new
        relabelled[cells["id"].value] = float(new)
    assert len(relabelled) == 5
    book.save(review)
    for incoming in (review, new_rows(tmp_path / "new.csv")):
        done = calibrator("goldset", "add", incoming, "--component", "grader", "--goldset", tmp_path / "grader.csv")
        assert done.code == 0, done.err
    with open(tmp_path / "grader.csv", newline="", encoding="utf-8") as f:
        now = {r["id"]: r for r in csv.DictReader(f)}
    assert len(now) == SLICE + 10
    assert all(float(now[i]["content_score"]) == label for i, label in relabelled.items())

    second = run(tmp_path, stub, "second", *calibrate, "--save-prompt", str(tmp_path / "second.yaml"))
    before, after = first["goldset"]["splits"], second["goldset"]["splits"]
    assert not set(before["test"]) & (set(after["train"]) | set(after["val"]))
    for split in ("train", "val", "test"):
        assert set(before[split]) <= set(after[split])  # every old row, relabelled or not, kept its split

    # The first run's calibrated prompt, with the retrieval pool its knn candidate had (the baseline may have won on val).
    first_prompt = load_prompt(tmp_path / "first.yaml")
    train_rows = [r for r in first_goldset.rows if r.id in set(before["train"])]
    pooled = knn_prompt(GRADER, first_prompt, train_rows, k=2, keys=["candidate"])
    save_prompt(pooled.model_copy(update={"calibration": first_prompt.calibration}), tmp_path / "first-knn.yaml")
    evaluated = run(tmp_path, stub, "eval", "eval", "--component", "grader", "--prompt", str(tmp_path / "first-knn.yaml"))
    pool = set(before["train"])
    assert set(evaluated["excluded"]) == pool
    with open(Path(evaluated["folder"]) / "predictions.csv", newline="", encoding="utf-8") as f:
        assert not {r["id"] for r in csv.DictReader(f)} & pool
    changes = evaluated["goldset_changes"]
    assert sorted(changes["added"]) == sorted(f"new-{i}" for i in range(10))
    assert sorted(changes["changed"]) == sorted(relabelled)
    assert changes["removed"] == []
