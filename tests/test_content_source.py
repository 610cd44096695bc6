"""The reward's content judge, chosen on val like its format term: a calibration records the model-free floors beside
the prompt's own figures; the trainer grades content with the LM only when the LM agrees better with the humans on val,
else with the best floor (fitted again on the same train split, no LM call), and holds that judge to the gate."""

import json
from contextlib import ExitStack
from datetime import datetime, timezone

import pytest

from calibrator.components.grader import GRADER, choose_content_source
from calibrator.gold.goldset import load_goldset
from calibrator.prompt import Calibration, load_prompt, save_prompt
from calibrator.reward.gate import GateError
from support import ROOT
from support.files import gold_slice
from support.training import sample
from train import __main__ as train_main
from train.config import load_config
from train.gate import gate


def record(lm_val: float | None, floors: dict[str, float | None], test=None, goldset="goldsets/grader.csv") -> Calibration:
    test = test or {"qwk": 0.5, "qwk_ci": [0.45, 0.55], "n": 31}  # the LM's own test figures have n 40
    return Calibration(run_id="r", created=datetime.now(timezone.utc), optimizer="auto:knn", lm="local", seed=0,
                       goldset_path=goldset, goldset_sha256="x", val={"qwk": lm_val}, test={"qwk": 0.1, "qwk_ci": [-0.1, 0.3], "n": 40},
                       verdict="improved", floors={n: {"description": n, "val": {"qwk": q}, "test": test} for n, q in floors.items()})


@pytest.mark.parametrize("lm, floors, chosen", [
    (0.40, {"similarity": 0.30, "neighbours": 0.20}, "lm"),
    (0.30, {"similarity": 0.30, "neighbours": 0.20}, "similarity"),  # a tie goes to the floor
    (0.10, {"similarity": 0.20, "neighbours": 0.35}, "neighbours"),
    (None, {"similarity": 0.20}, "similarity"),
    (0.10, {"similarity": None}, "lm"),
    (0.10, {}, "lm"),  # recorded before floors were
])
def test_the_lm_grades_content_only_when_it_beats_every_floor_on_val(lm, floors, chosen):
    assert choose_content_source(record(lm, floors)).source == chosen
    assert choose_content_source(None).source == "lm"


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
def test_a_calibration_records_its_floors_on_val_and_test(tmp_path, stub, cli):
    goldset = gold_slice("grader", tmp_path / "grader.csv", 24, spread=True)
    done = cli.calibrator("run", "--component", "grader", "--goldset", goldset, "--budget", "smoke", "--no-progress",
                          "--lm", f"openai-compatible:stub@{stub.url}", "--cache-dir", tmp_path / "cache",
                          "--out", tmp_path / "reports", "--save-prompt", tmp_path / "saved.yaml")
    assert done.code == 0, done.err
    floors = load_prompt(tmp_path / "saved.yaml").calibration.floors
    run = json.loads(next((tmp_path / "reports").glob("*/run.json")).read_text())
    assert set(floors) == {"similarity", "neighbours"} == set(run["floors"])
    for name, figures in floors.items():
        for split in ("val", "test"):
            scores = run["floors"][name]["scores"][split]
            assert figures[split]["qwk"] == scores["qwk"] and figures[split]["qwk_ci"] == list(scores["qwk_ci"])
            assert isinstance(scores["qwk"], float) and -1.0 <= scores["qwk"] <= 1.0
            assert figures[split]["n"] == run["goldset"]["evaluated"][split]


def floor_prompt(tmp_path, goldset):
    prompt = load_prompt(ROOT / "prompts" / "grader.yaml").model_copy(
        update={"calibration": record(0.05, {"similarity": 0.5}, goldset=str(goldset))})
    save_prompt(prompt, tmp_path / "grader.floor.yaml")
    return tmp_path / "grader.floor.yaml"


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
def test_a_floor_that_wins_grades_content_without_any_lm_call(tmp_path):
    goldset = gold_slice("grader", tmp_path / "grader.csv", 60, spread=True)
    config = load_config(None, grader_prompt=floor_prompt(tmp_path, goldset), grader_lm="openai-compatible:m@http://127.0.0.1:9",
                         cache_dir=tmp_path / "cache")
    with ExitStack() as stack:
        handle, grade = train_main._grader(config, stack)
    assert handle is None
    floor = next(f for f in GRADER.floors() if f.name == "similarity")
    floor.fit(load_goldset(goldset, GRADER.row_model).split("train"))
    rows = load_goldset(goldset, GRADER.row_model).split("val")
    graded = [grade(r.context, r.target_text, r.candidate).content_score for r in rows]
    assert graded == [p.content_score for p in floor.predict(rows)] and len(set(graded)) > 1


def test_the_gate_holds_the_chosen_floor_to_its_own_held_out_figures(tmp_path):
    goldset = gold_slice("grader", tmp_path / "grader.csv", 60, spread=True)
    path = floor_prompt(tmp_path, goldset)
    prompt = load_prompt(path)
    prompt.calibration.goldset_sha256 = load_goldset(goldset, GRADER.row_model).sha256
    save_prompt(prompt, path)
    passed = gate(load_config(None, grader_prompt=path, grader_lm="openai:gpt-4o"))
    assert passed["content_source"]["source"] == "similarity"
    checks = {c["check"]: c for c in passed["checks"]}
    assert checks["heldout_qwk_ci_low"]["figure"] == 0.45 and checks["heldout_rows"]["figure"] == 31
    assert checks["grader_lm"]["passed"]
    prompt.calibration.floors["similarity"]["test"]["qwk_ci"] = [0.2, 0.6]  # the floor's own figure fails; the LM's is not read
    save_prompt(prompt, path)
    with pytest.raises(GateError, match=r"model-free floor similarity .* lower bound 0.20 is under min_grader_qwk 0.4"):
        gate(load_config(None, grader_prompt=path))


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
def test_eval_can_grade_with_a_judge_other_than_the_rewards(tmp_path):
    """The record chooses similarity for the reward; `train eval --judge neighbours` grades with the neighbours floor,
    fitted on the same train split, and `lm` would ask the LM (here no LM is reachable, so it is never opened)."""
    goldset = gold_slice("grader", tmp_path / "grader.csv", 60, spread=True)
    config = load_config(None, grader_prompt=floor_prompt(tmp_path, goldset), grader_lm="openai-compatible:m@http://127.0.0.1:9",
                         cache_dir=tmp_path / "cache")
    rows = load_goldset(goldset, GRADER.row_model)
    floors = {f.name: f for f in GRADER.floors()}
    for f in floors.values():
        f.fit(rows.split("train"))
    val = rows.split("val")
    expected = {name: [p.content_score for p in f.predict(val)] for name, f in floors.items()}
    assert expected["similarity"] != expected["neighbours"]  # else the test could not tell which judge graded
    for judge, name in ((None, "similarity"), ("neighbours", "neighbours"), ("similarity", "similarity")):
        with ExitStack() as stack:
            handle, grade = train_main._grader(config, stack, judge)
        assert handle is None
        assert [grade(r.context, r.target_text, r.candidate).content_score for r in val] == expected[name]


def test_eval_refuses_a_judge_it_does_not_know(tmp_path, cli):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"out": str(run)}))
    (run / "run.json").write_text("{}")
    (run / "heldout.jsonl").write_text(sample("s", 0, "continue").model_dump_json() + "\n")
    refused = cli.train("eval", "--model", run, "--judge", "bleu")
    assert refused.code == 2 and "--judge bleu: not a content judge; choose one of lm, similarity, neighbours" in refused.err
    (run / "config.json").write_text(json.dumps({"out": str(run), "content": False, "fusion": "stop"}))
    refused = cli.train("eval", "--model", run, "--judge", "neighbours")
    assert refused.code == 2 and "this run grades none (content: false)" in refused.err
