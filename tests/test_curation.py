"""Gold sets by spreadsheet, through the CLI: template → fill → add → stats → add again → adjudicated review back;
bad files never change the gold set; random workbooks load or raise the project's own error."""

import datetime
import hashlib
import shutil
from pathlib import Path

import openpyxl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.synthetic_run import make_run

from calibrator.components.grader import GraderRow
from calibrator.components.extractor import ExtractorRow
from calibrator.cli import main
from calibrator.curation.curation import goldset_csv
from calibrator.gold.goldset import GoldSetError, load_goldset, read_rows
from support import ROOT, examples
from support.files import fill

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["goldset", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


GRADER_ROWS = [
    {"context": "patient: I've got a cough  ", "target_info": "duration: three days", "candidate": "How long have you had it? ",
     "content_score": "1", "format_score": 1, "annotator": "sam"},
    None,
    {"id": "g2", "context": "patient: My son has nits", "target_info": "previous treatment: none", "candidate": "Which school is he at?",
     "content_score": 0, "format_score": "1"},
    {"id": "g3", "context": "patient: Heartburn again\npharmacist: After meals?\npatient: yes", "target_info": "current medication: none",
     "candidate": "Do you take anything for your stomach already?", "content_score": "0,5", "labelled_at": datetime.date(2026, 11, 24)},
]


def test_template_fill_add_stats_readd_and_adjudicated_review(tmp_path, capsys):
    template, store = tmp_path / "new.xlsx", tmp_path / "gold.csv"
    assert run(capsys, "template", "--component", "grader", "-o", str(template))[0] == 0
    fill(template, GRADER_ROWS)
    code, out, err = run(capsys, "add", str(template), "--goldset", str(store))
    assert code == 0, err
    assert "added 3, updated 0, unchanged 0, rejected 0" in out
    gold = load_goldset(store, GraderRow)
    assert {r.content_score for r in gold.rows} == {1.0, 0.0, 0.5}
    assert next(r for r in gold.rows if r.id == "g3").labelled_at == "2026-11-24"
    code, out, _ = run(capsys, "stats", "--goldset", str(store))
    assert code == 0 and "3 rows" in out and "0: 1, 0.5: 1, 1: 1" in out

    before = digest(store)
    code, out, _ = run(capsys, "add", str(template), "--goldset", str(store))
    assert "added 0, updated 0, unchanged 3" in out and digest(store) == before

    # an adjudicated review comes back: exactly the filled rows change
    folder = make_run(tmp_path / "reports", seed=9, goldset=tmp_path / "run-gold.csv")
    review = tmp_path / "review.xlsx"
    assert main(["review", str(folder), "-o", str(review)]) == 0
    code, out, err = run(capsys, "add", str(review), "--goldset", str(store))
    assert code == 0, err
    n_review = openpyxl.load_workbook(review).active.max_row - 1
    assert f"added {n_review}, updated 0" in out
    book = openpyxl.load_workbook(review)
    sheet = book.active
    header = [c.value for c in sheet[1]]
    changed = {}
    for line in (2, 3):
        gold_label = float(sheet.cell(row=line, column=header.index("content_score") + 1).value)
        new = "0" if gold_label else "1"
        sheet.cell(row=line, column=header.index("adjudicated_label") + 1, value=new)
        sheet.cell(row=line, column=header.index("adjudication_note") + 1, value="re-checked by a pharmacist")
        changed[sheet.cell(row=line, column=1).value] = float(new)
    book.save(review)
    as_it_was = store.read_bytes()
    code, out, err = run(capsys, "add", str(review), "--goldset", str(store))
    assert code == 0, err
    assert f"added 0, updated 2, unchanged {n_review - 2}" in out and " → content_score" in out
    after = {r.id: r for r in load_goldset(store, GraderRow).rows}
    for row_id, label in changed.items():
        assert after[row_id].content_score == label and after[row_id].note == "re-checked by a pharmacist"
    assert (tmp_path / "gold.csv.bak").exists()
    # the backup is the gold set as it was before this add, byte for byte, and not the one just written
    assert (tmp_path / "gold.csv.bak").read_bytes() == as_it_was != store.read_bytes()


def test_dry_run_writes_nothing(tmp_path, capsys):
    template, store = tmp_path / "new.xlsx", tmp_path / "gold.csv"
    run(capsys, "template", "--component", "grader", "-o", str(template))
    fill(template, GRADER_ROWS)
    code, out, _ = run(capsys, "add", str(template), "--goldset", str(store), "--dry-run")
    assert code == 0 and "added 3" in out and "dry run" in out and not store.exists()


def bad_workbook(tmp_path: Path, name: str, rows: list[list], header: list[str] | None = None) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header or ["id", "context", "target_info", "candidate", "content_score"])
    for row in rows:
        sheet.append(row)
    path = tmp_path / name
    book.save(path)
    return path


GOOD = ["x1", "patient: a cough", "duration: 3 days", "How long?", 1]


def bad_files(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    files = {
        "missing column": (bad_workbook(tmp_path, "a.xlsx", [GOOD[:4]], ["id", "context", "target_info", "candidate"]), "required column is missing"),
        "label 2": (bad_workbook(tmp_path, "b.xlsx", [GOOD[:4] + [2]]), "label must be 0, 0.5 or 1, got '2'"),
        "empty candidate": (bad_workbook(tmp_path, "c.xlsx", [GOOD[:3] + ["  ", 1]]), "candidate is empty"),
        "duplicate id": (bad_workbook(tmp_path, "d.xlsx", [GOOD, GOOD[:3] + ["Other?", 0]]), "duplicate id 'x1'"),
        "formula": (bad_workbook(tmp_path, "e.xlsx", [GOOD[:4] + ["=1/2"]]), "formula cell"),
    }
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes("id,context,target_info,candidate,content_score\nx,patient: caf\xe9,a: b,c?,1\n".encode("latin-1"))
    files["non-UTF-8 CSV"] = (csv_path, "not UTF-8")
    encrypted = tmp_path / "locked.xlsx"
    encrypted.write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 504 + b"EncryptedPackage")
    files["password-protected"] = (encrypted, "encrypted or damaged")
    corrupt = tmp_path / "corrupt.xlsx"
    corrupt.write_bytes(b"PK\x03\x04 this is not really a workbook")
    files["corrupt"] = (corrupt, "encrypted or damaged")
    ref = bad_workbook(tmp_path, "ref.xlsx", [GOOD[:4] + [1]])
    book = openpyxl.load_workbook(ref)
    cell = book.active.cell(row=2, column=5)
    cell.value, cell.data_type = "#REF!", "e"
    book.save(ref)
    files["#REF! cell"] = (ref, "spreadsheet error #REF!")
    return files


def test_bad_files_give_one_line_per_problem_and_never_touch_the_gold_set(tmp_path, capsys):
    store = tmp_path / "gold.csv"
    shutil.copy(ROOT / "goldsets" / "grader.csv", store)
    before = digest(store)
    for name, (path, words) in bad_files(tmp_path).items():
        code, out, err = run(capsys, "add", str(path), "--goldset", str(store))
        assert code == 2, name
        assert words in err, (name, err)
        assert "Traceback" not in err and "nothing was written" in err, name
        assert digest(store) == before, name
    assert not (tmp_path / "gold.csv.bak").exists()


def test_a_clinical_checklist_with_ref_cells_is_refused_clearly(tmp_path, capsys):
    """A workbook shaped like a consultation checklist (invented rows): a `Checklist` sheet and a `Note 1` sheet
    of cross-sheet formulas, some `=#REF!`, one #REF! error cell; no sheet has the contract's header."""
    checklist = FIXTURES / "checklist-with-ref-cells.xlsx"
    store = tmp_path / "gold.csv"
    shutil.copy(ROOT / "goldsets" / "grader.csv", store)
    before = digest(store)
    code, _, err = run(capsys, "add", str(checklist), "--goldset", str(store))
    assert code == 2
    assert "required column is missing (no sheet of Checklist, Note 1 has it)" in err
    assert "Traceback" not in err and "nothing was written" in err
    assert digest(store) == before and not (tmp_path / "gold.csv.bak").exists()


def test_ten_thousand_rows_load(tmp_path, capsys):
    rows = [GraderRow(id=f"r{i}", context=f"patient: cough {i}", target_info=["duration: 3 days"], candidate=f"How long? {i}",
                      content_score=(0.0, 0.5, 1.0)[i % 3]) for i in range(10_000)]
    path = tmp_path / "big.csv"
    path.write_text(goldset_csv(rows, GraderRow))
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 0 and "10000 rows" in out


def test_written_gold_sets_never_hold_a_live_formula(tmp_path):
    rows = [GraderRow(id="=1+1", context="patient: -2", target_info=["a: @b"], candidate="+cmd|' /C calc'!A0", content_score=1)]
    path = tmp_path / "g.csv"
    path.write_text(goldset_csv(rows, GraderRow))
    text = path.read_text()
    assert "'=1+1" in text and "'+cmd" in text
    assert [r.model_dump() for r, _ in read_rows(path, GraderRow)] == [rows[0].model_dump()]  # the quote is undone on reading


def test_extractor_add_and_stats(tmp_path, capsys):
    store = tmp_path / "e.csv"
    code, out, err = run(capsys, "add", str(ROOT / "goldsets/extractor.csv"), "--component", "extractor", "--goldset", str(store))
    assert code == 0, err
    assert "added 45, updated 0, unchanged 0, rejected 0" in out
    code, out, _ = run(capsys, "stats", "--component", "extractor", "--goldset", str(store))
    assert "45 rows; labels: continue: 30, stop: 15" in out
    assert load_goldset(store, ExtractorRow).sha256 == load_goldset(ROOT / "goldsets/extractor.csv", ExtractorRow).sha256


def test_stats_reports_duplicates_and_annotator_agreement(tmp_path, capsys):
    path = tmp_path / "g.csv"
    path.write_text("id,context,target_info,candidate,content_score,content_score_ann,content_score_bob\n"
                    "a,patient: hi,duration: 2 days,How long?,1,1,1\n"
                    "b,patient: hi,duration: 2 days,How long?,1,1,0.5\n"
                    "c,patient: hello,duration: 2 days,How long?,0,0,0\n"
                    "d,patient: cough,age group: adult,Is it for you?,0.5,0.5,0.5\n")
    code, out, _ = run(capsys, "validate", str(path))
    assert code == 0
    assert "exact duplicates: 0" in out and "a ~ b ~ c" in out
    assert "annotators: ann, bob" in out and "rows where annotators disagree: 1 (b)" in out


def test_audit_ranks_rows_both_prompts_contradict(tmp_path, capsys):
    runs = [make_run(tmp_path, seed=s, run_id=f"run-{s}") for s in (1, 2)]
    code, out, _ = run(capsys, "audit", "--run", str(runs[0]), "--run", str(runs[1]))
    assert code == 0 and "re-check them by hand" in out
    listed = [line for line in out.splitlines() if line.startswith("  ")]
    assert listed and all("both wrong in" in line for line in listed)


CELLS = st.one_of(
    st.text(max_size=20), st.integers(-3, 3), st.floats(allow_nan=False, allow_infinity=False), st.none(), st.booleans(),
    st.dates(), st.sampled_from(["0", "0.5", "1", "0,5", " 1 ", "=1+1", "#REF!", "patient: hi", "duration: 2 days",
                                 "continue", "stop", "pharmacist: ok\npatient: yes", ""]),
)


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(component=st.sampled_from([GraderRow, ExtractorRow]), extra=st.lists(st.sampled_from(["note", "zzz", "annotator"]), max_size=2),
       rows=st.lists(st.lists(CELLS, min_size=0, max_size=8), max_size=6))
def test_random_workbooks_load_or_raise_the_projects_error(tmp_path, component, extra, rows):
    header = ["id", *component.required, *extra]
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        try:
            sheet.append(row)
        except (ValueError, openpyxl.utils.exceptions.IllegalCharacterError):
            continue  # a value openpyxl itself cannot store: not a file a user could have
    path = tmp_path / "random.xlsx"
    book.save(path)
    try:
        gold = load_goldset(path, component)
    except GoldSetError as e:
        assert e.problems
    else:
        assert len(gold.rows) > 0
