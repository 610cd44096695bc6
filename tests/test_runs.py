"""Run folders and the run's own guards (calibrator/calibration/runs.py): two runs in the same instant in one process get two
folders, in the order they ran; a partial folder is removed only when the process that writes it is gone; `eval`
names a gold set that moved on even when the prompt's record predates per-row versions; and a run whose search
winner carries a test row is refused before anything is written. Commands run in-process against the stub."""

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from calibrator.calibration import runs
from calibrator.components import COMPONENTS
from calibrator.components.grader import GraderRow
from calibrator.gold.goldset import load_goldset
from calibrator.calibration.optimize import Candidate, Optimization
from calibrator.prompt import Calibration, load_prompt, save_prompt
from calibrator.calibration.runs import RunDirectory, new_run_id
from support.files import gold_slice

GRADER = COMPONENTS["grader"]
SLICE = 30  # gold rows: enough for every split, few enough that an eval against the stub takes a second or two
INSTANT = datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=timezone.utc)


class FrozenClock(datetime):
    """`calibrator.calibration.runs.datetime` with the clock stopped: every run in the test starts in the same microsecond."""

    @classmethod
    def now(cls, tz=None):
        return INSTANT if tz is not None else INSTANT.replace(tzinfo=None)


@pytest.fixture
def project(project):
    """The user's working directory with only the first SLICE rows of the grader's gold set."""
    gold_slice("grader", project / "goldsets" / "grader.csv", SLICE)
    return project


def on_stub(stub, *args: str) -> list[str]:
    return [*args, "--out", "reports", "--lm", f"openai-compatible:stub@{stub.url}", "--cache-dir", "cache", "--no-progress"]


def run_folders(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def record(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


# 1. run ids


def test_run_ids_in_one_instant_are_distinct_readable_and_ordered(monkeypatch):
    monkeypatch.setattr(runs, "datetime", FrozenClock)
    monkeypatch.setattr(runs, "_last_ms", 0)  # no earlier run in this process: the frozen instant is the first stamp
    ids = [new_run_id("grader", "eval") for _ in range(3)]
    assert len(set(ids)) == 3
    assert ids == sorted(ids), "lexicographic order of run ids is the order the runs started"
    assert all(i.startswith("20261124-120000") and "-grader-eval-" in i for i in ids)


def test_two_evals_in_the_same_instant_both_land_in_order(project, stub, cli, monkeypatch):
    monkeypatch.setattr(runs, "datetime", FrozenClock)
    monkeypatch.setattr(runs, "_last_ms", 0)  # no earlier run in this process: the frozen instant is the first stamp
    for seed in ("1", "2"):
        done = cli.calibrator(*on_stub(stub, "eval", "--component", "grader", "--seed", seed))
        assert done.code == 0, done.err
    reports = Path("reports")
    folders = run_folders(reports)
    assert [record(f)["seed"] for f in folders] == [1, 2]
    assert [record(f)["run_id"] for f in folders] == [f.name for f in folders]
    assert not [p for p in reports.iterdir() if p.name.startswith(".partial")]
    index = (reports / "index.html").read_text()
    assert all(f.name in index for f in folders)


# 2. partial folders of other processes


def _partial(out: Path, pid: int) -> Path:
    folder = out / f".partial-{pid}-20261124-120000-grader-run-{pid % 10000:04d}"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text("{}")
    return folder


def test_a_running_processes_partial_folder_is_kept(tmp_path):
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        theirs = _partial(tmp_path, running.pid)
        mine = RunDirectory(tmp_path, new_run_id("grader", "eval"))
        assert (theirs / "run.json").read_text() == "{}", "a run still writing keeps its partial folder"
        assert mine.partial.is_dir() and mine.partial != theirs
    finally:
        running.kill()
        running.wait()


def test_a_dead_processes_partial_folder_is_removed(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # reaped: its pid names no process
    left = _partial(tmp_path, ended.pid)
    mine = RunDirectory(tmp_path, new_run_id("grader", "eval"))
    assert not left.exists(), "a killed run's partial folder is cleaned up by the next run"
    assert mine.partial.is_dir()


# 3. eval of a prompt whose calibration record predates per-row versions


def test_eval_names_a_moved_goldset_even_when_the_record_predates_per_row_versions(project, stub, cli):
    gold = load_goldset(Path("goldsets/grader.csv"), GraderRow)
    old_sha = "ab" * 32
    calibration = Calibration(run_id="20250101-000000-grader-run-0001", created="2025-01-01T00:00:00Z", optimizer="auto:knn",
                              lm="local", seed=0, goldset_path="goldsets/grader.csv", goldset_sha256=old_sha, val={}, test={},
                              verdict="improved")  # no goldset_rows: written before rows were versioned
    assert calibration.goldset_rows == {}
    save_prompt(load_prompt(Path("prompts/grader.yaml")).model_copy(update={"calibration": calibration}), Path("old.yaml"))
    done = cli.calibrator(*on_stub(stub, "eval", "--component", "grader", "--prompt", "old.yaml"))
    assert done.code == 0, done.err
    warning = (f"this prompt was calibrated on another version of the gold set ({old_sha[:12]}, now {gold.sha256[:12]}): "
               f"its record predates per-row versions, so which rows changed is unknown")
    assert f"warning: {warning}" in done.out.splitlines()
    [folder] = run_folders(Path("reports"))
    rec = record(folder)
    assert warning in rec["warnings"]
    assert rec["goldset_changes"] is None, "which rows changed is unknown, not 'every row is new'"


# 4. the search winner carries a test row


def test_a_run_whose_winner_carries_a_test_row_is_refused_and_writes_nothing(project, stub, cli, monkeypatch):
    gold = load_goldset(Path("goldsets/grader.csv"), GraderRow)
    leaked = gold.split("test")[:1] + gold.split("train")[:2]

    def leaky_search(component, goldset, base, optimizer, budget, seed, lm, evaluate, val, baseline, threads=1, reasoning=None):
        demos = [component.demo_record(component.to_example(r, demo=True)) for r in leaked]
        knn = Candidate(strategy="knn", prompt=base.model_copy(update={"demos": demos}), metric=baseline.metric,
                        val_score=baseline.val_score + 0.5, val_secondary=baseline.val_secondary)
        return Optimization(winner="knn", candidates=[baseline, knn], trials=[])

    monkeypatch.setattr(runs, "optimize", leaky_search)
    shipped = Path("prompts/grader.calibrated.yaml").read_text()
    done = cli.calibrator(*on_stub(stub, "run", "--component", "grader", "--budget", "smoke"))
    assert done.code == 2, done.err
    assert done.err.strip() == (
        f"error: refusing to judge on test: the knn prompt carries 1 test row(s) as demonstrations or retrieval pool: "
        f"{leaked[0].id}. Remove them from the prompt, or start from a prompt built from train rows only (splits follow "
        f"a hash of each id: `python -m calibrator goldset stats` lists them)")
    assert stub.requests > 0, "the baseline was scored before the search"
    assert not Path("reports").exists() or not list(Path("reports").iterdir()), "no run folder, partial folder or index"
    assert Path("prompts/grader.calibrated.yaml").read_text() == shipped
