"""The CLI end to end on the embedded model: a smoke run, its cached re-run, a killed run resumed, eval."""

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calibrator.components.grader import GRADER
from calibrator.optimize import BUDGETS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def calibrator(*args: str, tmp: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "calibrator", *args, "--out", str(tmp / "reports"), "--cache-dir", str(tmp / "cache"), "--no-progress"]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)


def runs(tmp: Path) -> list[Path]:
    return sorted(p for p in (tmp / "reports").iterdir() if p.is_dir() and not p.name.startswith("."))


def record(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def run_args(tmp: Path) -> list[str]:
    return ["run", "--component", "grader", "--budget", "smoke", "--save-prompt", str(tmp / "grader.calibrated.yaml")]


def test_smoke_run_writes_artifacts_and_reruns_from_cache(tmp_path):
    first = calibrator(*run_args(tmp_path), tmp=tmp_path)
    assert first.returncode == 0, first.stderr
    [folder] = runs(tmp_path)
    rec = record(folder)
    for key in ("run_id", "command", "component", "lm", "optimizer", "seed", "goldset", "baseline", "calibrated",
                "verdict", "usage", "wall_seconds", "prompt"):
        assert key in rec
    assert rec["goldset"]["n"]["test"] > 0 and len(rec["goldset"]["sha256"]) == 64
    for split in ("val", "test"):
        for side in ("baseline", "calibrated"):
            s = rec[side][split]
            assert {"accuracy", "qwk", "mae", "parse_failure_rate", "qwk_ci", "confusion"} <= set(s)
    assert rec["usage"]["lm_calls"] > 0
    loo = [t for t in rec["optimization"]["trials"] if t["strategy"] == "knn" and t["kind"] == "train-loo"]
    assert len(loo) == len(GRADER.retrieval_key_choices) * len(BUDGETS["smoke"].knn_ks)  # every fields x k setting knn tried
    with open(folder / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and {"id", "split", "gold", "baseline", "calibrated"} <= set(rows[0])
    assert sum(sum(r) for r in rec["calibrated"]["test"]["confusion"]) == sum(
        1 for r in rows if r["split"] == "test" and r["calibrated"] != "")
    assert "<html" in (folder / "index.html").read_text() and folder.name in (tmp_path / "reports" / "index.html").read_text()
    saved = (tmp_path / "grader.calibrated.yaml").read_text()
    assert "calibration:" in saved and rec["run_id"] in saved

    again = calibrator(*run_args(tmp_path), tmp=tmp_path)
    assert again.returncode == 0, again.stderr
    rerun = record(runs(tmp_path)[-1])
    assert rerun["usage"]["lm_calls"] == 0 and rerun["usage"]["cache_hits"] > 0
    for side in ("baseline", "calibrated"):
        assert rerun[side] == rec[side]
    assert rerun["verdict"] == rec["verdict"]


def _cached_calls(cache: Path) -> int:
    try:
        with sqlite3.connect(cache / "lm-calls.sqlite", timeout=5) as db:
            return db.execute("SELECT count(*) FROM calls").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_from_cache(tmp_path, sig):
    cmd = [sys.executable, "-m", "calibrator", *run_args(tmp_path), "--out", str(tmp_path / "reports"),
           "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while _cached_calls(tmp_path / "cache") < 4 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.kill(proc.pid, sig)
    proc.communicate(timeout=120)
    made = _cached_calls(tmp_path / "cache")
    assert made >= 4
    reports = tmp_path / "reports"
    assert not any(p for p in reports.iterdir() if not p.name.startswith(".")), \
        "no run folder (and no index) may exist for a killed run"
    assert not (tmp_path / "grader.calibrated.yaml").exists()
    if sig == signal.SIGINT:
        assert not any(reports.iterdir()), "an interrupted run cleans up its partial folder"

    resumed = calibrator(*run_args(tmp_path), tmp=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    [folder] = runs(tmp_path)
    usage = record(folder)["usage"]
    assert usage["cache_hits"] >= made
    assert not [p for p in reports.iterdir() if p.name.startswith(".partial")]


def test_eval_scores_every_row_by_split_and_judges_on_test(tmp_path):
    gold = tmp_path / "small.csv"
    with open(ROOT / "goldsets/grader.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    picked = [r for label in ("0", "0.5", "1") for r in [r for r in rows if r["content_score"] == label][:3]]
    with open(gold, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(picked)
    done = calibrator("eval", "--component", "grader", "--goldset", str(gold), tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    [folder] = runs(tmp_path)
    rec = record(folder)
    assert rec["kind"] == "eval" and rec["calibrated"] is None
    assert "all" not in rec["baseline"] and rec["excluded"] == []  # the baseline carries no demos: every row is scored
    assert sum(rec["baseline"][s]["n"] for s in ("train", "val", "test") if s in rec["baseline"]) == 9
    test = rec["baseline"].get("test")
    assert (f"on {test['n']} held-out test rows" if test else "no test rows to judge on") in rec["verdict"]


@pytest.fixture(scope="module")
def proposer_server():
    from calibrator.lm.local import LocalServer, embedded_gguf

    server = LocalServer(embedded_gguf(), n_ctx=8192)
    yield server
    server.close()


@pytest.mark.parametrize("optimizer, separate_proposer", [("mipro", True), ("gepa", False)])
def test_dspy_optimizers_run_on_the_smoke_budget(tmp_path, optimizer, separate_proposer, proposer_server):
    extra = ["--proposer-lm", f"openai-compatible:smollm2@{proposer_server.base_url}/v1"] if separate_proposer else []
    done = calibrator("run", "--component", "grader", "--budget", "smoke", "--optimizer", optimizer,
                      "--save-prompt", str(tmp_path / "p.yaml"), *extra, tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    [folder] = runs(tmp_path)
    rec = record(folder)
    search = rec["optimization"]
    strategies = {c["strategy"] for c in search["candidates"]}
    assert strategies == {"baseline", optimizer}
    # the optimizer's own log (MIPROv2's trial_logs, GEPA's detailed_results), scored by the per-example metric;
    # the engine appends one val trial per strategy on top, scored by the selection metric
    own = [t for t in search["trials"] if t["strategy"] == optimizer and t["metric"] == "example_metric"]
    assert own and all(t["kind"] in ("full", "minibatch") and 0 <= t["score"] <= 1 for t in own)
    [appended] = [t for t in search["trials"] if t["strategy"] == optimizer and t["metric"] != "example_metric"]
    assert appended["metric"] == "qwk" and appended["score"] == next(c["val_score"] for c in search["candidates"] if c["strategy"] == optimizer)
    assert search["winner"] in strategies
    if separate_proposer:
        assert search["proposer_lm"].startswith("openai-compatible:smollm2@")
        assert search["proposer_usage"]["lm_calls"] > 0
    else:
        assert "proposer_lm" not in search
