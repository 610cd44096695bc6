"""Reasoning before answering (DSPy's ChainOfThought, as the reference's judge thinks before it scores) as one more
dimension a calibration run compares on val: every component's program reasons when its prompt says so, the run
scores each candidate both ways on val, never on test, and the record names the winner."""

import json

import dspy
import pytest

from calibrator.calibration import runs
from calibrator.components import COMPONENTS
from calibrator.gold.goldset import load_goldset
from calibrator.prompt import PromptFile, load_prompt
from support import ROOT
from support.files import gold_slice


@pytest.mark.parametrize("component", sorted(COMPONENTS))
def test_a_prompt_that_reasons_builds_a_program_that_writes_its_reasoning_first(component):
    plain = load_prompt(ROOT / "prompts" / f"{component}.yaml")
    reasoned = plain.model_copy(update={"reasoning": True})
    program = COMPONENTS[component].build_program(reasoned)
    assert isinstance(program, dspy.ChainOfThought)
    assert list(program.predict.signature.output_fields)[0] == "reasoning"
    assert isinstance(COMPONENTS[component].build_program(plain), dspy.Predict)
    assert plain.content_sha256() != reasoned.content_sha256()


def test_a_prompt_without_reasoning_keeps_the_content_hash_it_had_before_the_option():
    """Records stamped with a prompt's hash (extracted samples, calibrations) stay valid: the literal is the hash this
    prompt had before `reasoning` and `target_scope` existed."""
    prompt = PromptFile(component="grader", instructions="Score the turn.", demos=[])
    assert prompt.content_sha256() == "f9c264fcbb1b501999da01148f132e686ebf36950289047b4f8fe353e7de945e"
    assert prompt.model_copy(update={"reasoning": True}).content_sha256() != prompt.content_sha256()


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
@pytest.mark.parametrize("component", ["grader", "extractor"])
def test_the_run_compares_reasoning_on_val_only_and_records_it(tmp_path, stub, cli, monkeypatch, component):
    goldset = gold_slice(component, tmp_path / f"{component}.csv", 24, spread=True)
    gold = load_goldset(goldset, COMPONENTS[component].row_model)
    split_of = {r.id: s for s in ("train", "val", "test") for r in gold.split(s)}
    calls: list[tuple[str, bool, set[str]]] = []
    real = runs.evaluator

    def recording(*args, **kwargs):
        evaluate = real(*args, **kwargs)

        def wrapped(prompt, rows, label):
            calls.append((label, bool(prompt.reasoning), {split_of[r.id] for r in rows}))
            return evaluate(prompt, rows, label)
        return wrapped

    monkeypatch.setattr(runs, "evaluator", recording)
    done = cli.calibrator("run", "--component", component, "--goldset", goldset, "--budget", "smoke", "--compare-reasoning",
                          "--lm", f"openai-compatible:stub@{stub.url}", "--cache-dir", tmp_path / "cache", "--no-progress",
                          "--out", tmp_path / "reports", "--save-prompt", tmp_path / "saved.yaml")
    assert done.code == 0, done.err
    record = json.loads(next((tmp_path / "reports").glob("*/run.json")).read_text())
    candidates = [c["strategy"] for c in record["optimization"]["candidates"]]
    assert candidates == ["baseline", "knn", "reasoning", "knn+reasoning"]
    winner = record["optimization"]["winner"]
    ranked = record["optimization"]["candidates"]
    best = max(range(len(ranked)), key=lambda i: (ranked[i]["val_score"], ranked[i]["val_secondary"], -i))
    assert winner == ranked[best]["strategy"]  # reasoning or not, the best on val wins
    reasoned = [(label, splits) for label, reasons, splits in calls if reasons]
    assert {label for label, splits in reasoned if splits == {"val"}} == {"knn+reasoning val", "reasoning val"}
    on_test = [label for label, splits in reasoned if "test" in splits]
    assert on_test == ([f"{winner} test"] if "reasoning" in winner else [])
    assert all(splits == {"val"} for label, splits in reasoned if label.endswith(" val"))
    assert load_prompt(tmp_path / "saved.yaml").reasoning == ("reasoning" in winner or None)


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
def test_without_the_flag_a_smoke_run_does_not_compare_reasoning(tmp_path, stub, cli):
    goldset = gold_slice("stop", tmp_path / "stop.csv", 24, spread=True)
    done = cli.calibrator("run", "--component", "stop", "--goldset", goldset, "--budget", "smoke",
                          "--lm", f"openai-compatible:stub@{stub.url}", "--cache-dir", tmp_path / "cache", "--no-progress",
                          "--out", tmp_path / "reports")
    assert done.code == 0, done.err
    record = json.loads(next((tmp_path / "reports").glob("*/run.json")).read_text())
    assert [c["strategy"] for c in record["optimization"]["candidates"]] == ["baseline", "knn"]


def test_a_prompt_cannot_both_reason_and_read_its_label_from_the_first_token(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text((ROOT / "prompts" / "grader.yaml").read_text() + "reasoning: true\nlabel_tokens: {'0': 0.0, '1': 0.5, '2': 1.0}\n")
    with pytest.raises(ValueError, match="reasoning and label_tokens cannot be combined"):
        load_prompt(path)
