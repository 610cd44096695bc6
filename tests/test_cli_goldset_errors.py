"""The CLI refuses a bad gold set (or --lm) up front: exit 2, every problem on stderr, nothing written.

None of these commands reach the language model: gold-set loading and --lm parsing happen before
`open_lm` in calibrator/cli/calibrate.py. They run in this process (tests/support/cli.py).
"""

import hashlib
from pathlib import Path

import pytest

from support.files import HEADER, write_csv
from support import ROOT
from support.cli import Result, calibrator

PROMPT = ROOT / "prompts" / "grader.yaml"
CALIBRATED = ROOT / "prompts" / "grader.calibrated.yaml"
GOOD = {
    "id": "r1",
    "context": "patient: I have a cough.\npharmacist: How long?\npatient: Three days.",
    "target_info": "age group: adult",
    "candidate": "Is this for you?",
    "content_score": "1",
    "format_score": "1",
    "note": "",
}


def run_on(tmp_path: Path, goldset: Path, *extra: str) -> Result:
    return calibrator("run", "--goldset", goldset, "--out", tmp_path / "reports", "--cache-dir", tmp_path / "cache", *extra)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def prompts_untouched():
    before = sha(PROMPT)
    mtime = CALIBRATED.stat().st_mtime_ns if CALIBRATED.exists() else None
    yield
    assert sha(PROMPT) == before
    assert (CALIBRATED.stat().st_mtime_ns if CALIBRATED.exists() else None) == mtime


def assert_nothing_written(tmp_path: Path, result: Result) -> None:
    assert not (tmp_path / "reports").exists()
    assert not (tmp_path / "cache").exists()
    assert "Traceback" not in result.err
    assert result.out == ""


def test_missing_column_exit_2(tmp_path, prompts_untouched):
    bad = write_csv(tmp_path / "bad.csv", [GOOD], header=[h for h in HEADER if h != "content_score"])
    result = run_on(tmp_path, bad)
    assert result.code == 2, result.err
    assert f"{bad}, row 1, column 'content_score'" in result.err
    assert "nothing was run or written" in result.err
    assert_nothing_written(tmp_path, result)


def test_bad_rows_exit_2_and_every_problem_listed(tmp_path, prompts_untouched):
    rows = [
        GOOD,                                                  # row 2 (a 3-line cell)
        GOOD | {"id": "r2", "content_score": "2"},             # row 3
        GOOD | {"id": "r3", "candidate": ""},                  # row 4
        GOOD | {"candidate": "Any allergies?"},                # row 5: duplicate id r1
    ]
    bad = write_csv(tmp_path / "bad.csv", rows)
    result = run_on(tmp_path, bad)
    assert result.code == 2, result.err
    assert "3 problem(s)" in result.err
    for row, column in [(3, "content_score"), (4, "candidate"), (5, "id")]:
        assert f"{bad}, row {row}, column '{column}'" in result.err
    assert_nothing_written(tmp_path, result)


def test_help_mentions_options(tmp_path):
    top = calibrator("--help")
    assert top.code == 0
    # the top-level help lists the subcommands and examples; --optimizer is documented under `run --help` only
    assert "run" in top.out and "eval" in top.out
    assert "--lm" in top.out and "--budget" in top.out
    run = calibrator("run", "--help")
    assert run.code == 0
    for option in ("--lm", "--optimizer", "--budget", "--goldset", "--cache-dir"):
        assert option in run.out, option


def test_bogus_lm_one_line_error(tmp_path, prompts_untouched):
    result = run_on(tmp_path, ROOT / "goldsets" / "grader.csv", "--lm", "bogus")
    assert result.code == 2
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --lm 'bogus'")
    assert_nothing_written(tmp_path, result)
