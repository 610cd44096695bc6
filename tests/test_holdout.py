"""The held-out split stays held out: a run refuses a prompt that carries test rows, `eval` never scores a
prompt on its own demonstrations and names a gold set that moved on, and a smoke or worse run keeps the
saved calibrated prompt. Runs go through the CLI against the schema-following server on 127.0.0.1."""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from calibrator.components.grader import GraderRow
from calibrator.cli import main
from calibrator.components import COMPONENTS
from calibrator.gold.goldset import load_goldset, row_versions
from calibrator.lm import Usage
from calibrator.prompt import Calibration, load_prompt, save_prompt
from calibrator.calibration.runs import _cost, unsaved_reason

from support import ROOT

GRADER = COMPONENTS["grader"]


def cli(stub, *args: str) -> int:
    return main([*args, "--lm", f"openai-compatible:stub@{stub.url}", "--cache-dir", "cache", "--no-progress"])


def prompt_with(rows, *, pool: bool) -> object:
    base = load_prompt(ROOT / "prompts" / "grader.yaml")
    records = [GRADER.demo_record(GRADER.to_example(r, demo=True)) for r in rows]
    if pool:
        from calibrator.prompt import Retrieval
        return base.model_copy(update={"retrieval": Retrieval(k=2, keys=["candidate"], embedder="x", pool=records)})
    return base.model_copy(update={"demos": records})


@pytest.mark.slow  # a whole run on the shipped gold set, through the stub
def test_run_refuses_a_prompt_carrying_test_rows(project, stub, capsys):
    gold = load_goldset(Path("goldsets/grader.csv"), GraderRow)
    leaked = gold.split("test")[:2]
    demos = [{k: v for k, v in d.items() if k != "id"} for d in prompt_with(leaked, pool=False).demos]  # found by content too
    save_prompt(load_prompt(Path("prompts/grader.yaml")).model_copy(update={"demos": demos}), Path("leaky.yaml"))
    code = cli(stub, "run", "--component", "grader", "--budget", "smoke", "--prompt", "leaky.yaml", "--out", "reports")
    err = capsys.readouterr().err
    assert code == 2
    assert f"carries 2 test row(s) as demonstrations or retrieval pool: {leaked[0].id}, {leaked[1].id}" in err
    assert not Path("reports").exists() or not [p for p in Path("reports").iterdir() if p.is_dir()]
    assert not Path("prompts/grader.calibrated.yaml").read_text() != (ROOT / "prompts/grader.calibrated.yaml").read_text()


@pytest.mark.slow  # a whole run on the shipped gold set, through the stub
def test_eval_leaves_out_the_prompts_own_rows_and_judges_on_test(project, stub, capsys):
    gold = load_goldset(Path("goldsets/grader.csv"), GraderRow)
    pool = gold.split("train")[:8] + gold.split("test")[:3]
    save_prompt(prompt_with(pool, pool=True), Path("pooled.yaml"))
    assert cli(stub, "eval", "--component", "grader", "--prompt", "pooled.yaml", "--out", "reports") == 0
    out = capsys.readouterr().out
    folder = next(p for p in Path("reports").iterdir() if p.is_dir())
    record = json.loads((folder / "run.json").read_text())
    assert sorted(record["excluded"]) == sorted(r.id for r in pool)
    with open(folder / "predictions.csv", newline="") as f:
        scored = {row["id"] for row in csv.DictReader(f)}
    assert not scored & {r.id for r in pool}
    assert len(scored) == len(gold.rows) - len(pool)
    assert "all" not in record["baseline"]
    assert record["baseline"]["test"]["n"] == len(gold.split("test")) - 3
    assert f"on {len(gold.split('test')) - 3} held-out test rows" in record["verdict"]
    assert "11 row(s) it carries as demonstrations left out" in out
    assert record["goldset"]["splits"]["test"] == sorted(r.id for r in gold.split("test"))


@pytest.mark.slow  # a whole run on the shipped gold set, through the stub
def test_eval_flags_a_prompt_calibrated_on_another_goldset_version(project, stub, capsys):
    path = Path("goldsets/grader.csv")
    before = load_goldset(path, GraderRow)
    calibration = Calibration(run_id="r", created="2026-01-01T00:00:00Z", optimizer="auto:knn", lm="local", seed=0,
                              goldset_path=str(path), goldset_sha256=before.sha256, val={}, test={}, verdict="improved",
                              goldset_rows=row_versions(before.rows))
    save_prompt(load_prompt(Path("prompts/grader.yaml")).model_copy(update={"calibration": calibration}), Path("old.yaml"))
    with open(path, newline="", encoding="utf-8") as f:
        records = list(csv.DictReader(f))
    relabelled, removed = records[0]["id"], records[1]["id"]
    records[0]["content_score"] = "1" if records[0]["content_score"] != "1" else "0"
    records.pop(1)
    records.append(records[2] | {"id": "brand-new", "candidate": "Is it worse at night?"})
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    assert cli(stub, "eval", "--component", "grader", "--prompt", "old.yaml", "--out", "reports") == 0
    out = capsys.readouterr().out
    record = json.loads(next(p for p in Path("reports").iterdir() if p.is_dir()).joinpath("run.json").read_text())
    assert record["goldset_changes"] == {"added": ["brand-new"], "removed": [removed], "changed": [relabelled]}
    assert "calibrated on another version of the gold set" in out
    assert f"1 changed ({relabelled})" in out


@pytest.mark.slow  # a whole run on the shipped gold set, through the stub
def test_a_smoke_run_does_not_replace_the_calibrated_prompt_unless_asked(project, stub, capsys):
    saved = Path("prompts/grader.calibrated.yaml")
    shipped = saved.read_text()
    assert cli(stub, "run", "--component", "grader", "--budget", "smoke", "--optimizer", "knn", "--out", "reports") == 0
    out = capsys.readouterr().out
    assert saved.read_text() == shipped
    assert "calibrated prompt not saved to prompts/grader.calibrated.yaml: a --budget smoke run only checks the machinery" in out
    assert cli(stub, "run", "--component", "grader", "--budget", "smoke", "--optimizer", "knn", "--out", "reports",
               "--save-prompt", str(saved)) == 0
    assert saved.read_text() != shipped
    assert load_prompt(saved).calibration.goldset_rows == row_versions(load_goldset(Path("goldsets/grader.csv"), GraderRow).rows)


def test_a_worse_verdict_is_not_saved_by_default():
    request = SimpleNamespace(save_explicit=False, budget="light")
    worse = SimpleNamespace(comparison=SimpleNamespace(verdict="worse"))
    better = SimpleNamespace(comparison=SimpleNamespace(verdict="improved"))
    assert unsaved_reason(request, worse) == "its verdict on test is worse than the baseline"
    assert unsaved_reason(request, better) is None
    assert unsaved_reason(SimpleNamespace(save_explicit=True, budget="smoke"), worse) is None


def test_a_proposer_lm_adds_its_cost_and_an_unknown_price_stays_unknown(tmp_path):
    usage = Usage(lm_calls=1, cache_hits=0, prompt_tokens=1_000_000, completion_tokens=0, failures=0, seconds=1.0)

    def handle(spec: str):
        from calibrator.lm import LMSpec
        return SimpleNamespace(spec=LMSpec.parse(spec), usage=lambda: usage)

    request = SimpleNamespace(prices=None)
    alone = _cost(request, handle("openai:gpt-4o-mini"), None)
    both = _cost(request, handle("openai:gpt-4o-mini"), handle("openai:gpt-4o-mini"))
    assert alone is not None and both == pytest.approx(2 * alone)
    assert _cost(request, handle("local"), handle("openai:no-such-model")) is None
