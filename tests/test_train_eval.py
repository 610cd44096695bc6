"""`train eval`'s pure parts: per-sample scores, the paired session bootstrap and its verdicts, the resumable generation
cache and the HTML page. Fake graders only: no LM, no torch model."""

import json
import os
import re

import numpy as np
import pytest

from calibrator.components.grader import GraderPrediction
from calibrator.agreement.metrics import percentile_interval
from calibrator.prompt import Calibration
from train.evaluate import (Completion, CompletionCache, cache_key, cache_slot, compare, describe, generate, grader_agreement, metrics, model_identity,
                            score, weighted_auc)
from train.report import render_eval
from support.training import calibration, sample

STOP, ASK = "<stop />", "How long has it lasted?"


def grade(context: str, target: str, candidate: str) -> GraderPrediction:
    return GraderPrediction(content_score=1.0 if "long" in candidate else 0.5, format_score=1.0)


def scored(samples, completions):
    return score(samples, completions, grade, "default", "rule")


def by_name(comparison):
    return {c.name: c for c in comparison}


def test_scores_are_per_sample_records_and_metrics_come_from_them():
    samples = [sample("a", 0, "continue"), sample("a", 1, "continue"), sample("b", 0, "stop"), sample("b", 1, "stop")]
    records = scored(samples, [ASK, "Any fever?", STOP, "Why?"])
    assert [(r.id, r.session_id, r.expert, r.predicted) for r in records] == [
        ("a_0", "a", "continue", "continue"), ("a_1", "a", "continue", "continue"), ("b_0", "b", "stop", "stop"),
        ("b_1", "b", "stop", "continue")]
    assert [r.reward for r in records] == [4.0, 1 * (1 + 2 * 0.5) + 1, 4.0, 0.0]
    m = metrics(records)
    assert (m["n"], m["n_continue"], m["n_stop"], m["grader_failures"]) == (4, 2, 2, 0)
    assert m["good_question_rate"] == 0.5 and m["mean_content"] == 0.75 and m["termination_accuracy"] == 0.5
    assert m["continue_accuracy"] == 1.0 and m["decision_accuracy"] == 0.75 and m["mean_reward"] == pytest.approx(11 / 4)


def mixed(n_sessions: int = 30):
    """Per session one continue and one stop sample; base and trained right on different, overlapping sessions."""
    samples = [sample(f"s{i}", k, d) for i in range(n_sessions) for k, d in enumerate(("continue", "stop"))]
    base = [STOP if (d == "stop") == (i % 3 == 0) else ASK for i in range(n_sessions) for d in ("continue", "stop")]
    trained = [STOP if (d == "stop") == (i % 2 == 0) else ASK for i in range(n_sessions) for d in ("continue", "stop")]
    return samples, scored(samples, base), scored(samples, trained)


def test_intervals_are_deterministic_for_a_seed_and_contain_the_point_value():
    samples, base, trained = mixed()
    first = compare(samples, base, trained, seed=3)
    assert first == compare(samples, base, trained, seed=3)
    assert [c.delta_ci for c in first] != [c.delta_ci for c in compare(samples, base, trained, seed=4)]
    for c in first:
        assert c.base_ci[0] <= c.base <= c.base_ci[1] and c.trained_ci[0] <= c.trained <= c.trained_ci[1]
        assert c.delta_ci[0] <= c.delta <= c.delta_ci[1] and c.delta == pytest.approx(c.trained - c.base)
    assert by_name(first)["termination_accuracy"].base_ci[1] > by_name(first)["termination_accuracy"].base_ci[0]


def test_always_stopping_where_the_expert_stopped_is_an_improvement():
    samples = [sample(f"s{i}", 0, "stop") for i in range(30)]
    comparison = by_name(compare(samples, scored(samples, [ASK] * 30), scored(samples, [STOP] * 30)))
    term = comparison["termination_accuracy"]
    assert (term.base, term.trained, term.n, term.sessions) == (0.0, 1.0, 30, 30)
    assert term.verdict == "improved" and term.delta_ci[0] > 0
    assert describe(term) == "termination_accuracy: base 0.00 [0.00, 0.00] → trained 1.00 [1.00, 1.00], +1.00 [+1.00, +1.00]: improved"
    for name in ("good_question_rate", "mean_content", "continue_accuracy"):  # no continue sample at all
        c = comparison[name]
        assert (c.n, c.base, c.trained, c.delta, c.delta_ci, c.verdict) == (0, None, None, None, None, "too few examples")
    assert describe(comparison["mean_content"]) == "mean_content: no samples: too few examples"


def test_without_a_grader_content_is_not_measured_on_either_side_while_decisions_are():
    samples = [sample(f"s{i}", 0, "continue") for i in range(12)] + [sample(f"s{i}", 1, "stop") for i in range(12)]
    base = score(samples, [STOP] * 12 + [ASK] * 12, None, "stop", "rule")  # every decision wrong
    trained = score(samples, [ASK] * 12 + [STOP] * 12, None, "stop", "rule")  # every decision right
    assert metrics(base)["good_question_rate"] is None and metrics(trained)["mean_content"] is None
    comparison = by_name(compare(samples, base, trained))
    for name in ("good_question_rate", "mean_content"):
        c = comparison[name]
        assert (c.n, c.base, c.trained, c.delta, c.verdict) == (0, None, None, None, "too few examples")
    decision = comparison["decision_accuracy"]
    assert (decision.base, decision.trained, decision.verdict) == (0.0, 1.0, "improved")
    assert [s.reward for s in trained] == [4.0] * 24  # 3 R_stop + R_format: one question, or exactly <stop />


def test_identical_outputs_change_nothing_and_a_degradation_is_worse():
    samples, base, trained = mixed()
    same = compare(samples, base, base)
    assert all(c.delta == 0 and c.delta_ci == (0.0, 0.0) and c.verdict == "no significant change" for c in same)
    stops = [sample(f"s{i}", 0, "stop") for i in range(30)]
    worse = by_name(compare(stops, scored(stops, [STOP] * 30), scored(stops, ["Any allergies?"] * 30)))
    assert worse["termination_accuracy"].verdict == "worse" and worse["termination_accuracy"].delta_ci[1] < 0
    assert worse["mean_reward"].verdict == "worse"


def test_a_subset_smaller_than_min_n_has_too_few_examples_and_replicates_without_it_are_dropped():
    samples = [sample(f"s{i}", 0, "continue") for i in range(30)] + [sample("s0", k, "stop") for k in range(1, 6)]
    comparison = by_name(compare(samples, scored(samples, [ASK] * 35), scored(samples, [ASK] * 30 + [STOP] * 5), n_boot=1000))
    term = comparison["termination_accuracy"]
    assert (term.n, term.sessions, term.delta) == (5, 1, 1.0) and term.delta_ci[0] > 0
    assert term.verdict == "too few examples"
    assert 0 < term.replicates < 1000  # the stop samples' one session is missing from about a third of the draws
    decision = comparison["decision_accuracy"]  # 35 samples, but the whole gain sits in one session
    assert (decision.n, decision.replicates, decision.delta_ci[0], decision.verdict) == (35, 1000, 0.0, "no significant change")


def test_the_bootstrap_resamples_sessions_not_samples():
    """Ten stop samples per session, all right or all wrong together: 20 sessions carry the information of 20, not 200."""
    samples = [sample(f"s{i}", k, "stop") for i in range(20) for k in range(10)]
    trained_texts = [STOP if i % 2 == 0 else ASK for i in range(20) for _ in range(10)]
    term = by_name(compare(samples, scored(samples, [ASK] * 200), scored(samples, trained_texts)))["termination_accuracy"]
    values = np.array([float(t == STOP) for t in trained_texts])
    per_sample = values[np.random.default_rng(0).integers(0, 200, size=(2000, 200))].mean(axis=1)
    low, high = percentile_interval(per_sample, 0.95)
    assert term.trained == 0.5 and term.trained_ci[1] - term.trained_ci[0] > 2 * (high - low)


KEY = {"model": "/models/a w.safetensors:10:1", "max_new_tokens": 32, "prompt_sha256": "ab"}


def made(text: str, p_stop: float = 0.25) -> Completion:
    return Completion(text=text, p_stop=p_stop)


def test_the_cache_reuses_matching_lines_and_drops_other_models_and_a_torn_last_line(tmp_path):
    path = tmp_path / "eval.base.jsonl"
    other = KEY | {"model": "/models/b"}
    lines = [json.dumps({"id": "x", "completion": "Fever?", "p_stop": 0.25, **KEY}),
             json.dumps({"id": "y", "completion": STOP, "p_stop": 0.25, **other}),
             json.dumps({"id": "z", "completion": "Any pain?", "p_stop": 0.25, **KEY | {"max_new_tokens": 8}}),
             json.dumps({"id": "u", "completion": "Any rash?", **KEY}),  # written before P(<stop) was measured
             json.dumps({"id": "w", "completion": "Since when?", "p_stop": 0.25, **KEY})]
    path.write_text("\n".join(lines) + "\n" + '{"id": "v", "completion": "Ha')
    cache = CompletionCache(path, KEY)
    assert cache.done == {"x": made("Fever?"), "w": made("Since when?")} and cache.texts == {"u": "Any rash?"}
    cache.add("v", made("How old?", 0.5))
    cache.add("u", made("Any rash?", 0.125))
    again = CompletionCache(path, KEY)
    assert again.done == {"x": made("Fever?"), "w": made("Since when?"), "v": made("How old?", 0.5), "u": made("Any rash?", 0.125)}
    assert again.texts == {}
    assert [json.loads(line)["id"] for line in path.read_text().splitlines()] == ["x", "u", "w", "v"]
    assert CompletionCache(path, other).done == {} and path.read_text() == ""


def test_generate_reuses_a_full_cache_without_loading_the_model(tmp_path, monkeypatch):
    model_dir = tmp_path / "final"
    model_dir.mkdir()
    (model_dir / "model.safetensors").write_bytes(b"not a model")  # loading it would fail
    samples = [sample("s", 0, "continue"), sample("s", 1, "stop")]
    key = cache_key(model_dir, "Ask one question.", 16)
    cache = tmp_path / "eval.trained.jsonl"
    cache.write_text("".join(json.dumps({"id": cache_slot(s), "completion": c, "p_stop": p, **key}) + "\n"
                             for s, c, p in ((samples[1], STOP, 0.75), (samples[0], ASK, 0.125))))
    import transformers

    class ModelLoaded(Exception):
        """Raised by the loader: proves generate went to load the model, not that something else failed."""

    loaded: list[object] = []

    def loader(path, *args, **kwargs):
        loaded.append(path)
        raise ModelLoaded(path)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", loader)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", loader)
    assert generate(model_dir, samples, "Ask one question.", 16, cache=cache) == [made(ASK, 0.125), made(STOP, 0.75)]
    assert loaded == []  # everything was cached: nothing loaded
    with pytest.raises(ModelLoaded):  # same ids, another dialogue: not taken from the cache, so the model loads
        generate(model_dir, [sample("s", 0, "continue", context="another dialogue")], "Ask one question.", 16, cache=cache)
    with pytest.raises(ModelLoaded):  # another policy prompt: nothing cached for it
        generate(model_dir, samples, "Ask two questions.", 16, cache=cache)
    assert loaded == [model_dir, model_dir]
    os.utime(model_dir / "model.safetensors", ns=(1, 1))  # the folder trained into again
    assert model_identity(model_dir) != key["model"]


def qwk_calibration(ci: tuple[float, float]) -> Calibration:
    return calibration(run_id="r1", optimizer="gepa", test={"qwk": 0.31, "qwk_ci": list(ci), "n": 40}, verdict="improved")


def page(record: Calibration | None, threshold: float = 0.4) -> str:
    samples = [sample("s1", 0, "continue", context="fever & cough"), sample("s1", 1, "stop"), sample("s2", 0, "stop")]
    base = scored(samples, ["<script>alert(1)</script>", ASK, STOP])
    trained = scored(samples, [ASK, STOP, STOP])
    grader = grader_agreement("prompts/grader.calibrated.yaml", record, threshold)
    result = {"note": "3 held-out samples from 2 sessions; greedy decoding", "grader": grader.model_dump(mode="json"),
              "comparison": [c.model_dump(mode="json") for c in compare(samples, base, trained)],
              "scores": {"base": [s.model_dump(mode="json") for s in base], "trained": [s.model_dump(mode="json") for s in trained]}}
    return render_eval(json.loads(json.dumps(result)), samples)


def test_the_page_escapes_model_and_log_text_and_loads_nothing_from_outside():
    html = page(qwk_calibration((0.45, 0.6)))
    assert html.startswith("<!doctype html>")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script" not in html.lower()
    assert "fever &amp; cough" in html and "fever & cough" not in html
    assert "http://" not in html and "https://" not in html and "@import" not in html
    assert html.count("class=differs") == 1  # s1_1: base asks, trained stops
    assert "termination_accuracy" in html and "+0.50" in html


def test_the_page_warns_when_the_graders_agreement_is_not_established():
    agreement = "grader held-out qwk 0.31, 95% CI [0.05, 0.52] on 40 rows (LM local)"
    weak = page(qwk_calibration((0.05, 0.52)))
    assert agreement in weak
    assert re.search(r"whose agreement with humans is not established \(qwk CI lower bound 0\.05 &lt; 0\.40\), so it does not "
                     r"measure question quality", weak)
    assert "not established" not in page(qwk_calibration((0.45, 0.52)))
    assert "not established" not in page(qwk_calibration((0.05, 0.52)), threshold=0.0)
    missing = page(None)
    assert "not established (no calibration record)" in missing and "has no calibration record" in missing


def test_weighted_auc_is_sklearns_auc_of_the_samples_repeated_by_their_weights():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(3)
    positive = rng.random(40) < 0.3
    score = rng.integers(0, 6, 40) / 5  # many ties
    weights = rng.integers(0, 4, size=(5, 40)).astype(float)
    got = weighted_auc(positive, score, weights)
    for row, value in zip(weights, got):
        repeated = np.repeat(np.arange(40), row.astype(int))
        assert value == pytest.approx(roc_auc_score(positive[repeated], score[repeated]))
    assert np.isnan(weighted_auc(positive, score, np.where(positive, 0.0, 1.0)[None, :]))[0]  # no positive drawn
    assert weighted_auc(positive.astype(int), score, weights) == pytest.approx(got)  # 0/1 labels read as booleans
    with pytest.raises(ValueError, match="NaN"):
        weighted_auc(positive, np.where(positive, np.nan, 0.5), weights)


def discriminating(samples, stop_p: float, continue_p: float):
    completions = [ASK] * len(samples)
    return score(samples, completions, None, "stop", "rule",
                 p_stop=[stop_p if s.decision == "stop" else continue_p for s in samples])


def test_stop_discrimination_rises_when_the_policy_ranks_stops_first_whatever_it_says():
    samples = [sample(f"s{i}", k, "stop" if k == 2 else "continue") for i in range(12) for k in range(3)]
    flat = discriminating(samples, 0.1, 0.1)  # no idea where the expert stopped: every pair a tie
    ranked = discriminating(samples, 0.3, 0.2)  # still says a question everywhere, but ranks every stop first
    c = by_name(compare(samples, flat, ranked))["stop_discrimination"]
    assert (c.base, c.trained, c.delta) == (0.5, 1.0, 0.5)
    assert c.delta_ci == (0.5, 0.5) and c.verdict == "improved"
    assert by_name(compare(samples, flat, ranked))["termination_accuracy"].verdict == "no significant change"
    assert metrics(ranked)["stop_discrimination"] == 1.0
    backwards = by_name(compare(samples, ranked, discriminating(samples, 0.2, 0.3)))["stop_discrimination"]
    assert backwards.trained == 0.0 and backwards.verdict == "worse"


def test_stop_discrimination_is_paired_and_drops_the_same_replicates_on_both_sides():
    rng = np.random.default_rng(5)
    samples = [sample(f"s{i}", k, "stop" if k == 2 and i < 2 else "continue") for i in range(30) for k in range(3)]
    noisy = score(samples, [ASK] * 90, None, "stop", "rule", p_stop=list(rng.random(90)))
    same = by_name(compare(samples, noisy, noisy, n_boot=400, min_n=1))["stop_discrimination"]
    assert same.delta_ci == (0.0, 0.0)  # the same draws on both sides: unpaired draws would give a spread here
    assert same.base_ci[0] < same.base < same.base_ci[1]
    # 2 stops in 30 sessions: (28/30)^30, about 1 replicate in 8, draws no stop at all, and is dropped from both sides
    assert 0.8 * 400 < same.replicates < 0.95 * 400
    shifted = score(samples, [ASK] * 90, None, "stop", "rule",
                    p_stop=[min(1.0, s.p_stop + 0.3) if s.expert == "stop" else s.p_stop for s in noisy])
    up = by_name(compare(samples, noisy, shifted, n_boot=400, min_n=1))["stop_discrimination"]
    assert up.replicates == same.replicates and not np.isnan(up.delta_ci).any() and up.delta_ci[0] >= 0.0 < up.delta


def test_stop_discrimination_counts_the_stops_against_min_n_and_is_absent_without_probabilities():
    samples = [sample(f"s{i}", k, "stop" if (i, k) in {(0, 2), (1, 2)} else "continue") for i in range(12) for k in range(3)]
    c = by_name(compare(samples, discriminating(samples, 0.1, 0.1), discriminating(samples, 0.3, 0.2)))["stop_discrimination"]
    assert c.verdict == "too few examples"  # 2 stops among 36 samples: an AUC over two positives
    unmeasured = score(samples, [ASK] * 36, None, "stop", "rule")
    assert "stop_discrimination" not in by_name(compare(samples, unmeasured, unmeasured))
    assert metrics(unmeasured)["stop_discrimination"] is None
