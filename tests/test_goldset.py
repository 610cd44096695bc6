"""Tests for calibrator.gold.goldset: the shipped gold set, label parsing, and row-by-row error reporting."""

import csv
import random
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibrator.components.grader import GraderRow
from calibrator.gold.goldset import SPLITS, GoldSetError, load_goldset, parse_label, stable_id

from support.files import HEADER, write_csv, write_xlsx
from support import ROOT, examples

SHIPPED = ROOT / "goldsets" / "grader.csv"


def good(**overrides) -> dict:
    row = {
        "id": "r1",
        "context": "patient: I have a cough.\npharmacist: How long?\npatient: Three days.",
        "target_info": "age group: adult; allergies: none",
        "candidate": "Is this for you or someone else?",
        "content_score": "1",
        "format_score": "1",
        "note": "asks age group",
    }
    return row | overrides


def csv_to_xlsx(src: Path, dst: Path) -> Path:
    with open(src, newline="", encoding="utf-8") as f:
        records = list(csv.reader(f))
    return write_xlsx(dst, [[v if v != "" else None for v in r] for r in records[1:]], header=records[0])


def problems_of(path: Path) -> list:
    with pytest.raises(GoldSetError) as info:
        load_goldset(path, GraderRow)
    return info.value.problems


# --- the shipped gold set ---------------------------------------------------------------------


def test_shipped_goldset_size_and_labels():
    gold = load_goldset(SHIPPED, GraderRow)
    assert len(gold.rows) >= 60
    counts = Counter(r.content_score for r in gold.rows)
    assert set(counts) == {0.0, 0.5, 1.0}
    assert all(n >= 15 for n in counts.values())


def test_shipped_goldset_splits_cover_every_row_and_label():
    gold = load_goldset(SHIPPED, GraderRow)
    sizes = gold.sizes()
    assert sum(sizes.values()) == len(gold.rows)
    assert set(gold.splits) == {r.id for r in gold.rows}
    for split in SPLITS:
        assert {r.content_score for r in gold.split(split)} == {0.0, 0.5, 1.0}, split


def test_splits_and_sha_deterministic_across_loads():
    a, b = load_goldset(SHIPPED, GraderRow), load_goldset(SHIPPED, GraderRow)
    assert a.splits == b.splits
    assert a.sha256 == b.sha256
    assert len(a.sha256) == 64


# Splits as the shipped gold sets had them when pinned: a row's split comes from a hash of its id alone, so a change
# to that hash (its prefix, its slice, its cut points) moves shipped rows between train, val and test, which makes
# every earlier run incomparable. Two loads in one process cannot see that; these literals do.
PINNED_SPLITS = {
    ("grader", "grader.csv"): {"g001": "val", "g002": "train", "g003": "val", "g004": "train", "g005": "test",
                               "g007": "train", "g008": "test"},
    ("extractor", "extractor.csv"): {"e001": "val", "e002": "test", "e006": "train"},
    ("stop", "stop.csv"): {"se001": "train", "se002": "test", "se004": "val"},
}
PINNED_DEV = {"grader": {"g007", "g012", "g013"}, "stop": {"se009", "se017"}}


@pytest.mark.parametrize("component, name", sorted(PINNED_SPLITS))
def test_shipped_rows_keep_the_split_they_had(component, name):
    from calibrator.components import COMPONENTS
    from calibrator.gold.splits import split_of

    gold = load_goldset(ROOT / "goldsets" / name, COMPONENTS[component].row_model)
    pinned = PINNED_SPLITS[(component, name)]
    assert {i: gold.splits[i] for i in pinned} == pinned
    assert {i: split_of(i) for i in pinned} == pinned
    dev = {r.id for r in gold.fit_and_dev()[1]}
    assert PINNED_DEV.get(component, set()) <= dev


def test_sha_and_splits_unchanged_by_row_order(tmp_path):
    with open(SHIPPED, newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    random.Random(0).shuffle(records)
    shuffled = write_csv(tmp_path / "shuffled.csv", records)
    a, b = load_goldset(SHIPPED, GraderRow), load_goldset(shuffled, GraderRow)
    assert a.sha256 == b.sha256
    assert a.splits == b.splits


def test_csv_and_xlsx_load_to_the_same_rows(tmp_path):
    xlsx = csv_to_xlsx(SHIPPED, tmp_path / "grader.xlsx")
    a, b = load_goldset(SHIPPED, GraderRow), load_goldset(xlsx, GraderRow)
    assert [r.model_dump() for r in a.rows] == [r.model_dump() for r in b.rows]
    assert a.sha256 == b.sha256
    assert a.splits == b.splits


# --- labels -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [(" 1 ", 1.0), ("0.50", 0.5), ("1.0", 1.0), ("0,5", 0.5), (".5", 0.5), ("0", 0.0), (1, 1.0), (0.5, 0.5), (0, 0.0)],
)
def test_parse_label_accepts(text, expected):
    assert parse_label(text) == expected


@pytest.mark.parametrize("text", ["2", "-1", "abc", "", "0.25", True, "nan"])
def test_parse_label_rejects(text):
    with pytest.raises(ValueError):
        parse_label(text)


@pytest.mark.parametrize("text", ["2", "-1", "abc", "", "   "])
def test_content_score_rejected_in_file(tmp_path, text):
    problems = problems_of(write_csv(tmp_path / "g.csv", [good(content_score=text)]))
    assert [(p.row, p.column) for p in problems] == [(2, "content_score")]


def test_format_score_optional(tmp_path):
    rows = [good(id="a", format_score=""), good(id="b", format_score=" 0,5 ", candidate="Any allergies?")]
    gold = load_goldset(write_csv(tmp_path / "g.csv", rows), GraderRow)
    assert [r.format_score for r in gold.rows] == [None, 0.5]
    no_column = write_csv(tmp_path / "h.csv", [good()], header=[h for h in HEADER if h != "format_score"])
    assert load_goldset(no_column, GraderRow).rows[0].format_score is None


def test_labels_normalised_in_csv(tmp_path):
    texts = [" 1 ", "0.50", "1.0", "0,5", ".5", "0"]
    rows = [good(id=f"r{i}", content_score=t, candidate=f"Question {i}?") for i, t in enumerate(texts)]
    gold = load_goldset(write_csv(tmp_path / "g.csv", rows), GraderRow)
    assert [r.content_score for r in gold.rows] == [1.0, 0.5, 1.0, 0.5, 0.5, 0.0]


def test_numeric_cells_in_xlsx(tmp_path):
    base = list(good().values())
    rows = [base[:4] + [1, 0.5, None], ["r2"] + base[1:4] + [0.5, 0, "n"], ["r3"] + base[1:4] + [0, 1.0, None]]
    gold = load_goldset(write_xlsx(tmp_path / "g.xlsx", rows), GraderRow)
    assert [(r.content_score, r.format_score) for r in gold.rows] == [(1.0, 0.5), (0.5, 0.0), (0.0, 1.0)]


# --- ids and columns ----------------------------------------------------------------------------


def test_missing_id_gets_stable_content_id(tmp_path):
    rows = [good(id=""), good(id="", candidate="Any allergies?")]
    first = load_goldset(write_csv(tmp_path / "a.csv", rows), GraderRow)
    again = load_goldset(write_csv(tmp_path / "b.csv", list(reversed(rows))), GraderRow)
    ids = [r.id for r in first.rows]
    assert ids[0] != ids[1]
    assert all(i.startswith("g-") for i in ids)
    assert sorted(ids) == sorted(r.id for r in again.rows)
    assert first.splits == again.splits


def test_stable_id_depends_on_content_only():
    row = good()
    same = stable_id(row["context"], row["target_info"], row["candidate"])
    assert same == stable_id(row["context"], row["target_info"], row["candidate"])
    assert same != stable_id(row["context"], row["target_info"], "Something else?")
    assert same != stable_id(row["context"], "age group: child", row["candidate"])


def test_id_column_missing_entirely(tmp_path):
    gold = load_goldset(write_csv(tmp_path / "g.csv", [good()], header=HEADER[1:5]), GraderRow)
    assert gold.rows[0].id.startswith("g-")


def test_extra_columns_ignored(tmp_path):
    header = ["reviewer", *HEADER, "Extra Notes"]
    row = good() | {"reviewer": "AB", "Extra Notes": "whatever"}
    gold = load_goldset(write_csv(tmp_path / "g.csv", [row], header=header), GraderRow)
    assert gold.rows[0].id == "r1"
    assert set(gold.rows[0].model_dump()) == set(GraderRow.model_fields)


def test_header_case_and_spaces_tolerated(tmp_path):
    header = [f" {h.upper()} " for h in HEADER]
    row = {f" {k.upper()} ": v for k, v in good().items()}
    assert load_goldset(write_csv(tmp_path / "g.csv", [row], header=header), GraderRow).rows[0].id == "r1"


def test_unicode_line_separator_inside_cell_is_not_a_row_break(tmp_path):
    row = good(candidate="How long\u2028have you had it?", note="a\u2029b\x85c")
    gold = load_goldset(write_csv(tmp_path / "g.csv", [row]), GraderRow)
    assert gold.rows[0].candidate == "How long\u2028have you had it?"


# --- malformed files ----------------------------------------------------------------------------


def test_malformed_csv_reports_every_problem_with_row_and_column(tmp_path):
    multi = "patient: My child has a rash.\npharmacist: Where is it?\npatient: On his arms."
    rows = [
        good(id="a1", context=multi),                                # row 2: fine, 3 physical lines
        good(id="a2", context=multi, content_score="2"),             # row 3
        good(id="a3", context=multi, candidate="  "),                # row 4
        good(id="a1", candidate="Another question?"),                # row 5: duplicate id
        good(id="a5", context="patient: hi\ndoctor: hello"),         # row 6
        good(id="a6", target_info="age group: child; allergies"),    # row 7
    ]
    path = write_csv(tmp_path / "bad.csv", rows)
    problems = problems_of(path)
    assert [(p.row, p.column) for p in problems] == [
        (3, "content_score"),
        (4, "candidate"),
        (5, "id"),
        (6, "context"),
        (7, "target_info"),
    ]
    for p in problems:
        text = str(p)
        assert str(path) in text and f"row {p.row}" in text and repr(p.column) in text
    assert "first used on row 2" in problems[2].message
    assert "line 2" in problems[3].message
    with pytest.raises(GoldSetError) as info:
        load_goldset(path, GraderRow)
    assert str(info.value).count("\n") == len(problems) - 1


def test_blank_csv_lines_are_skipped_but_counted(tmp_path):
    path = tmp_path / "g.csv"
    write_csv(path, [good(id="a"), good(id="b", content_score="2")])
    header, rest = path.read_bytes().split(b"\r\n", 1)
    # a blank line between header and first row: a spreadsheet shows it as row 2
    path.write_bytes(header + b"\r\n\r\n" + rest)
    assert [(p.row, p.column) for p in problems_of(path)] == [(4, "content_score")]


def test_missing_required_column_named(tmp_path):
    path = write_csv(tmp_path / "g.csv", [good()], header=[h for h in HEADER if h != "candidate"])
    problems = problems_of(path)
    assert [(p.row, p.column) for p in problems] == [(1, "candidate")]
    assert "missing" in problems[0].message


def test_non_utf8_csv(tmp_path):
    path = tmp_path / "latin1.csv"
    text = ",".join(HEADER) + "\nr1,patient: caf\u00e9,age: adult,Qui?,1,1,\n"
    path.write_bytes(text.encode("latin-1"))
    problems = problems_of(path)
    assert len(problems) == 1 and "UTF-8" in problems[0].message and str(path) in str(problems[0])


def test_utf8_bom_csv_loads(tmp_path):
    path = write_csv(tmp_path / "g.csv", [good(context="patient: caf\u00e9 au lait")])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_goldset(path, GraderRow).rows[0].context == "patient: caf\u00e9 au lait"


def test_empty_csv(tmp_path):
    path = tmp_path / "g.csv"
    path.write_bytes(b"")
    assert "empty" in problems_of(path)[0].message


def test_header_only_csv(tmp_path):
    assert "no rows" in problems_of(write_csv(tmp_path / "g.csv", []))[0].message


def test_header_and_blank_lines_only(tmp_path):
    path = write_csv(tmp_path / "g.csv", [])
    path.write_bytes(path.read_bytes() + b"\r\n,,,,,,\r\n\r\n")
    assert "no rows" in problems_of(path)[0].message
    assert "no rows" in problems_of(write_xlsx(tmp_path / "g.xlsx", [[None] * 7, [None] * 7]))[0].message


def test_corrupt_xlsx(tmp_path):
    path = tmp_path / "g.xlsx"
    path.write_bytes(random.Random(1).randbytes(2048))
    problems = problems_of(path)
    assert len(problems) == 1 and "XLSX" in problems[0].message


def test_xlsx_formula_cell_rejected(tmp_path):
    base = list(good().values())
    rows = [base, ["r2", *base[1:4], "=1+1", 1, None]]
    problems = problems_of(write_xlsx(tmp_path / "g.xlsx", rows))
    assert [(p.row, p.column) for p in problems] == [(3, "content_score")]
    assert "formula" in problems[0].message


def test_xlsx_blank_lines_skipped(tmp_path):
    base = list(good().values())
    rows = [[None] * 7, base, [None] * 7, [None] * 7, ["r2", *base[1:4], 2, 1, None]]
    path = write_xlsx(tmp_path / "g.xlsx", rows)
    assert [(p.row, p.column) for p in problems_of(path)] == [(6, "content_score")]
    rows[-1][4] = 0.5
    gold = load_goldset(write_xlsx(tmp_path / "h.xlsx", rows), GraderRow)
    assert [r.id for r in gold.rows] == ["r1", "r2"]


@pytest.mark.parametrize("name", ["g.txt", "g.json", "g.xls", "g"])
def test_unsupported_extension(tmp_path, name):
    path = tmp_path / name
    path.write_text("id,context\n", encoding="utf-8")
    problems = problems_of(path)
    assert len(problems) == 1 and "unsupported" in problems[0].message


def test_missing_file(tmp_path):
    assert "no such file" in problems_of(tmp_path / "nope.csv")[0].message


# --- property: any CSV either loads or raises GoldSetError ------------------------------------

TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30)
CELL = st.one_of(
    TEXT,
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.none(),
    st.booleans(),
    st.sampled_from(["0", "0.5", "1", " 1 ", "0,5", "patient: hi", "pharmacist: ok\npatient: yes", "a: b; c: d", ""]),
)
COLUMNS = st.lists(st.sampled_from([*HEADER, "extra", ""]), min_size=1, max_size=9)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=COLUMNS, rows=st.lists(st.lists(CELL, max_size=10), max_size=8))
def test_random_csv_loads_or_raises_goldset_error(tmp_path, header, rows):
    path = tmp_path / "random.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    try:
        gold = load_goldset(path, GraderRow)
    except GoldSetError as e:
        assert e.problems and all(p.file == str(path) for p in e.problems)
    else:
        assert sum(gold.sizes().values()) == len(gold.rows) > 0
