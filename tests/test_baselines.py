"""The paper's SFT and DPO rows (train/baselines.py): which DPO pairs are built, and both trained for real through TRL
by `python -m train run --method`, resumed as finished, then evaluated by the same eval as GRPO."""

import json

import pytest
import yaml

from calibrator.expert_logs.logs import Message
from calibrator.expert_logs.samples_file import TrainingSample
from support.training import small_samples
from train import baselines
from train.config import CONFIGS, TrainConfig
from calibrator.reward.functions import RewardFunction
from calibrator.reward.terms import STOP_TAG


def _samples() -> list[TrainingSample]:
    ask = TrainingSample(id="a_0", session_id="a", context=[Message(role="user", content="I have a cough.")],
                         future=[Message(role="assistant", content="Okay. How long has it lasted?"),
                                 Message(role="user", content="A week.")], target_info=["duration: a week"], decision="continue")
    stop = TrainingSample(id="b_0", session_id="b", context=[Message(role="user", content="No other medicines.")],
                          future=[Message(role="assistant", content="Take honey and lemon.")], target_info=[], decision="stop")
    return [ask, stop]


def test_a_dpo_pair_prefers_the_experts_move_to_the_lowest_reward_sample_and_drops_prompts_with_none_worse(tmp_path, monkeypatch):
    drawn = {"a_0": ["Do you smoke? Any fever? Any rash?", "How long has it lasted?"],  # 3 questions: format 0; then as good
             "b_0": [STOP_TAG, "<stop /> bye"]}  # the stop sample: one sample as good as the expert, one worse in format
    monkeypatch.setattr("train.evaluate.generate_sampled", lambda model, samples, *a, **k: [drawn[s.id] for s in samples])
    config = TrainConfig(out=tmp_path, stop_share=None, dpo={"steps": 3, "batch_size": 2, "samples_per_prompt": 2})
    reward = RewardFunction(None, "stop", "rule")
    pairs, counts = baselines.dpo_pairs(config, _samples(), tmp_path, "Ask one question.", reward)
    assert counts == {"prompts": 2, "kept": 2, "no_worse_sample": 0, "grader_failed": 0}
    by = {p["id"]: p for p in pairs}
    assert by["a_0"]["chosen"] == [{"role": "assistant", "content": "How long has it lasted?"}]  # the expert's question
    assert by["a_0"]["rejected"][0]["content"] == "Do you smoke? Any fever? Any rash?"
    assert by["b_0"]["chosen"][0]["content"] == STOP_TAG and by["b_0"]["rejected"][0]["content"] == "<stop /> bye"
    assert all(p["rejected_reward"] < p["chosen_reward"] for p in pairs)
    assert by["a_0"]["prompt"][0] == {"role": "system", "content": "Ask one question."}
    drawn["a_0"] = ["How long has it lasted?", "For how long has it lasted?"]  # both as good as the expert
    pairs, counts = baselines.dpo_pairs(config, _samples(), tmp_path, "Ask one question.", reward)
    assert counts == {"prompts": 2, "kept": 1, "no_worse_sample": 1, "grader_failed": 0}
    assert [p["id"] for p in pairs] == ["b_0"] * 3  # its three draws of 6 (3 steps x 2) kept, a_0's left out


def test_dpo_pairs_are_as_many_as_training_reads_at_the_configs_stop_share(tmp_path, monkeypatch):
    seen = []
    worse = {"continue": "Fever? Cough? Rash?", "stop": "<stop /> bye"}  # below the expert's move on format
    monkeypatch.setattr("train.evaluate.generate_sampled", lambda model, samples, *a, **k: seen.append([s.id for s in samples])
                        or [[worse[s.decision]] for s in samples])
    ask, stop = _samples()
    many = [ask.model_copy(update={"id": f"a_{i}", "session_id": f"a{i}"}) for i in range(9)] + [stop]  # 1 stop in 10
    # rebalanced to 9 continue + 9 copies of the stop, one pass of which is 6 steps of 3
    config = TrainConfig(out=tmp_path, stop_share=0.5, dpo={"steps": 6, "batch_size": 3, "samples_per_prompt": 1})
    pairs, counts = baselines.dpo_pairs(config, many, tmp_path, "Ask.", RewardFunction(None, "stop", "rule"))
    assert len(pairs) == 18  # steps x batch
    assert sum(p["chosen"][0]["content"] == STOP_TAG for p in pairs) == 9  # half, as GRPO's rows are
    assert len(seen[0]) == len(set(seen[0])) == counts["prompts"] == 10  # a repeated prompt sampled and graded once


def test_a_resumed_dpo_run_trains_on_its_written_pairs_without_sampling_again(tmp_path, monkeypatch):
    from train.__main__ import _baseline

    written = [{"prompt": [{"role": "user", "content": "hi"}], "chosen": [{"role": "assistant", "content": "Why?"}],
                "rejected": [{"role": "assistant", "content": "no"}], "id": "a_0", "chosen_reward": 4, "rejected_reward": 0}]
    baselines.write_pairs(tmp_path / "dpo_pairs.jsonl", written)
    trained = []
    monkeypatch.setattr(baselines, "dpo_pairs", lambda *a: pytest.fail("the pairs were drawn again"))
    monkeypatch.setattr(baselines, "train_baseline", lambda config, method, rows, start: trained.append(rows) or {"steps": 1})
    _baseline(TrainConfig(out=tmp_path, method="dpo"), [], "Ask.", tmp_path, RewardFunction(None, "stop", "rule"))
    assert trained == [written]


def test_a_grader_failure_leaves_the_prompt_out_instead_of_making_a_preference(tmp_path, monkeypatch):
    from calibrator.components.grader import GraderPrediction

    monkeypatch.setattr("train.evaluate.generate_sampled", lambda model, samples, *a, **k: [["What is it?"] for _ in samples])
    grades = iter([GraderPrediction(content_score=1.0, format_score=1.0), GraderPrediction(error="timeout")])
    reward = RewardFunction(lambda context, target, candidate: next(grades), "default", "rule", concurrency=1)
    config = TrainConfig(out=tmp_path, stop_share=None, dpo={"steps": 1, "batch_size": 1, "samples_per_prompt": 1})
    pairs, counts = baselines.dpo_pairs(config, _samples()[:1], tmp_path, "Ask.", reward)
    assert pairs == [] and counts["grader_failed"] == 1 and counts["no_worse_sample"] == 0


@pytest.mark.slow
def test_sft_and_dpo_train_through_trl_resume_as_finished_and_are_evaluated_like_grpo(tmp_path, cli, tiny_policy):
    """The shipped cpu-smoke config with the session's tiny random-weight policy: TRL's trainers and the eval's path are
    the point, not what the policy learns."""
    config = yaml.safe_load((CONFIGS / "cpu-smoke.yaml").read_text()) | {
        "model": str(tiny_policy), "content": False, "fusion": "stop", "cache_dir": str(tmp_path / "cache"), "eval_rollouts": 0,
        "sft": {"steps": 1, "batch_size": 1}, "dpo": {"steps": 1, "batch_size": 2, "samples_per_prompt": 2},
        "warm_start": {"steps": 1}}  # GRPO's alone: both baselines start from the base model
    config["grpo"] |= {"max_completion_length": 8, "gradient_checkpointing": False}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    samples = small_samples(tmp_path / "samples.jsonl")
    for method in ("sft", "dpo"):
        out = tmp_path / method
        done = cli.train("run", "--config", path, "--samples", samples, "--method", method, "--out", out, "--no-eval")
        assert done.code == 0, done.err
        record = json.loads((out / "run.json").read_text())
        assert (record["method"], record["steps"]) == (method, 1) and (out / "final" / "model.safetensors").is_file()
        assert not (out / "warm_start").exists()
    again = cli.train("run", "--config", path, "--samples", samples, "--method", "dpo", "--out", tmp_path / "dpo", "--no-eval")
    assert again.code == 0 and "training: done already" in again.out
    pairs = [json.loads(line) for line in (tmp_path / "dpo" / "dpo_pairs.jsonl").read_text().splitlines()]
    experts = {"Who is it for?", "How long have you had it?", "Any other medicines?", STOP_TAG}  # small_samples' moves
    assert all(p["rejected_reward"] < p["chosen_reward"] and p["chosen"][0]["content"] in experts for p in pairs)
    assert 1 <= len(pairs) <= 2
    one = tmp_path / "one.jsonl"
    one.write_text(samples.read_text().splitlines()[1] + "\n")
    done = cli.train("eval", "--model", tmp_path / "dpo", "--samples", one, "--rollouts", "0", "--max-new-tokens", "4")
    assert done.code == 0, done.err
    result = json.loads((tmp_path / "dpo" / "eval.json").read_text())
    assert result["method"] == "dpo" and result["note"].startswith("trained by DPO")
    assert result["models"]["trained"] == str(tmp_path / "dpo" / "final")


def test_a_resume_compares_only_the_blocks_its_method_uses(tmp_path):
    from train.__main__ import _changed_since

    (tmp_path / "config.json").write_text(TrainConfig(out=tmp_path, dpo={"steps": 3}).model_dump_json())
    assert _changed_since(TrainConfig(out=tmp_path, method="grpo")) == []  # the DPO block is not GRPO's
    assert _changed_since(TrainConfig(out=tmp_path, method="sft")) == ["method"]
    assert _changed_since(TrainConfig(out=tmp_path, method="dpo")) == ["dpo", "method"]


def test_max_steps_is_refused_for_a_baseline(tmp_path, cli):
    done = cli.train("run", "--method", "dpo", "--max-steps", "3", "--out", tmp_path / "run")
    assert done.code == 2 and "a dpo run takes its steps from the config's dpo.steps" in done.err
    assert not (tmp_path / "run").exists()
