"""The judge's label distribution read from the real embedded llama.cpp server (the threshold run that fits a rule on such
distributions is tests/test_judge_floor.py, against the stub)."""

from pathlib import Path

import dspy
import pytest

from calibrator.components import COMPONENTS
from calibrator.agreement.decision import expected_score
from calibrator.gold.goldset import load_goldset
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
