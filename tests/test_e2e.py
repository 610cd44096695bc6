"""The grader's command line end to end. On the embedded model, where its answers are the point: one smoke run (its
artifacts, then the same command answered wholly from the cache) and the text the DSPy optimizers' proposer writes.
Against the stub, where the machinery is: a run killed mid-way (SIGKILL, SIGINT) resumed from the cache, and eval by
split."""

import csv
import json
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from calibrator.components.grader import GRADER
from calibrator.lm.local import embedded_gguf, file_fingerprint
from calibrator.lm.spec import LMSpec
from calibrator.prompt import load_prompt
from calibrator.reward.gate import _same_lm
from calibrator.calibration.optimize import BUDGETS
from support import ROOT
from support.cli import Started
from support.files import tiny_gguf

pytestmark = pytest.mark.slow


def runs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))


def record(folder: Path) -> dict:
    return json.loads((folder / "run.json").read_text())


def smoke_args(tmp: Path, *more: str) -> list[str]:
    return ["run", "--component", "grader", "--budget", "smoke", "--save-prompt", str(tmp / "grader.calibrated.yaml"),
            "--out", str(tmp / "reports"), "--cache-dir", str(tmp / "cache"), "--no-progress", *more]


def test_smoke_run_writes_artifacts_and_reruns_from_cache(grader_smoke_run, cli, tmp_path):
    [folder] = runs(grader_smoke_run / "reports")
    rec = record(folder)
    for key in ("run_id", "command", "component", "lm", "optimizer", "seed", "goldset", "baseline", "calibrated",
                "verdict", "usage", "wall_seconds", "prompt"):
        assert key in rec
    assert rec["lm"] == "local"
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
    assert "<html" in (folder / "index.html").read_text()
    assert folder.name in (grader_smoke_run / "reports" / "index.html").read_text()
    saved = (grader_smoke_run / "grader.calibrated.yaml").read_text()
    assert "calibration:" in saved and rec["run_id"] in saved

    # the same command on the same weights named as a file of one's own (`--lm local:PATH`): every answer from the cache
    shutil.copytree(grader_smoke_run / "cache", tmp_path / "cache")
    mine = tmp_path / "my-smollm2.gguf"
    shutil.copy(embedded_gguf(), mine)
    again = cli.calibrator(*smoke_args(tmp_path, "--goldset", grader_smoke_run / "grader.csv", "--lm", f"local:{mine}"))
    assert again.code == 0, again.err
    [rerun] = runs(tmp_path / "reports")
    rerun = record(rerun)
    assert rerun["usage"]["lm_calls"] == 0 and rerun["usage"]["cache_hits"] > 0
    for side in ("baseline", "calibrated"):
        assert rerun[side] == rec[side]
    assert rerun["verdict"] == rec["verdict"] and rerun["lm"] == f"local:{mine.resolve()}"  # the record names the file
    calibration = load_prompt(tmp_path / "grader.calibrated.yaml").calibration
    assert calibration.lm == f"local:{mine.resolve()}" and calibration.lm_weights == file_fingerprint(mine)
    assert load_prompt(grader_smoke_run / "grader.calibrated.yaml").calibration.lm_weights is None  # `local`: by its spec
    moved = mine.rename(tmp_path / "moved.gguf")  # the gate knows the file by its contents, wherever it now lies
    assert _same_lm(calibration, LMSpec.parse(f"local:{moved}"))
    tiny_gguf(mine, "{{ messages }}")  # and another model where the calibrated one was is not it
    assert not _same_lm(calibration, LMSpec.parse(f"local:{mine}"))


def _cached_calls(cache: Path) -> int:
    try:
        with sqlite3.connect(cache / "lm-calls.sqlite", timeout=5) as db:
            return db.execute("SELECT count(*) FROM calls").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_run_resumes_from_cache(tmp_path, sig, stub, cli):
    stub.delay = 0.1  # slow enough to be caught mid-run, one call at a time
    args = smoke_args(tmp_path, "--lm", f"openai-compatible:stub@{stub.url}", "--concurrency", "1")
    killed = Started("calibrator", *args, logs=tmp_path / "logs").kill_when(lambda: _cached_calls(tmp_path / "cache") >= 4, sig)
    made = _cached_calls(tmp_path / "cache")
    assert made >= 4
    reports = tmp_path / "reports"
    assert not (tmp_path / "grader.calibrated.yaml").exists()
    if sig == signal.SIGINT:
        assert killed.code == 130
        assert killed.err.strip().splitlines()[-1] == ("interrupted: nothing half-written; run the same command again to "
                                                       "resume from the cached LM answers")
        assert not reports.exists() or not any(reports.iterdir()), "an interrupted run cleans up its partial folder"
    else:
        assert killed.code == -signal.SIGKILL
        assert not [p for p in reports.iterdir() if not p.name.startswith(".")], "no run folder (and no index) for a killed run"

    stub.delay = 0.0
    resumed = cli.calibrator(*args)
    assert resumed.code == 0, resumed.err
    [folder] = runs(reports)
    usage = record(folder)["usage"]
    assert usage["cache_hits"] >= made
    assert not [p for p in reports.iterdir() if p.name.startswith(".partial")]


def test_eval_scores_every_row_by_split_and_judges_on_test(tmp_path, stub, cli):
    gold = tmp_path / "small.csv"
    with open(ROOT / "goldsets/grader.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    picked = [r for label in ("0", "0.5", "1") for r in [r for r in rows if r["content_score"] == label][:3]]
    with open(gold, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(picked)
    done = cli.calibrator("eval", "--component", "grader", "--goldset", gold, "--lm", f"openai-compatible:stub@{stub.url}",
                          "--out", tmp_path / "reports", "--cache-dir", tmp_path / "cache", "--no-progress")
    assert done.code == 0, done.err
    [folder] = runs(tmp_path / "reports")
    rec = record(folder)
    assert rec["kind"] == "eval" and rec["calibrated"] is None
    assert "all" not in rec["baseline"] and rec["excluded"] == []  # the baseline carries no demos: every row is scored
    assert sum(rec["baseline"][s]["n"] for s in ("train", "val", "test") if s in rec["baseline"]) == 9
    test = rec["baseline"].get("test")
    assert (f"on {test['n']} held-out test rows" if test else "no test rows to judge on") in rec["verdict"]
    assert stub.requests >= 9


@pytest.mark.parametrize("optimizer", ["mipro", "gepa"])
def test_dspy_optimizers_run_with_the_embedded_model_writing_the_prompts(tmp_path, optimizer, embedded, stub, cli):
    """The embedded model is the proposer: its free text becomes MIPROv2's instruction candidates and GEPA's reflections
    (what the stub cannot write); the stub answers the grader's rows, which the smoke run above already asks the model."""
    done = cli.calibrator("run", "--component", "grader", "--budget", "smoke", "--optimizer", optimizer,
                          "--lm", f"openai-compatible:stub@{stub.url}", "--proposer-lm", f"openai-compatible:smollm2@{embedded.base_url}/v1",
                          "--save-prompt", tmp_path / "p.yaml", "--out", tmp_path / "reports", "--cache-dir", tmp_path / "cache",
                          "--no-progress")
    assert done.code == 0, done.err
    [folder] = runs(tmp_path / "reports")
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
    assert search["proposer_lm"] == f"openai-compatible:smollm2@{embedded.base_url}/v1"
    assert search["proposer_usage"]["lm_calls"] > 0
