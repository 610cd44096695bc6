"""`review` exports a blind sample: every disagreement of every split plus a seeded, split-stratified sample of
agreements, shuffled, the run's columns hidden; and the adjudicated file goes back through `goldset add` with
untouched rows unchanged. Run folders come from tests/synthetic_run.py (real scoring code, made-up predictions)."""

import csv
import json
from pathlib import Path

import openpyxl
import pytest
from support.synthetic_run import make_run

from calibrator.components.grader import GraderRow
from calibrator.cli import main
from calibrator.components import COMPONENTS
from calibrator.curation.curation import goldset_csv
from calibrator.gold.goldset import load_goldset
from calibrator.calibration.disagreements import disagreements, read_predictions
from calibrator.calibration.record import judged_side
from calibrator.curation.review import sample_by_split

CONTRACT = {"grader": ["id", "context", "target_info", "candidate", "content_score", "format_score", "note", "annotator", "labelled_at"],
            "extractor": ["id", "context", "future", "target_info", "decision", "note", "annotator", "labelled_at", "target_scope"]}
RUN_COLUMNS = {"grader": ["split", "calibrated_content_score", "calibrated_format_score", "error"],
               "extractor": ["split", "calibrated_target_info", "calibrated_decision", "error"]}


def sheet_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    sheet = openpyxl.load_workbook(path)["review"]
    header = [c.value for c in sheet[1]]
    return header, [{h: c.value or "" for h, c in zip(header, line)} for line in sheet.iter_rows(min_row=2)]


def review(capsys, folder: Path, out: Path, *args: str) -> tuple[list[str], list[dict[str, str]], str]:
    code = main(["review", str(folder), "-o", str(out), *args])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    return *sheet_rows(out), printed.out


def expected_disagreements(folder: Path) -> set[str]:
    record = json.loads((folder / "run.json").read_text())
    component = COMPONENTS[record["component"]]
    return {d.id for d in disagreements(component, read_predictions(folder / "predictions.csv"), judged_side(record))}


def as_eval(folder: Path, train: int = 8) -> None:
    """Turn a run folder into an eval's: one prompt scored on every split, the first `train` rows in train."""
    record = json.loads((folder / "run.json").read_text())
    record |= {"kind": "eval", "calibrated": None, "comparison": None, "optimization": None, "optimizer": None, "budget": None}
    (folder / "run.json").write_text(json.dumps(record))
    with open(folder / "predictions.csv", newline="") as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    for row in rows[:train]:
        row["split"] = "train"
    with open(folder / "predictions.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_every_disagreement_plus_as_many_agreements_from_every_split(tmp_path, capsys, component):
    folder = make_run(tmp_path / "reports", component=component, seed=2, goldset=tmp_path / "gold.csv")
    header, rows, out = review(capsys, folder, tmp_path / "review.xlsx")
    wrong = expected_disagreements(folder)
    exported = {r["id"]: r for r in rows}
    assert len(exported) == len(rows) == 2 * len(wrong)
    assert {i for i, r in exported.items() if float(r["error"]) > 0} == wrong
    agreements = [r for r in rows if float(r["error"]) == 0]
    assert {r["split"] for r in agreements} == {r["split"] for r in rows} == {"val", "test"}
    assert f"wrote {len(rows)} rows to {tmp_path / 'review.xlsx'}: {len(wrong)} disagreements and {len(wrong)} agreements, shuffled" in out


def test_an_eval_gives_disagreements_and_agreements_of_train_val_and_test(tmp_path, capsys):
    folder = make_run(tmp_path / "reports", seed=5, goldset=tmp_path / "gold.csv")  # a seed with errors in every split
    as_eval(folder)
    header, rows, _ = review(capsys, folder, tmp_path / "review.xlsx", "--agreements", "6")
    assert "baseline_content_score" in header  # an eval's only prompt is the baseline
    wrong = [r for r in rows if float(r["error"]) > 0]
    agreements = [r for r in rows if float(r["error"]) == 0]
    assert {r["id"] for r in wrong} == expected_disagreements(folder)
    assert len(agreements) == 6
    assert {r["split"] for r in wrong} == {r["split"] for r in agreements} == {"train", "val", "test"}


def test_seeded_shuffle_is_reproducible_and_not_sorted_by_error(tmp_path, capsys):
    folder = make_run(tmp_path / "reports", seed=2, n_test=30, goldset=tmp_path / "gold.csv")
    _, first, _ = review(capsys, folder, tmp_path / "a.xlsx")
    _, again, _ = review(capsys, folder, tmp_path / "b.xlsx", "--seed", "0")
    _, other, _ = review(capsys, folder, tmp_path / "c.xlsx", "--seed", "1")
    ids = [r["id"] for r in first]
    assert ids == [r["id"] for r in again]
    assert ids != [r["id"] for r in other]
    errors = [float(r["error"]) for r in first]
    kinds = [e > 0 for e in errors]
    assert errors != sorted(errors, reverse=True) and errors != sorted(errors)
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)


@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_run_columns_are_a_collapsed_group_and_the_visible_ones_are_the_gold_rows(tmp_path, capsys, component):
    gold_path = tmp_path / "gold.csv"
    folder = make_run(tmp_path / "reports", component=component, seed=3, text="=1+1 ", goldset=gold_path)
    out = tmp_path / "review.xlsx"
    header, rows, printed = review(capsys, folder, out)
    visible = [*CONTRACT[component], "adjudicated_label", "adjudication_note"]
    assert header == visible + RUN_COLUMNS[component]
    sheet = openpyxl.load_workbook(out)["review"]
    for index, name in enumerate(header, 1):
        dimension = sheet.column_dimensions[openpyxl.utils.get_column_letter(index)]
        hidden = name in RUN_COLUMNS[component]
        assert (dimension.hidden, dimension.outline_level) == ((True, 1) if hidden else (False, 0)), name
    assert sheet.sheet_format.outlineLevelCol == 1  # without it Excel draws no +/- to expand the group
    first_hidden = openpyxl.utils.get_column_letter(len(visible) + 1)
    assert f"are grouped and hidden in columns {first_hidden}:" in printed
    with open(gold_path, newline="") as f:
        gold = {r["id"].lstrip("'"): r for r in csv.DictReader(f)}
    for row in rows:  # the visible cells are the gold row itself: nothing in them depends on the run
        assert {c: row[c] for c in CONTRACT[component]} == {c: gold[row["id"]][c].removeprefix("'") for c in CONTRACT[component]}
        assert row["adjudicated_label"] == row["adjudication_note"] == ""
    cells = [c for line in sheet.iter_rows(min_row=2) for c in line]
    assert all(c.data_type != "f" for c in cells)
    assert sum(str(c.value).startswith("=1+1") for c in cells) >= len(rows)  # the literal text, kept as text


def test_csv_keeps_the_run_columns_last_and_guards_formula_text(tmp_path, capsys):
    folder = make_run(tmp_path / "reports", seed=3, text="=1+1 ", goldset=tmp_path / "gold.csv")
    out = tmp_path / "review.csv"
    assert main(["review", str(folder), "-o", str(out)]) == 0
    assert "are the last 4 columns: hide them before labelling" in capsys.readouterr().out
    with open(out, newline="") as f:
        header, *rows = list(csv.reader(f))
    assert header[-4:] == RUN_COLUMNS["grader"]
    assert rows and all(r[0].startswith("'=1+1") for r in rows)
    assert len(load_goldset(out, GraderRow).rows) == len(rows)


def test_agreements_zero_gives_the_disagreements_only_and_too_many_gives_all(tmp_path, capsys):
    folder = make_run(tmp_path / "reports", seed=2, goldset=tmp_path / "gold.csv")
    wrong = expected_disagreements(folder)
    _, rows, out = review(capsys, folder, tmp_path / "only.xlsx", "--agreements", "0")
    assert {r["id"] for r in rows} == wrong and len(rows) == len(wrong)
    assert f"{len(wrong)} disagreements and 0 agreements" in out
    available = 32 - len(wrong)
    _, rows, out = review(capsys, folder, tmp_path / "all.xlsx", "--agreements", "500")
    assert len(rows) == 32
    assert f"{available} agreements (only {available} exist)" in out
    assert main(["review", str(folder), "-o", str(tmp_path / "x.xlsx"), "--agreements", "-1"]) == 2
    assert "--agreements must be 0 or more" in capsys.readouterr().err


def test_sample_by_split_reaches_every_split_then_follows_their_sizes():
    import random

    pool = [{"id": f"{s}{i}", "split": s} for s, n in (("train", 30), ("val", 10), ("test", 10)) for i in range(n)]
    count = lambda rows: {s: sum(r["split"] == s for r in rows) for s in ("train", "val", "test")}  # noqa: E731
    assert count(sample_by_split(pool, 5, random.Random(0))) == {"train": 3, "val": 1, "test": 1}
    assert count(sample_by_split(pool, 3, random.Random(0))) == {"train": 1, "val": 1, "test": 1}
    assert count(sample_by_split(pool, 99, random.Random(0))) == {"train": 30, "val": 10, "test": 10}
    assert sample_by_split(pool, 7, random.Random(5)) == sample_by_split(pool, 7, random.Random(5))


@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_adjudicated_review_updates_only_the_filled_rows_and_no_split_moves(tmp_path, capsys, component):
    store = tmp_path / "gold.csv"
    folder = make_run(tmp_path / "reports", component=component, seed=5, text="noted ", goldset=store)  # every row has a note
    row_model = COMPONENTS[component].row_model
    before = load_goldset(store, row_model)
    out = tmp_path / "review.xlsx"
    header, rows, _ = review(capsys, folder, out)
    book = openpyxl.load_workbook(out)
    sheet = book["review"]
    eligible = [r for r in rows if component == "grader" or r["decision"] == "continue"]
    picks = [next(r for r in eligible if float(r["error"]) > 0), next(r for r in eligible if float(r["error"]) == 0)]
    changed = {}
    for pick in picks:
        line = rows.index(pick) + 2
        new = ("0" if float(pick["content_score"]) else "1") if component == "grader" else "allergies: penicillin"
        sheet.cell(row=line, column=header.index("adjudicated_label") + 1, value=new)
        sheet.cell(row=line, column=header.index("adjudication_note") + 1, value="re-checked by a pharmacist")
        changed[pick["id"]] = new
    book.save(out)
    code = main(["goldset", "add", str(out), "--component", component, "--goldset", str(store)])
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert f"added 0, updated 2, unchanged {len(rows) - 2}, rejected 0" in printed.out
    after = load_goldset(store, row_model)
    old, new = {r.id: r for r in before.rows}, {r.id: r for r in after.rows}
    assert set(old) == set(new)
    for row_id, label in changed.items():
        assert new[row_id].note == "re-checked by a pharmacist"
        assert (f"{new[row_id].content_score:g}" if component == "grader" else "; ".join(new[row_id].target_info)) == label
    assert all(new[i] == old[i] for i in old if i not in changed)  # notes included: untouched rows are unchanged
    assert after.splits == before.splits


def test_rows_come_from_the_gold_set_as_it_is_now(tmp_path, capsys):
    store = tmp_path / "gold.csv"
    folder = make_run(tmp_path / "reports", seed=2, goldset=store)
    gold = load_goldset(store, GraderRow).rows
    relabel = 0.0 if next(r for r in gold if r.id == "r0").content_score else 1.0
    store.write_text(goldset_csv([r.model_copy(update={"content_score": relabel}) if r.id == "r0" else r for r in gold], GraderRow))
    _, rows, out = review(capsys, folder, tmp_path / "review.xlsx", "--agreements", "500")
    assert next(r for r in rows if r["id"] == "r0")["content_score"] == f"{relabel:g}"
    assert "1 row(s) were relabelled since this run and are exported as they are now: r0" in out


def test_a_gold_set_without_the_runs_rows_is_refused_and_a_missing_one_warned(tmp_path, capsys):
    folder = make_run(tmp_path / "reports", seed=2)
    make_run(tmp_path / "other", seed=2, text="other ", goldset=tmp_path / "other.csv")
    # the other gold set is a valid one, just not this run's: 32 rows of its own, none of them a row of the run
    other_ids = {r.id for r in load_goldset(tmp_path / "other.csv", GraderRow).rows}
    assert len(other_ids) == 32 and not other_ids & {r["id"] for r in read_predictions(folder / "predictions.csv")}
    code = main(["review", str(folder), "-o", str(tmp_path / "r.xlsx"), "--goldset", str(tmp_path / "other.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "holds none of the 32 rows" in err and not (tmp_path / "r.xlsx").exists()
    assert f"error: {tmp_path / 'other.csv'} has 1 problem(s)" in err  # the --goldset given was read, not run.json's
    record = json.loads((folder / "run.json").read_text())
    record["goldset"]["path"] = str(tmp_path / "moved.csv")
    (folder / "run.json").write_text(json.dumps(record))
    assert main(["review", str(folder), "-o", str(tmp_path / "r.xlsx")]) == 0
    printed = capsys.readouterr()
    assert f"warning: gold set not found at {tmp_path / 'moved.csv'}" in printed.err and "pass --goldset PATH" in printed.err
    assert len(sheet_rows(tmp_path / "r.xlsx")[1]) > 0


def test_with_every_row_exported_only_the_seed_decides_the_order(tmp_path, capsys):
    """All agreements exported, so both seeds hold the same rows: the order is the shuffle's, not by id or split."""
    folder = make_run(tmp_path / "reports", seed=2, n_test=30, goldset=tmp_path / "gold.csv")
    _, first, _ = review(capsys, folder, tmp_path / "a.xlsx", "--agreements", "500")
    _, other, _ = review(capsys, folder, tmp_path / "b.xlsx", "--agreements", "500", "--seed", "1")
    ids, other_ids = [r["id"] for r in first], [r["id"] for r in other]
    assert sorted(ids) == sorted(other_ids) and ids != other_ids
    assert ids != sorted(ids) and ids != sorted(ids, reverse=True)
    splits = [r["split"] for r in first]
    assert splits != sorted(splits) and splits != sorted(splits, reverse=True)
