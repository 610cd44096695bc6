"""The judge's label distribution read from the real embedded llama.cpp server, and a threshold run on it end to end."""

import json
import shutil
from pathlib import Path

import dspy
import pytest

from calibrator.components import COMPONENTS
from calibrator.decision import expected_score
from calibrator.goldset import load_goldset
from calibrator.lm import LMSpec, open_lm
from calibrator.lm.adapter import CompactJSONAdapter
from calibrator.prompt import load_prompt
from support import ROOT

GRADER = COMPONENTS["grader"]
pytestmark = pytest.mark.slow


def _read(prompt, rows, cache: Path):
    with open_lm(LMSpec.parse("local"), cache_dir=cache) as lm, dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
        program = GRADER.build_program(prompt)
        preds = [GRADER.predict(program, row) for row in rows]
        return preds, lm.usage()


def test_label_probabilities_come_from_the_real_servers_top_logprobs_and_are_cached(tmp_path):
    rows = load_goldset(ROOT / "goldsets/grader.csv", GRADER.row_model).split("train")[:3]
    prompt = load_prompt(ROOT / "prompts/grader.yaml").model_copy(update={"label_tokens": GRADER.label_tokens()})
    preds, usage = _read(prompt, rows, tmp_path)
    assert usage.lm_calls == 3
    for pred in preds:
        assert pred.error is None and pred.content_score in (0.0, 0.5, 1.0)
        assert len(pred.label_probs) == 3 and sum(pred.label_probs) == pytest.approx(1.0)
        assert all(0.0 < p < 1.0 for p in pred.label_probs)
        assert 0.0 <= expected_score(pred.label_probs, GRADER.ordinal_labels) <= 1.0
    again, usage = _read(prompt, rows, tmp_path)
    assert usage.lm_calls == 0 and usage.cache_hits == 3
    assert [p.label_probs for p in again] == [p.label_probs for p in preds]


def test_threshold_run_on_the_embedded_model_fits_a_rule_and_names_the_floor(tmp_path, cli, grader_smoke_run):
    shutil.copytree(grader_smoke_run / "cache", tmp_path / "cache")  # the baseline's plain answers are the smoke run's
    out = cli.calibrator("run", "--component", "grader", "--optimizer", "threshold", "--budget", "smoke", "--no-progress",
                         "--cache-dir", tmp_path / "cache", "--out", tmp_path / "reports", "--save-prompt", tmp_path / "grader.yaml")
    assert out.code == 0, out.err
    folder = next(p for p in (tmp_path / "reports").iterdir() if p.is_dir())
    record = json.loads((folder / "run.json").read_text())
    cv = [t for t in record["optimization"]["trials"] if t["kind"] == "train-cv"]
    assert [t["detail"] for t in cv] == ["argmax", "prior", "cuts"]
    assert record["optimization"]["notes"][0].startswith("threshold: ") and "cross-validation inside 12 train rows" in record["optimization"]["notes"][0]
    assert [c["strategy"] for c in record["optimization"]["candidates"]] == ["baseline", "threshold"]
    assert record["floor"] in ("similarity", "neighbours") and "model-free floor" in record["verdict"]
    assert "decision rule: threshold: " in out.out and "model-free floor: " in out.out
    saved = load_prompt(tmp_path / "grader.yaml")
    won = record["optimization"]["winner"] == "threshold"
    assert (saved.decision is not None) == won and (saved.label_tokens == GRADER.label_tokens()) == won
    read = record["prompt"]["calibrated"]["probabilities_read"]
    assert read == (record["calibrated"]["test"]["n"] + record["calibrated"]["val"]["n"] if won else None)
