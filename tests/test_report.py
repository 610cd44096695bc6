"""The HTML report and the review export, on run folders written by the real scoring and writing code
(tests/support/synthetic_run.py) with made-up predictions; the browser test opens them in headless Chromium."""

import csv
import json
import re

import openpyxl
import pytest
from markupsafe import escape
from support.browser import open_page
from support.synthetic_run import make_run

from calibrator.components.grader import GraderRow
from calibrator.cli import main
from calibrator.gold.goldset import load_goldset
from calibrator.report.view import get_path

ATTACKS = ("<script>alert(1)</script>", '"><img src=x onerror=alert(1)>')
NUMBER = re.compile(r'<span class="n" data-path="([^"]+)" data-value="([^"]*)">([^<]*)</span>')
CELL = re.compile(r'<td data-side="(\w+)" data-gold="([^"]+)" data-pred="([^"]+)" data-count="(\d+)"')


@pytest.mark.parametrize("component", ["grader", "extractor"])
@pytest.mark.parametrize("attack", ATTACKS)
def test_user_text_appears_only_escaped(tmp_path, component, attack):
    folder = make_run(tmp_path, component=component, text=attack)
    for page in (folder / "index.html", tmp_path / "index.html"):
        text = page.read_text()
        assert attack not in text and "<img src=x" not in text and "<script>alert" not in text
    assert str(escape(attack)) in (folder / "index.html").read_text()
    assert (folder / "index.html").read_text().count("<script>") == 1  # only the report's own sorting script


@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_every_number_equals_run_json(tmp_path, component):
    folder = make_run(tmp_path, component=component, seed=3)
    record = json.loads((folder / "run.json").read_text())
    found = NUMBER.findall((folder / "index.html").read_text())
    paths = {p for p, _, _ in found}
    main_metric = "qwk" if component == "grader" else "item_f1"
    assert {f"calibrated.test.{main_metric}", f"baseline.val.{main_metric}_ci.0", "usage.lm_calls", "wall_seconds"} <= paths
    if component == "grader":  # format agreement of the LM and of the rule, with CIs and the rows they are over
        assert {f"{side}.{split}.{key}" for side in ("baseline", "calibrated") for split in ("val", "test")
                for key in ("format_n", "format_accuracy", "format_accuracy_ci.0", "format_rule_accuracy",
                            "format_rule_accuracy_ci.1")} <= paths
        assert {"calibrated.val.format_accuracy", "calibrated.val.format_rule_accuracy"} <= paths  # the trainer's choice
    for path, value, shown in found:
        expected = get_path(record, path)
        assert float(value) == pytest.approx(expected, abs=1e-12), path
        digits = len(shown.split(".")[1]) if "." in shown else 0
        assert shown == f"{expected:.{digits}f}", path


@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_confusion_counts_equal_predictions_csv(tmp_path, component):
    folder = make_run(tmp_path, component=component, seed=5, n_test=40)
    with open(folder / "predictions.csv", newline="") as f:
        test_rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    record = json.loads((folder / "run.json").read_text())
    labels = ["0", "0.5", "1"] if component == "grader" else ["continue", "stop"]
    cells = CELL.findall((folder / "index.html").read_text())
    assert len(cells) == 2 * len(labels) * (len(labels) + 1)
    for side, gold, pred, count in cells:
        gold_col, pred_col = ("gold", side) if component == "grader" else ("gold_decision", f"{side}_decision")
        norm = (lambda v: f"{float(v):g}" if v else "unparsed") if component == "grader" else (lambda v: v or "unparsed")
        expected = sum(1 for r in test_rows if norm(r[gold_col]) == gold and norm(r[pred_col]) == pred)
        assert int(count) == expected, (side, gold, pred)
        if pred != "unparsed":
            table = record[side]["test"]["confusion" if component == "grader" else "decision_confusion"]
            assert table[labels.index(gold)][labels.index(pred)] == expected


@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_banners_for_a_small_test_split_and_parse_failures(tmp_path, component):
    small = make_run(tmp_path / "small", component=component, n_test=6, seed=7)
    text = (small / "index.html").read_text()
    assert re.search(r'role="alert">Only 6 held-out examples: too few for any verdict', text)

    over = make_run(tmp_path / "over", component=component, n_val=20, n_test=20, unparsed=2, seed=7)  # 10% on every split
    record = json.loads((over / "run.json").read_text())
    assert {record[side][split]["parse_failure_rate"] for side in ("baseline", "calibrated") for split in ("val", "test")} == {0.1}
    text = (over / "index.html").read_text()
    for side in ("baseline", "calibrated"):
        for split in ("val", "test"):
            assert re.search(rf'role="alert">{side} · {split}: 10% of answers did not parse \(over 5%\)', text), (side, split)
    assert "too few for any verdict" not in text

    at_limit = make_run(tmp_path / "at-limit", component=component, n_val=20, n_test=20, unparsed=1, seed=7)  # exactly 5%
    record = json.loads((at_limit / "run.json").read_text())
    assert record["calibrated"]["test"]["parse_failure_rate"] == 0.05
    assert "did not parse" not in (at_limit / "index.html").read_text()


def test_index_lists_every_run_with_a_trend_per_component(tmp_path):
    make_run(tmp_path, component="grader", seed=1, run_id="20261124-000001-grader-run-0001")
    make_run(tmp_path, component="grader", seed=2, run_id="20261124-000002-grader-run-0002")
    make_run(tmp_path, component="extractor", seed=3, run_id="20261124-000003-extractor-run-0003")
    text = (tmp_path / "index.html").read_text()
    for run_id in ("0001", "0002", "0003"):
        assert f'href="20261124-00000{run_id[-1]}-' in text
    assert text.count("<svg") == 2 and "grader: held-out qwk per run" in text and "extractor: held-out item_f1 per run" in text


@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_review_export_is_text_only_and_loads_back_as_gold_rows(tmp_path, component):
    folder = make_run(tmp_path, component=component, text="=1+1 ", seed=2)
    out = tmp_path / "review.xlsx"
    assert main(["review", str(folder), "-o", str(out)]) == 0
    sheet = openpyxl.load_workbook(out).active
    header = [c.value for c in sheet[1]]
    assert {"adjudicated_label", "adjudication_note"} <= set(header) and header[-1] == "error"  # the run's columns last
    rows = list(sheet.iter_rows(min_row=2))
    assert rows and all(c.data_type != "f" for row in rows for c in row)
    assert rows[0][0].value.startswith("=1+1")  # the literal text, kept as text
    if component == "grader":
        gold = load_goldset(out, GraderRow)  # the gold-set loader reads the export as gold rows (formula-looking text is text)
        assert len(gold.rows) == len(rows)


def test_review_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["review", str(tmp_path), "-o", str(tmp_path / "r.xlsx")]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_report_opens_in_headless_chromium_without_errors_or_network(tmp_path, component, chromium):
    folder = make_run(tmp_path, component=component, text=ATTACKS[1])
    for page in (folder / "index.html", tmp_path / "index.html"):
        shot = page.with_suffix(".png")
        report = open_page(page, shot, browser=chromium)
        assert report.console_errors == [] and report.page_errors == [], report
        assert report.external_requests == []
        assert shot.stat().st_size > 10_000


def test_human_ceiling_is_shown_when_annotators_agree_or_not(tmp_path):
    from calibrator.report.render import write_report

    folder = make_run(tmp_path, seed=4)
    record = json.loads((folder / "run.json").read_text())
    record["goldset"] |= {"annotators": ["alice", "bob"], "human_qwk": 0.71, "human_n": 30}
    (folder / "run.json").write_text(json.dumps(record))
    text = write_report(folder).read_text()
    assert "human ceiling" in text and "alice, bob" in text
    assert ("goldset.human_qwk", "0.71", "0.71") in NUMBER.findall(text)


def test_an_eval_folder_renders_and_is_listed(tmp_path):
    from calibrator.report.render import write_index, write_report

    folder = make_run(tmp_path, seed=6)
    record = json.loads((folder / "run.json").read_text())
    record |= {"kind": "eval", "calibrated": None, "comparison": None, "optimization": None, "optimizer": None, "budget": None}
    record["prompt"].pop("calibrated")
    record["excluded"] = ["demo-row-1"]
    (folder / "run.json").write_text(json.dumps(record))
    text = write_report(folder).read_text()
    assert "Disagreements on the test split" in text  # an eval is judged on test, never on all rows
    assert "all rows" not in text
    assert "demo-row-1" in text  # rows the prompt carries are named
    assert "eval (no verdict)" in write_index(tmp_path).read_text()


def test_format_agreement_and_the_trainers_format_source_are_shown(tmp_path):
    folder = make_run(tmp_path, seed=3)
    record = json.loads((folder / "run.json").read_text())
    text = (folder / "index.html").read_text()
    test = record["calibrated"]["test"]
    assert 0 < test["format_n"] < test["n"]  # every fifth synthetic row has no gold format_score
    assert test["format_rule_accuracy"] > test["format_accuracy"]  # synthetic humans follow the question count
    val = record["calibrated"]["val"]
    assert val["format_accuracy"] == val["format_rule_accuracy"] == 1.0  # a tie on val goes to the rule
    assert "format term from the <strong>question-count rule</strong>" in text

    from calibrator.report.render import write_report

    record["calibrated"]["val"] |= {"format_rule_accuracy": 0.8}  # the LM better on val, the rule still better on test
    (folder / "run.json").write_text(json.dumps(record))
    assert "format term from the <strong>LM</strong>" in write_report(folder).read_text()
