"""Three roles, three slices: each strategy learns from train, MIPROv2 and GEPA select on dev (never val), and
nothing but val reaches the choice among strategies. The optimizers' compile is intercepted to see the ids."""


import dspy
import pytest

from calibrator.components import COMPONENTS
from calibrator.gold.goldset import load_goldset
from calibrator.calibration.optimize import BUDGETS, Candidate, optimize
from calibrator.prompt import load_prompt
from support import ROOT



class Seen(Exception):
    pass


def setup(component: str):
    comp = COMPONENTS[component]
    gold = load_goldset(ROOT / "goldsets" / f"{component}.csv", comp.row_model)
    base = load_prompt(ROOT / "prompts" / f"{component}.yaml")
    scored: list[set[str]] = []

    def evaluate(prompt, rows, label):
        scored.append({r.id for r in rows})
        return [comp.failed("not scored in this test") for _ in rows]

    baseline = Candidate(strategy="baseline", prompt=base, metric=comp.selection_metric, val_score=0.0, val_secondary=0.0)
    return comp, gold, base, evaluate, baseline, scored


@pytest.mark.parametrize("component", ["grader", "extractor"])
@pytest.mark.parametrize("optimizer", ["mipro", "gepa"])
def test_mipro_and_gepa_learn_from_fit_and_select_on_dev(monkeypatch, component, optimizer):
    comp, gold, base, evaluate, baseline, _ = setup(component)
    seen = {}

    def compile(self, student, *, trainset, valset=None, **_):
        seen["train"], seen["val"] = {e.id for e in trainset}, {e.id for e in valset}
        raise Seen

    monkeypatch.setattr(dspy.MIPROv2 if optimizer == "mipro" else dspy.GEPA, "compile", compile)
    val = gold.split("val")
    lm = dspy.utils.DummyLM([])  # never called: compile is intercepted
    with dspy.context(lm=lm), pytest.raises(Seen):
        optimize(comp, gold, base, optimizer, BUDGETS["medium"], 0, lm, evaluate, val, baseline)
    fit, dev = gold.fit_and_dev()
    assert seen["train"] == {r.id for r in fit}
    assert seen["val"] == {r.id for r in dev}
    assert not seen["val"] & {r.id for r in val} and not seen["train"] & {r.id for r in val}


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_knn_pools_train_and_strategies_are_compared_on_val_only(component):
    comp, gold, base, evaluate, baseline, scored = setup(component)
    val = gold.split("val")
    found = optimize(comp, gold, base, "knn", BUDGETS["light"], 0, None, evaluate, val, baseline)
    knn = next(c for c in found.candidates if c.strategy == "knn")
    assert sorted(comp.rows_in_prompt(knn.prompt, gold.rows)) == sorted(r.id for r in gold.split("train"))
    assert scored and all(ids == {r.id for r in val} for ids in scored)
