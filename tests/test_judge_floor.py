"""Reading a judge's label as a distribution, the decision rules fitted on it, and the model-free floor: the pure logic
with made-up numbers, the slices each piece may see, and a run through the real client against the schema server."""

import json
import math
import random

import dspy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrator.cli import main
from calibrator.components import COMPONENTS
from calibrator.components.label_read import LabelReader
from calibrator.agreement.decision import DecisionRule, fit_cuts, fit_rule, label_by_cuts, label_distribution
from calibrator.components.retrieval import NearestDemos
from calibrator.calibration.floor import floor_sentence, judge_floor
from calibrator.lm.cache import CallCache
from calibrator.lm.engine import CachingEngine
from calibrator.lm.policy import CallPolicy
from calibrator.lm.usage import UsageMeter
from calibrator.lm.wire import Answer, TokenChoice
from calibrator.agreement.metrics import PairedComparison
from calibrator.report.view import floor_banner
from calibrator.gold.goldset import load_goldset
from calibrator.agreement.metrics import quadratic_weighted_kappa
from calibrator.calibration.optimize import BUDGETS, Candidate, optimize
from calibrator.prompt import load_prompt
from calibrator.reward.terms import grader_call
from support import ROOT

LABELS = (0.0, 0.5, 1.0)
GRADER = COMPONENTS["grader"]
TOKENS = {"0": 0.0, "1": 0.5, "2": 1.0}


# --- cut points and rules ------------------------------------------------------------------------------------------


@pytest.mark.slow
@settings(max_examples=40, deadline=None)
@given(st.floats(0.05, 0.45), st.floats(0.55, 0.95), st.integers(0, 10_000))
def test_cut_fitting_recovers_known_cut_points(low, high, seed):
    """Gold made by two known cuts on the scores: the fitted cuts separate the rows exactly as the true ones do, so
    each lies in the gap of observed scores around its true cut."""
    rng = random.Random(seed)
    scores = [rng.random() for _ in range(60)]
    gold = [label_by_cuts(s, (low, high), LABELS) for s in scores]
    cuts = fit_cuts(scores, gold, LABELS)
    for fitted, true in zip(cuts, (low, high)):
        below = max([s for s in scores if s <= true], default=-math.inf)
        above = min([s for s in scores if s > true], default=math.inf)
        assert below <= fitted < above
    assert quadratic_weighted_kappa(gold, [label_by_cuts(s, cuts, LABELS) for s in scores]) == pytest.approx(1.0)


def _leaning(gold: list[float]) -> list[list[float]]:
    """A model that always puts most mass on 0 (argmax answers 0 for every row) but whose expected score still rises
    with the gold label: the case cut points exist for."""
    return [[0.7 - 0.2 * g, 0.2 + 0.1 * g, 0.1 + 0.1 * g] for g in gold]


def test_fit_rule_prefers_cut_points_when_the_distribution_ranks_the_rows_but_argmax_does_not():
    gold = [LABELS[i % 3] for i in range(30)]
    rule = fit_rule(_leaning(gold), gold, LABELS)
    assert rule.cv_qwk["argmax"] == 0.0  # one label for every row
    assert rule.kind == "cuts" and rule.cv_qwk["cuts"] > 0.9 and rule.signal
    assert rule.rank_correlation == pytest.approx(1.0)
    assert [rule.apply(p) for p in _leaning(LABELS)] == list(LABELS)


def test_prior_correction_undoes_a_constant_lean():
    """The right label is the most probable once each label is divided by its mean: batch calibration finds it."""
    gold = [LABELS[i % 3] for i in range(30)]
    probs = []
    for g in gold:
        p = [0.2, 0.2, 0.2]
        p[LABELS.index(g)] = 0.3
        lean = [p[0] * 4, p[1], p[2]]
        probs.append([x / sum(lean) for x in lean])
    rule = fit_rule(probs, gold, LABELS)
    assert rule.cv_qwk["argmax"] <= 0.0 < rule.cv_qwk["prior"]
    assert rule.kind in ("prior", "cuts") and rule.signal
    # prior and cut points both order every row right out of fold; on a tie the rule with fewer parameters wins
    assert rule.cv_qwk["prior"] == rule.cv_qwk["cuts"] == pytest.approx(1.0)
    assert rule.kind == "prior" and rule.cuts is None
    assert [rule.apply(p) for p in probs] == gold
    prior_rule = DecisionRule(kind="prior", labels=list(LABELS), prior=[0.5, 0.25, 0.25], fitted_on=30, cv_qwk={},
                              rank_correlation=None, signal=True)
    assert prior_rule.apply([0.45, 0.3, 0.25]) == 0.5  # 0.9 / 1.2 / 1.0 after dividing out the prior


def test_equal_scores_give_every_row_the_most_common_gold_label():
    gold = [0.5, 0.5, 1.0, 0.0, 0.5]
    cuts = fit_cuts([0.3] * 5, gold, LABELS)
    assert [label_by_cuts(0.3, cuts, LABELS)] == [0.5] and cuts == sorted(cuts)


def test_a_rule_read_from_a_file_must_be_able_to_decide():
    with pytest.raises(ValueError, match="needs `prior`"):
        DecisionRule(kind="prior", labels=list(LABELS), fitted_on=3, cv_qwk={}, rank_correlation=None, signal=False)
    with pytest.raises(ValueError, match="needs `cuts`"):
        DecisionRule(kind="cuts", labels=list(LABELS), cuts=[0.7, 0.2], fitted_on=3, cv_qwk={}, rank_correlation=None, signal=False)
    rule = DecisionRule(kind="argmax", labels=list(LABELS), fitted_on=3, cv_qwk={}, rank_correlation=None, signal=False)
    with pytest.raises(ValueError, match="expected 3 label probabilities"):
        rule.apply([0.5, 0.5])


def test_an_uninformative_distribution_has_no_signal():
    gold = [LABELS[i % 3] for i in range(30)]
    rule = fit_rule([[0.5, 0.3, 0.2]] * 30, gold, LABELS)
    assert not rule.signal and all(v <= 0 for v in rule.cv_qwk.values())
    assert "carry no signal" in rule.describe()


# --- reading the distribution -----------------------------------------------------------------------------------------


def _content(pieces: list[tuple[str, list[tuple[str, float]]]]) -> dict:
    return {"content": [{"token": t, "logprob": -0.1, "top_logprobs": [{"token": a, "logprob": math.log(p)} for a, p in top]}
                        for t, top in pieces]}


def test_label_distribution_is_read_where_the_field_value_starts():
    pieces = [("{\n", []), ('  "format_score": ', []), ("1", [("1", 0.9), ("0", 0.1)]), (",\n", []),
              ('  "content_score":', []), (" ", [(" ", 1.0)]), ("2", [("2", 0.5), ("0", 0.2), (" 1", 0.1), ("x", 0.2)]), ("}", [])]
    probs = label_distribution(_content(pieces), "content_score", TOKENS)
    assert probs == pytest.approx([0.2 / 0.8, 0.1 / 0.8, 0.5 / 0.8])  # " 1" counts for label token 1; "x" is no label


def test_a_label_missing_from_the_top_list_gets_the_smallest_listed_probability():
    pieces = [('{"content_score": ', []), ("0", [("0", 0.6), ("2", 0.3), ("x", 0.1)])]
    assert label_distribution(_content(pieces), "content_score", TOKENS) == pytest.approx([0.6 / 1.0, 0.1 / 1.0, 0.3 / 1.0])


def test_a_blank_piece_at_the_value_position_moves_the_read_to_the_next_piece():
    pieces = [('{"content_score":', []), ("  ", [("  ", 1.0)]), ("1", [("1", 0.8), ("2", 0.2)])]
    text = "".join(t for t, _ in pieces)
    assert text == '{"content_score":  1'
    # label 0 is not listed: it gets the smallest listed probability (0.2), an upper bound
    assert label_distribution(_content(pieces), "content_score", TOKENS) == pytest.approx([0.2 / 1.2, 0.8 / 1.2, 0.2 / 1.2])


def test_no_label_among_the_alternatives_reads_nothing():
    """A uniform guess must not pass for a reading: no label token in the top list means no distribution."""
    pieces = [('{"content_score": ', []), ("7", [("7", 0.9), ("x", 0.1)])]
    assert label_distribution(_content(pieces), "content_score", TOKENS) is None


def test_no_distribution_without_logprobs_or_without_the_field():
    assert label_distribution(None, "content_score", TOKENS) is None
    assert label_distribution({"content": []}, "content_score", TOKENS) is None
    assert label_distribution(_content([('{"format_score": ', []), ("1", [("1", 1.0)])]), "content_score", TOKENS) is None


class _Answer(dspy.Module):
    """Stands in for the LM-backed program: a parsed token 0 whose distribution says 2 under the cut points."""

    def forward(self, **_):
        return dspy.Prediction(content_score=0, format_score=1.0,
                               logprobs=_content([('{"content_score": ', []), ("0", [("0", 0.45), ("1", 0.1), ("2", 0.45)])]))


def test_the_trainer_reward_applies_the_prompts_decision_rule():
    """The reward grades through the same build/predict path as eval, so the rule decides there too: argmax of the
    parsed token says 0, the cut points on the expected score (0.5) say 1."""
    rule = DecisionRule(kind="cuts", labels=list(LABELS), cuts=[0.2, 0.4], fitted_on=30, cv_qwk={}, rank_correlation=None, signal=True)
    program = LabelReader(_Answer(), "content_score", TOKENS, rule)
    graded = grader_call(program, GRADER.predict)("patient: hi", "duration: 3 days", "How long?")
    assert graded.content_score == 1.0 and graded.label_probs == pytest.approx([0.45, 0.1, 0.45])
    unruled = grader_call(LabelReader(_Answer(), "content_score", TOKENS, None), GRADER.predict)("c", "t", "q")
    assert unruled.content_score == 0.0  # no rule: the parsed token, mapped back


def test_a_label_token_prompt_shows_demos_and_the_answer_as_tokens():
    base = load_prompt(ROOT / "prompts/grader.yaml")
    prompt = base.model_copy(update={"label_tokens": GRADER.label_tokens(), "demos": [
        {"id": "d1", "context": "c", "target_info": "t", "candidate": "q", "content_score": 0.5, "format_score": 1.0}]})
    program = GRADER.build_program(prompt)
    assert isinstance(program, LabelReader)
    predictor = program.program
    assert predictor.demos[0].content_score == 1
    assert "Write content_score as its label token: 0 for 0, 1 for 0.5, 2 for 1." in predictor.signature.instructions
    assert predictor.config == {"logprobs": True, "top_logprobs": 20}


# --- which rows each piece sees -----------------------------------------------------------------------------------------


def test_threshold_fits_on_train_rows_the_prompt_does_not_show_and_is_chosen_on_val():
    gold = load_goldset(ROOT / "goldsets/grader.csv", GRADER.row_model)
    train, val = gold.split("train"), gold.split("val")
    shown = train[0]
    base = load_prompt(ROOT / "prompts/grader.yaml")
    base = base.model_copy(update={"demos": [GRADER.demo_record(GRADER.to_example(shown, demo=True))]})
    seen: list[tuple[str, set[str]]] = []
    rng = random.Random(0)

    def evaluate(prompt, rows, label):
        seen.append((label, {r.id for r in rows}))
        assert prompt.label_tokens == TOKENS
        return [GRADER.failed("x").model_copy(update={"label_probs": [rng.random() for _ in LABELS]}) for _ in rows]

    baseline = Candidate(strategy="baseline", prompt=base, metric="qwk", val_score=0.0, val_secondary=0.0)
    found = optimize(GRADER, gold, base, "threshold", BUDGETS["light"], 0, None, evaluate, val, baseline)
    fitting = [ids for label, ids in seen if label == "threshold train"]
    assert fitting == [{r.id for r in train} - {shown.id}]
    assert all(ids == {r.id for r in val} for label, ids in seen if label != "threshold train")
    assert [c.strategy for c in found.candidates] == ["baseline", "threshold"]
    rule = found.candidates[1].prompt.decision
    assert rule is not None and rule.fitted_on == len(train) - 1


def test_threshold_is_refused_for_a_component_without_an_ordinal_label(capsys):
    assert main(["run", "--component", "extractor", "--optimizer", "threshold"]) == 2
    assert "has no ordinal label" in capsys.readouterr().err


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
@pytest.mark.parametrize("component", ["grader", "extractor", "stop"])
def test_floors_are_fitted_on_train_only(component, monkeypatch):
    comp = COMPONENTS[component]
    gold = load_goldset(ROOT / "goldsets" / f"{component}.csv", comp.row_model)
    train, val, test = gold.split("train"), gold.split("val"), gold.split("test")
    fitted: list[set[str]] = []
    made = comp.floors

    def floors():
        out = made()
        for floor in out:
            original = floor._fit
            floor._fit = lambda rows, original=original: (fitted.append({r.id for r in rows}), original(rows))[1]
        return out

    monkeypatch.setattr(comp, "floors", floors)
    result = judge_floor(comp, train, {"val": val, "test": test}, [comp.failed("x") for _ in test], subject="the prompt")
    assert fitted and all(ids == {r.id for r in train} for ids in fitted)
    assert all(set(f.fitted_on) == {r.id for r in train} for f in result.floors.values())
    assert set(result.predictions) == {r.id for r in val + test}
    # every prediction failed, so the prompt cannot beat a floor
    assert result.comparison is not None and result.comparison.verdict != "improved" and " beats " not in result.sentence
    assert (result.comparison.verdict, result.comparison.calibrated) == ALL_FAILED[component][:2]
    assert result.sentence.startswith(ALL_FAILED[component][2])


# What the floor says of a prompt whose every prediction failed to parse, on each shipped gold set's test split: the
# verdict, the prompt's score, and how the sentence starts.
ALL_FAILED = {
    "grader": ("no significant change", 0.0, "the prompt does not beat the model-free floor (neighbours: qwk"),
    "extractor": ("no significant change", 0.0, "the prompt is level with the model-free floor (lexical: item_f1"),
    "stop": ("worse", 0.0, "the prompt is below the model-free floor (questions: kappa"),
}


def _comparison(verdict: str, delta: float, n: int = 21) -> PairedComparison:
    return PairedComparison(metric="qwk", n=n, baseline=0.3, calibrated=0.3 + delta, delta=delta,
                            delta_ci=(delta - 0.2, delta + 0.2), verdict=verdict)


@pytest.mark.parametrize(("verdict", "delta", "says", "banner"), [
    ("improved", 0.3, "the prompt beats the model-free floor (similarity: qwk 0.46 [0.05, 0.78] on test), +0.30", False),
    ("worse", -0.3, "the prompt is below the model-free floor (similarity: qwk 0.46 [0.05, 0.78] on test), -0.30", True),
    ("no significant change", -0.1, "the prompt does not beat the model-free floor", True),
    ("no significant change", 0.1, "the prompt is level with the model-free floor", False),
    ("too few examples", -0.4, "too few test rows to compare the prompt with the model-free floor", False),
])
def test_the_floor_sentence_and_banner_follow_the_paired_verdict(verdict, delta, says, banner):
    test = {"qwk": 0.46, "qwk_ci": [0.05, 0.78]}
    sentence = floor_sentence(_comparison(verdict, delta), "similarity", test, "qwk", "the prompt")
    assert sentence.startswith(says)
    assert ("use a stronger --lm" in sentence) == banner
    record = {"floor_comparison": _comparison(verdict, delta).model_dump(), "floor_sentence": sentence}
    assert (floor_banner(record) is not None) == banner
    assert floor_sentence(None, "similarity", None, "qwk", "the prompt") == \
        "the prompt has no test rows to compare with the model-free floor (similarity: qwk – on test)"


class _Vectors:
    """Embeds a text by the digit in it: rows with the same digit are identical, so the nearest is predictable."""

    def __call__(self, texts):
        import numpy as np
        out = np.zeros((len(texts), 10), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, int(next(c for c in t if c.isdigit()))] = 1.0
        return out


class _Echo(dspy.Module):
    def __init__(self):
        super().__init__()
        self.signature = GRADER.signature

    def forward(self, demos, **_):
        return dspy.Prediction(shown=[d["id"] for d in demos])


def test_retrieval_never_shows_a_row_its_own_label_and_still_shows_k():
    pool = [dspy.Example(id=f"r{i}", candidate=f"q{i % 3}", context="c", target_info="t", content_score=0.0).with_inputs("candidate")
            for i in range(5)]
    program = NearestDemos(_Echo(), pool, k=2, keys=["candidate"], vectorizer=_Vectors())
    shown = program(candidate="q1", context="c", target_info="t", exclude_id="r1").shown
    assert "r1" not in shown and len(shown) == 2 and "r4" in shown  # r4 is r1's twin (same digit)
    everyone = NearestDemos(_Echo(), pool, k=9, keys=["candidate"], vectorizer=_Vectors())  # k beyond the pool
    assert sorted(everyone(candidate="q0", context="c", target_info="t", exclude_id="r0").shown) == ["r1", "r2", "r3", "r4"]
    assert "r1" in program(candidate="q1", context="c", target_info="t").shown  # no id given: nothing left out


class _Wire:
    supports_response_schema = True

    def __init__(self, logprobs: bool):
        self.supports_logprobs = logprobs
        self.params = []

    def chat(self, messages, params):
        self.params.append(params)
        return Answer(text='{"content_score": 2, "format_score": 1.0}', prompt_tokens=5, completion_tokens=3,
                      logprobs=[TokenChoice(token='{"content_score": ', logprob=-0.1),
                                TokenChoice(token="2", logprob=-0.2, top=[("2", -0.2), ("1", -1.9), ("0", -3.0)]),
                                TokenChoice(token=', "format_score": 1.0}', logprob=-0.1)] if params.get("logprobs") else None)

    def close(self):
        pass


@pytest.mark.parametrize("supported", [True, False])
def test_the_engine_asks_for_logprobs_caches_them_and_the_reader_gets_them(tmp_path, supported):
    from calibrator.lm.adapter import CompactJSONAdapter

    wire = _Wire(supported)
    cache = CallCache(tmp_path / "calls.sqlite")
    engine = CachingEngine(wire, identity={"backend": "openai", "model": "m"}, cache=cache, meter=UsageMeter(),
                           policy=CallPolicy(preflight=False))
    lm = dspy.LM("calibrator/test", engine=engine, cache=False, num_retries=0, temperature=0.0, max_tokens=64)
    prompt = load_prompt(ROOT / "prompts/grader.yaml").model_copy(update={"label_tokens": GRADER.label_tokens()})
    row = load_goldset(ROOT / "goldsets/grader.csv", GRADER.row_model).rows[0]
    with dspy.context(lm=lm, adapter=CompactJSONAdapter()):
        first = GRADER.predict(GRADER.build_program(prompt), row)
        again = GRADER.predict(GRADER.build_program(prompt), row)
    cache.close()
    assert len(wire.params) == 1  # the second answer, distribution included, came from the cache
    assert first.content_score == again.content_score == 1.0
    if supported:
        assert wire.params[0]["logprobs"] is True and wire.params[0]["top_logprobs"] == 20
        expected = [math.exp(-3.0), math.exp(-1.9), math.exp(-0.2)]
        assert first.label_probs == pytest.approx([p / sum(expected) for p in expected])
        assert again.label_probs == first.label_probs
    else:
        assert "logprobs" not in wire.params[0] and first.label_probs is None and again.label_probs is None


# --- through the real client, against the schema server --------------------------------------------------------------


@pytest.mark.slow
def test_a_run_reports_the_floor_and_the_fitted_rule(tmp_path, stub):
    code = main(["run", "--component", "grader", "--budget", "light", "--no-progress", "--lm", f"openai-compatible:stub@{stub.url}",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "reports"), "--save-prompt", str(tmp_path / "p.yaml")])
    assert code == 0 and stub.logprob_requests > 0
    folder = next(p for p in (tmp_path / "reports").iterdir() if p.is_dir())
    record = json.loads((folder / "run.json").read_text())
    train = set(record["goldset"]["splits"]["train"])
    assert set(record["floors"]) == {"similarity", "neighbours"}
    assert all(set(f["fitted_on"]) == train for f in record["floors"].values())
    assert record["floor"] in record["floors"] and "model-free floor" in record["verdict"] and record["floor"] in record["verdict"]
    strategies = [c["strategy"] for c in record["optimization"]["candidates"]]
    assert strategies == ["baseline", "knn", "threshold", "knn+threshold"]
    assert {t["detail"] for t in record["optimization"]["trials"] if t["kind"] == "train-cv"} == {"argmax", "prior", "cuts"}
    html = (folder / "index.html").read_text()
    assert f"floor: {record['floor']} (chosen on val) · test" in html
    assert "model-free floor" in html[html.index('class="verdict'):]
    header = (folder / "predictions.csv").read_text().splitlines()[0]
    assert "floor" in header.split(",") and "floor_format" in header.split(",")
    assert set(record["optimization"]["threshold_fitted_on"]["knn+threshold"]) == train
    assert "model-free floor" in (tmp_path / "reports" / "index.html").read_text()


@pytest.mark.slow
def test_an_eval_reports_the_floor_and_leaves_train_rows_without_floor_cells(tmp_path, stub):
    assert main(["eval", "--component", "grader", "--no-progress", "--lm", f"openai-compatible:stub@{stub.url}",
                 "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / "reports")]) == 0
    folder = next(p for p in (tmp_path / "reports").iterdir() if p.is_dir())
    record = json.loads((folder / "run.json").read_text())
    assert record["floor"] in record["floors"] and "the prompt" in record["floor_sentence"]
    assert set(record["floors"][record["floor"]]["scores"]) == {"val", "test"}
    import csv
    with open(folder / "predictions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert all((r["floor"] == "") == (r["split"] == "train") for r in rows)


@pytest.mark.slow
def test_without_log_probabilities_the_parsed_label_stands_and_the_run_says_so(tmp_path, stub):
    prompt = load_prompt(ROOT / "prompts/grader.yaml").model_copy(update={"label_tokens": GRADER.label_tokens()})
    path = tmp_path / "tokens.yaml"
    from calibrator.prompt import save_prompt
    save_prompt(prompt, path)
    stub.logprobs = False
    args = ["--no-progress", "--lm", f"openai-compatible:stub@{stub.url}", "--cache-dir", str(tmp_path / "cache"),
            "--out", str(tmp_path / "reports")]
    assert main(["run", "--component", "grader", "--optimizer", "threshold", "--budget", "light",
                 "--save-prompt", str(tmp_path / "p.yaml"), *args]) == 0
    assert main(["eval", "--component", "grader", "--prompt", str(path), *args]) == 0
    records = sorted((json.loads(p.read_text()) for p in (tmp_path / "reports").glob("*/run.json")), key=lambda r: r["kind"])
    evaluated, run = records
    assert [c["strategy"] for c in run["optimization"]["candidates"]] == ["baseline"]
    assert any("gave no token log-probabilities" in n for n in run["optimization"]["notes"])
    assert evaluated["prompt"]["baseline"]["probabilities_read"] == 0
    assert any("its parsed labels were used" in w for w in evaluated["warnings"])


@pytest.mark.slow
def test_a_smoke_threshold_run_fits_a_rule_and_saves_it_only_if_it_won(tmp_path, cli, stub):
    out = cli.calibrator("run", "--component", "grader", "--optimizer", "threshold", "--budget", "smoke", "--no-progress",
                         "--lm", f"openai-compatible:stub@{stub.url}", "--cache-dir", tmp_path / "cache", "--out", tmp_path / "reports",
                         "--save-prompt", tmp_path / "grader.yaml")
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
