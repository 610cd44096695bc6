"""The CLI refuses a bad gold set (or --lm) up front: exit 2, every problem on stderr, nothing written.

None of these commands reach the language model: gold-set loading and --lm parsing happen before
`open_lm` in calibrator/cli/calibrate.py.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.goldrows import HEADER, write_csv
from support import ROOT

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


def calibrator(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = os.environ | {"CALIBRATOR_CACHE": str(tmp_path / "home-cache"), "DSPY_CACHEDIR": str(tmp_path / "home-cache" / "dspy")}
    return subprocess.run(
        [sys.executable, "-m", "calibrator", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )


def run_on(tmp_path: Path, goldset: Path, *extra: str) -> subprocess.CompletedProcess:
    return calibrator(tmp_path, "run", "--goldset", str(goldset), "--out", str(tmp_path / "reports"),
                      "--cache-dir", str(tmp_path / "cache"), *extra)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def prompts_untouched():
    before = sha(PROMPT)
    mtime = CALIBRATED.stat().st_mtime_ns if CALIBRATED.exists() else None
    yield
    assert sha(PROMPT) == before
    assert (CALIBRATED.stat().st_mtime_ns if CALIBRATED.exists() else None) == mtime


def assert_nothing_written(tmp_path: Path, result: subprocess.CompletedProcess) -> None:
    assert not (tmp_path / "reports").exists()
    assert not (tmp_path / "cache").exists()
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_missing_column_exit_2(tmp_path, prompts_untouched):
    bad = write_csv(tmp_path / "bad.csv", [GOOD], header=[h for h in HEADER if h != "content_score"])
    result = run_on(tmp_path, bad)
    assert result.returncode == 2, result.stderr
    assert f"{bad}, row 1, column 'content_score'" in result.stderr
    assert "nothing was run or written" in result.stderr
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
    assert result.returncode == 2, result.stderr
    assert "3 problem(s)" in result.stderr
    for row, column in [(3, "content_score"), (4, "candidate"), (5, "id")]:
        assert f"{bad}, row {row}, column '{column}'" in result.stderr
    assert_nothing_written(tmp_path, result)


def test_help_mentions_options(tmp_path):
    top = calibrator(tmp_path, "--help")
    assert top.returncode == 0
    # the top-level help lists the subcommands and examples; --optimizer is documented under `run --help` only
    assert "run" in top.stdout and "eval" in top.stdout
    assert "--lm" in top.stdout and "--budget" in top.stdout
    run = calibrator(tmp_path, "run", "--help")
    assert run.returncode == 0
    for option in ("--lm", "--optimizer", "--budget", "--goldset", "--cache-dir"):
        assert option in run.stdout, option


def test_bogus_lm_one_line_error(tmp_path, prompts_untouched):
    result = run_on(tmp_path, ROOT / "goldsets" / "grader.csv", "--lm", "bogus")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --lm 'bogus'")
    assert_nothing_written(tmp_path, result)
