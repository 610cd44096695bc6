"""The reference's evaluation beside ours: k sampled rollouts per sample, seeded and cached, scored under the
reference's metric names ("win" and mean continue content, both also "if correct"), with the paired session
bootstrap; and a sampled eval killed with SIGKILL that resumes from its cache and draws what it would have drawn."""

import json
import signal

import pytest

from calibrator.components.grader import GraderPrediction
from calibrator.prompt import load_prompt
from support import ROOT
from support.cli import Started
from support.training import sample
from train.evaluate import (REFERENCE_NAMES, METRICS, Sampling, compare, describe, cache_slot, generate_sampled, metrics,
                            rollout_samples, rollout_seed, score)

STOP, GOOD, VAGUE = "<stop />", "How long has it lasted?", "Anything else?"


def grade(context: str, target: str, candidate: str) -> GraderPrediction:
    return GraderPrediction(content_score=1.0 if "long" in candidate else 0.5, format_score=1.0)


def scored(samples, completions):
    return score(samples, completions, grade, "default", "rule")


def test_if_correct_counts_only_rollouts_that_decided_right_and_win_counts_a_wrong_decision_as_zero():
    samples = rollout_samples([sample("a", 0, "continue"), sample("b", 0, "continue"), sample("c", 0, "stop")], 2)
    m = metrics(scored(samples, [GOOD, STOP, VAGUE, GOOD, STOP, GOOD]))
    # continue rollouts: GOOD 1, STOP (wrong: content 0), VAGUE 0.5, GOOD 1 -> win 2/4, mean 2.5/4; if correct: the three
    # that asked -> win 2/3, mean 2.5/3
    assert m["good_question_rate"] == 0.5 and m["mean_content"] == pytest.approx(2.5 / 4)
    assert m["good_question_rate_if_correct"] == pytest.approx(2 / 3) and m["mean_content_if_correct"] == pytest.approx(2.5 / 3)
    assert m["termination_accuracy"] == 0.5 and m["continue_accuracy"] == 0.75 and m["decision_accuracy"] == pytest.approx(4 / 6)
    assert set(REFERENCE_NAMES) <= set(METRICS)


def test_rollouts_keep_their_session_and_get_their_own_ids():
    expanded = rollout_samples([sample("a", 0, "continue"), sample("b", 1, "stop")], 3)
    assert [s.id for s in expanded] == ["a_0@0", "a_0@1", "a_0@2", "b_1@0", "b_1@1", "b_1@2"]
    assert [s.session_id for s in expanded] == ["a"] * 3 + ["b"] * 3


def test_if_correct_is_measured_on_each_sides_own_correct_rollouts_in_the_bootstrap():
    """Base decides right on few continue rollouts but asks well on those; trained decides right on all, asks well on
    half. Each side's "if correct" is its own share: base 1.0, trained 0.5, and every replicate agrees in sign."""
    samples = rollout_samples([sample(f"s{i}", 0, "continue") for i in range(20)], 2)
    base = [GOOD if i % 4 == 0 else STOP for i in range(40)]
    trained = [GOOD if i % 2 == 0 else VAGUE for i in range(40)]
    c = {x.name: x for x in compare(samples, scored(samples, base), scored(samples, trained), seed=1, min_n=5)}
    win = c["good_question_rate_if_correct"]
    assert (win.base, win.trained) == (1.0, 0.5) and win.n == 10
    assert win.base_ci == (1.0, 1.0) and win.delta_ci[1] < 0 and win.verdict == "worse"
    assert c["good_question_rate"].delta > 0 and c["continue_accuracy"].verdict == "improved"
    assert describe(win, REFERENCE_NAMES[win.name]).startswith("win continue content if correct: base 1.00")


def test_each_rollout_has_its_own_seed_fixed_by_seed_sample_and_number():
    seeds = {rollout_seed(0, "a#1", r) for r in range(3)} | {rollout_seed(0, "b#1", 0), rollout_seed(1, "a#1", 0)}
    assert len(seeds) == 5
    assert rollout_seed(0, "a#1", 2) == 1488174404  # a literal: the same in every process (str hashes are salted per process)


def eval_folder(tmp_path, model, samples):
    """A finished-run folder `train eval` reads: its config (content off, so no grader), run.json, final/ (`model`)
    and the held-out samples."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "final").symlink_to(model, target_is_directory=True)
    (run / "config.json").write_text(json.dumps({"model": str(model), "content": False, "fusion": "stop",
                                                 "cache_dir": str(tmp_path / "cache"), "out": str(run), "seed": 0}))
    (run / "run.json").write_text("{}")
    (run / "heldout.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in samples))
    return run


def held_out():
    return [sample("a", 0, "continue", context="I have had a dry cough for a week."),
            sample("b", 0, "stop", context="My head hurts since this morning."),
            sample("c", 0, "continue", context="My ankle is swollen after a fall.")]


@pytest.mark.slow
def test_an_eval_killed_with_sigkill_resumes_from_its_greedy_and_sampled_caches(tmp_path, tiny_policy, cli):
    """Killed once two sampled rollouts of the base model are cached (its greedy answers are all cached by then: each
    side is generated greedy, then sampled); a greedy and a sampled line are then marked: the resumed eval scores the marks (nothing cached
    is made again), draws only the missing rollouts, and draws what an uninterrupted run in this process draws: the
    rollouts are reproducible under a seed across processes, and another seed draws others. The policy is the session's
    tiny random-weight model: the caches and the draws are the point, not its answers."""
    samples = held_out()
    run = eval_folder(tmp_path, tiny_policy, samples)
    greedy, cache = run / "eval.base.jsonl", run / "eval.base.sampled.jsonl"
    args = ("eval", "--model", run, "--rollouts", "3", "--max-new-tokens", "12")
    killed = Started("train", *args, logs=tmp_path / "logs").kill_when(
        lambda: cache.is_file() and len(cache.read_text().splitlines()) >= 2, signal.SIGKILL)
    assert killed.code == -signal.SIGKILL
    before = [json.loads(line) for line in cache.read_text().splitlines() if line.endswith("}")]
    assert 2 <= len(before) < 9 and len(greedy.read_text().splitlines()) == 3
    instructions = load_prompt(ROOT / "prompts" / "policy.yaml").instructions
    fresh = generate_sampled(tiny_policy, samples, instructions, 12, Sampling(rollouts=3, seed=0))
    assert [len(r) for r in fresh] == [3, 3, 3] and len({t for r in fresh for t in r}) > 1
    assert generate_sampled(tiny_policy, samples[:1], instructions, 12, Sampling(rollouts=3, seed=7)) != fresh[:1]
    assert [r["completion"] for r in before] == [t for texts in fresh for t in texts][:len(before)]
    marked = [dict(r, completion="MARKED sampled") if i == 0 else r for i, r in enumerate(before)]
    cache.write_text("".join(json.dumps(r) + "\n" for r in marked))
    greedy_lines = [json.loads(line) for line in greedy.read_text().splitlines()]
    greedy.write_text("".join(json.dumps(dict(r, completion="MARKED greedy") if i == 0 else r) + "\n"
                              for i, r in enumerate(greedy_lines)))

    done = cli.train(*args)
    assert done.code == 0, done.err
    after = [json.loads(line) for line in cache.read_text().splitlines()]
    assert len(after) == 9 and after[:len(before)] == marked
    drawn = {r["id"]: r["completion"] for r in after}
    expected = [t for texts in fresh for t in texts]
    assert [drawn[f"{cache_slot(s)}@{r}"] for s in samples for r in range(3)] == ["MARKED sampled", *expected[1:]]
    result = json.loads((run / "eval.json").read_text())
    assert result["scores"]["base"][0]["completion"] == "MARKED greedy"
    sampled = result["sampled"]
    assert sampled["settings"] == {"rollouts": 3, "temperature": 1.0, "top_p": 0.95, "repetition_penalty": 1.2, "seed": 0}
    assert [s["completion"] for s in sampled["scores"]["base"]] == ["MARKED sampled", *expected[1:]]
    assert sampled["base"]["n"] == 9 and sampled["base"]["n_stop"] == 3
    page = (run / "eval.html").read_text()
    assert "<h2>The reference's evaluation</h2>" in page and "<th scope='row'>stop decision accuracy" in page
    assert "stop decision accuracy: base" in done.out and "3 sampled rollouts per sample" in done.out
