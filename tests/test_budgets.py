"""Every advertised budget x optimizer x component runs end to end, through the CLI and the real code path
(OpenAI SDK over HTTP, call cache, DSPy adapters, MIPROv2 / GEPA at the budget's real sizes), against a fast
schema-following server on 127.0.0.1. What the embedded model answers is proven elsewhere; this proves that
no budget dies on its own settings (medium MIPROv2 once did) and that each search keeps to its slices."""

import json

import pytest

from calibrator.components import COMPONENTS
from calibrator.gold.goldset import load_goldset
from calibrator.calibration.optimize import BUDGETS
from calibrator.prompt import load_prompt

from support.files import gold_slice

SLICE = 24  # rows of the shipped gold set, spread over the file so every label is in: a few seconds per combination
pytestmark = pytest.mark.slow


def combinations() -> list[tuple[str, str, str]]:
    """Every budget x optimizer x component, less a named optimizer that the budget's auto already runs at the same
    settings (heavy's auto searches knn, mipro and gepa): its search, trials and slices are checked in the auto run.
    knn, mipro and gepa each stay named once at least (smoke), so the --optimizer path itself is run for each."""
    named = [(c, o) for c in ("grader", "extractor", "stop") for o in ("auto", "knn", "mipro", "gepa")]
    named += [("grader", "threshold")]  # only the grader has an ordinal label: tests/test_judge_floor.py checks the refusal
    return [(b, c, o) for b in BUDGETS for c, o in named if o not in BUDGETS[b].auto or b == "smoke"]


@pytest.mark.parametrize(("budget", "component", "optimizer"), combinations())
def test_every_budget_optimizer_and_component_finishes(tmp_path, stub, budget, optimizer, component, cli):
    saved = tmp_path / "calibrated.yaml"
    goldset = gold_slice(component, tmp_path / f"{component}.csv", SLICE, spread=True)
    done = cli.calibrator("run", "--component", component, "--goldset", goldset, "--budget", budget, "--optimizer", optimizer,
                          "--no-progress", "--lm", f"openai-compatible:stub@{stub.url}", "--cache-dir", tmp_path / "cache",
                          "--out", tmp_path / "reports", "--save-prompt", saved)
    assert done.code == 0, done.err
    assert stub.requests > 0
    record = json.loads(next((tmp_path / "reports").glob("*/run.json")).read_text())
    assert "proposer_lm" not in record["optimization"]  # no --proposer-lm: the task LM proposes and reflects
    searched = BUDGETS[budget].auto if optimizer == "auto" else () if optimizer == "threshold" else (optimizer,)
    composed = component == "grader" and (optimizer == "threshold" or optimizer == "auto" and BUDGETS[budget].threshold)
    thresholds = ("threshold", *(f"{s}+threshold" for s in searched)) if composed else ()
    strategies = (*searched, *thresholds)
    reasoned = ("reasoning", *(f"{s}+reasoning" for s in searched)) if BUDGETS[budget].reasoning else ()
    assert [c["strategy"] for c in record["optimization"]["candidates"]] == ["baseline", *strategies, *reasoned]
    assert all(t["kind"] == "full" for t in record["optimization"]["trials"] if t["strategy"] in reasoned)
    own = {"knn": ("train-loo",), "mipro": ("full", "minibatch"), "gepa": ("full",)} | {t: ("train-cv",) for t in thresholds}
    for strategy in strategies:
        mine = [t for t in record["optimization"]["trials"] if t["strategy"] == strategy and t["metric"] != record["optimization"]["metric"]]
        assert mine and all(t["kind"] in own[strategy] for t in mine), strategy
        examples = [t["score"] for t in mine if t["metric"] == "example_metric"]
        assert all(0.0 <= x <= 1.0 for x in examples) and (not examples or max(examples) > 0)  # the metric's own 0-1 scale

    gold = load_goldset(goldset, COMPONENTS[component].row_model)
    splits = record["goldset"]["splits"]
    assert splits["test"] == sorted(r.id for r in gold.split("test"))
    prompt = load_prompt(saved)
    used = set(COMPONENTS[component].rows_in_prompt(prompt, gold.rows))
    assert not used & (set(splits["val"]) | set(splits["test"]))  # demos and pool come from train only
    if record["optimization"]["winner"].split("+")[0] in ("mipro", "gepa"):
        assert not used & set(splits["dev"])  # the optimizers select on dev; they learn from the rest of train
    if budget == "smoke":
        assert record["goldset"]["evaluated"]["test"] <= BUDGETS["smoke"].eval_rows
