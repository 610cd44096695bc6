"""Tests for calibrator.curation.template: the empty gold-set workbook opens, guides the labeller, and loads once filled."""

import openpyxl
import pytest
from openpyxl.utils import get_column_letter

from calibrator.components.grader import GraderRow
from calibrator.components.extractor import ExtractorRow
from calibrator.gold.goldset import GoldSetError, load_goldset
from calibrator.curation.template import write_template
from support.files import fill

HEADERS = {
    "grader": ["id", "context", "target_info", "candidate", "content_score", "format_score", "note", "annotator", "labelled_at"],
    "extractor": ["id", "context", "future", "target_info", "decision", "note", "annotator", "labelled_at"],
}
CHOICES = {
    "grader": {"content_score": '"0,0.5,1"', "format_score": '"0,0.5,1"'},
    "extractor": {"decision": '"continue,stop"'},
}
LABELS = {"grader": ["0", "0.5", "1"], "extractor": ["continue", "stop"]}
COMPONENTS = list(HEADERS)


@pytest.fixture(params=COMPONENTS)
def template(request, tmp_path):
    path = tmp_path / f"{request.param}-template.xlsx"
    write_template(request.param, path)
    return request.param, path


def cell_texts(sheet) -> list[str]:
    return [str(c.value) for line in sheet.iter_rows() for c in line if c.value is not None]


def test_data_sheet_has_header_frozen_and_no_rows(template):
    component, path = template
    book = openpyxl.load_workbook(path)
    sheet = book.worksheets[0]
    assert sheet.title == "data"
    assert [c.value for c in sheet[1]] == HEADERS[component]
    assert all(c.font.bold for c in sheet[1])
    assert sheet.freeze_panes == "A2"
    assert sheet.max_row == 1
    widths = {name: sheet.column_dimensions[get_column_letter(i)].width for i, name in enumerate(HEADERS[component], 1)}
    assert widths["context"] > widths["id"] and widths["target_info"] > widths["annotator"]


def test_dropdowns_cover_the_label_columns(template):
    component, path = template
    sheet = openpyxl.load_workbook(path)["data"]
    rules = sheet.data_validations.dataValidation
    for name, formula in CHOICES[component].items():
        letter = get_column_letter(HEADERS[component].index(name) + 1)
        matching = [r for r in rules if r.type == "list" and f"{letter}2:{letter}1001" in str(r.sqref)]
        assert len(matching) == 1, name
        rule = matching[0]
        assert rule.formula1 == formula
        assert rule.showErrorMessage and rule.error
        for label in formula.strip('"').split(","):
            assert label in rule.error
    assert len(rules) == len(CHOICES[component])


def test_instructions_mention_every_label_rubric_and_command(template):
    component, path = template
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["data", "instructions"]
    texts = cell_texts(book["instructions"])
    text = "\n".join(texts)
    for label in LABELS[component]:
        assert label in texts, f"no worked example labelled {label}"
    for needle in ("patient:", "pharmacist:", "Alt+Enter", ";", "annotator", "labelled_at", "previous treatment",
                   "pregnancy/breastfeeding", f"python -m calibrator goldset add FILE --component {component}"):
        assert needle in text, needle
    if component == "grader":
        assert "content_score_<name>" in text


def test_no_cell_is_a_formula(template):
    _, path = template
    book = openpyxl.load_workbook(path)
    formulas = [c.coordinate for sheet in book for line in sheet.iter_rows() for c in line if c.data_type == "f"]
    assert formulas == []


def test_empty_template_is_a_valid_but_empty_gold_set(template):
    component, path = template
    with pytest.raises(GoldSetError) as error:
        load_goldset(path, GraderRow if component == "grader" else ExtractorRow)
    assert [p.message for p in error.value.problems] == ["no rows: expected a header and at least one labelled row"]
    # valid: every column of its header is one the loader reads (an optional column it misnamed would silently drop
    # what labellers type there), so a row typed under it loads with every cell in place
    row = FULL_ROW[component]
    assert list(row) == HEADERS[component]
    book = openpyxl.load_workbook(path)
    for column, value in enumerate(row.values(), 1):  # typed under the template's columns, in its order
        book["data"].cell(row=2, column=column, value=value)
    book.save(path)
    gold = load_goldset(path, GraderRow if component == "grader" else ExtractorRow)
    assert len(gold.rows) == 1
    loaded = gold.rows[0]
    assert (loaded.id, loaded.context, loaded.target_info) == ("t1", "patient: I have a cough.", ["duration: three days"])
    assert (loaded.note, loaded.annotator, loaded.labelled_at) == ("asks duration", "AB", "2026-11-24")
    if component == "grader":
        assert (loaded.candidate, loaded.content_score, loaded.format_score) == ("How long?", 1.0, 0.5)
    else:
        assert (loaded.future, loaded.decision) == ("pharmacist: How long?\npatient: Three days.", "continue")


FULL_ROW = {
    "grader": {"id": "t1", "context": "patient: I have a cough.", "target_info": "duration: three days", "candidate": "How long?",
               "content_score": "1", "format_score": "0.5", "note": "asks duration", "annotator": "AB", "labelled_at": "2026-11-24"},
    "extractor": {"id": "t1", "context": "patient: I have a cough.", "future": "pharmacist: How long?\npatient: Three days.",
                  "target_info": "duration: three days", "decision": "continue", "note": "asks duration", "annotator": "AB",
                  "labelled_at": "2026-11-24"},
}


def test_save_is_atomic_and_overwrites(tmp_path, monkeypatch):
    path = tmp_path / "t.xlsx"
    path.write_text("old")
    write_template("grader", path)
    assert openpyxl.load_workbook(path).sheetnames == ["data", "instructions"]
    assert [p.name for p in tmp_path.iterdir()] == ["t.xlsx"]

    # atomic: a save that fails half-way leaves the file as it was and no temporary file beside it
    written = path.read_bytes()

    def half_save(book, filename):
        with open(filename, "wb") as f:
            f.write(written[: len(written) // 2])
        raise OSError("disk full")

    monkeypatch.setattr(openpyxl.Workbook, "save", half_save)
    with pytest.raises(OSError, match="disk full"):
        write_template("extractor", path)
    monkeypatch.undo()
    assert path.read_bytes() == written
    assert [p.name for p in tmp_path.iterdir()] == ["t.xlsx"]


def test_unknown_component_is_rejected(tmp_path):
    with pytest.raises(ValueError):
        write_template("ranker", tmp_path / "t.xlsx")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_filled_grader_template_loads(tmp_path):
    path = tmp_path / "grader.xlsx"
    write_template("grader", path)
    fill(path, [
        {"context": "patient: I've got a blocked nose.\npharmacist: How long for?\npatient: A week.",
         "target_info": "current medication: none", "candidate": "Are you taking any other medicines?",
         "content_score": 1, "format_score": 1, "annotator": "AB", "labelled_at": "2024-05-17"},
        None,
        {"context": "patient: My hay fever's really bad this year.   \n", "target_info": "previous treatment: cetirizine",
         "candidate": "Do you take anything for allergies?", "content_score": "0,5", "note": "related, not what was tried"},
    ])
    goldset = load_goldset(path, GraderRow)
    assert len(goldset.rows) == 2
    first, second = goldset.rows
    assert (first.content_score, first.format_score, first.annotator, first.labelled_at) == (1.0, 1.0, "AB", "2024-05-17")
    assert (second.content_score, second.format_score) == (0.5, None)
    assert second.context == "patient: My hay fever's really bad this year."


def test_filled_extractor_template_loads(tmp_path):
    path = tmp_path / "extractor.xlsx"
    write_template("extractor", path)
    fill(path, [
        {"context": "patient: Can I get something for a cough?",
         "future": "pharmacist: Is it dry or chesty?\npatient: Chesty, lots of phlegm.",
         "target_info": "nature: chesty, lots of phlegm", "decision": "continue"},
        None,
        {"context": "patient: I need something for a cold sore.\npharmacist: Is it tingling yet?\npatient: Yes, just started.",
         "future": "pharmacist: Aciclovir cream five times a day for five days, starting now.", "decision": "stop"},
    ])
    goldset = load_goldset(path, ExtractorRow)
    assert [(r.decision, r.target_info) for r in goldset.rows] == [
        ("continue", ["nature: chesty, lots of phlegm"]), ("stop", [])]
