"""The trainer's pure parts: every reward term and fusion mode, the data split, configs and their validation against
TRL and accelerate, `train launch` (the gate: test_gate.py)."""


import pytest
import yaml

from calibrator.components.grader import GraderPrediction
from train import data
from train.config import CONFIGS, load_config
from calibrator.reward.functions import RewardFunction
from calibrator.reward.terms import STOP_TAG, Terms, decision_of, fuse, score_terms
from support import ROOT
from support.training import copy_config, sample


def grader(content: float | None = 1.0, fmt: float | None = 1.0, error: str | None = None):
    calls = []

    def grade(context: str, target: str, candidate: str) -> GraderPrediction:
        calls.append((context, target, candidate))
        return GraderPrediction(content_score=content, format_score=fmt, error=error)
    return grade, calls


def test_wrong_decision_scores_zero_on_every_term_without_asking_the_grader():
    grade, calls = grader()
    assert score_terms(STOP_TAG, "continue", "patient: hi", "duration: 2 days", grade, "rule") == Terms(stop=0, content=0, format=0)
    assert score_terms("How long?", "stop", "patient: hi", "", grade, "rule") == Terms(stop=0, content=0, format=0)
    assert calls == []


def test_correct_stop_gets_content_one_and_format_only_for_the_exact_tag():
    grade, calls = grader()
    assert score_terms(" <stop /> ", "stop", "c", "", grade, "rule") == Terms(stop=1, content=1, format=1)
    assert score_terms("OK then <stop />", "stop", "c", "", grade, "rule") == Terms(stop=1, content=1, format=0)
    assert calls == []


def test_correct_continue_is_scored_by_the_grader_against_the_target():
    grade, calls = grader(content=0.5, fmt=1.0)
    assert score_terms("How long has it lasted?", "continue", "patient: cough", "duration: 3 days", grade, "lm") == Terms(stop=1, content=0.5, format=1)
    assert calls == [("patient: cough", "duration: 3 days", "How long has it lasted?")]


def test_grader_failure_scores_zero_and_is_flagged():
    grade, _ = grader(content=None, error="TimeoutError: x")
    t = score_terms("How long?", "continue", "c", "duration: x", grade, "rule")
    assert t.grader_failed and fuse(t, "default") == 0.0


@pytest.mark.parametrize("mode, expected", [("default", 1 * (1 + 2 * 0.5) + 1), ("sum", 1 + 0.5 + 1), ("content", 2 * 0.5 + 1), ("stop", 3 * 1 + 1)])
def test_fusion_modes(mode, expected):
    assert fuse(Terms(stop=1, content=0.5, format=1), mode) == expected


def test_default_fusion_spans_zero_to_four():
    assert fuse(Terms(stop=0, content=0, format=0), "default") == 0 and fuse(Terms(stop=1, content=1, format=1), "default") == 4


def test_reward_function_shape_and_terms_logged():
    grade, _ = grader(content=1.0, fmt=0.5)
    reward = RewardFunction(grade, "default", "lm", concurrency=3)
    logged = {}
    out = reward(prompts=[[]] * 3, completions=[[{"role": "assistant", "content": "How long?"}], [{"role": "assistant", "content": "<stop />"}], "Hmm"],
                 context=["patient: a"] * 3, target_info=["duration: 2 days", "", "age group: adult"], decision=["continue", "stop", "stop"],
                 log_metric=lambda k, v: logged.__setitem__(k, v))
    assert out == [1 * (1 + 2) + 0.5, 4.0, 0.0]
    assert logged["reward_terms/stop"] == pytest.approx(2 / 3) and logged["reward_terms/grader_failures"] == 0
    assert decision_of("I'll <STOP />") == "stop"


def test_split_keeps_sessions_whole_is_deterministic_and_drops_unusable_samples():
    samples = [sample(f"s{i}", k, "continue" if k else "stop", ["duration: x"] if k else []) for i in range(40) for k in range(3)]
    samples.append(sample("bad", 0, "continue", []))  # a continue sample the extractor found nothing in
    train, test = data.split(samples, 0.25, seed=0)
    assert {s.session_id for s in train}.isdisjoint({s.session_id for s in test})
    assert 0 < len(test) < len(train) and all(s.session_id != "bad" for s in train + test)
    assert data.split(samples, 0.25, seed=0) == (train, test)
    assert data.usable(samples) == samples[:-1] and data.usable(samples, content=False) == samples  # ungraded: no target needed


def test_rebalance_reaches_the_share_and_the_warm_start_keeps_its_own():
    samples = [sample(f"s{i}", k, "stop" if k == 4 else "continue", ["duration: x"]) for i in range(20) for k in range(5)]
    rows = data.rebalance(samples, 0.5, seed=0)
    assert sum(s.decision == "stop" for s in rows) == sum(s.decision == "continue" for s in rows) == 80
    stops = lambda rows: sum(r["completion"][0]["content"] == STOP_TAG for r in rows)
    natural = data.warm_rows(samples, "Ask.", stop_share=None)
    assert len(natural) == 100 and stops(natural) == 20  # the experts' own share: one stop in five
    half = data.warm_rows(samples, "Ask.", stop_share=0.5)
    assert len(half) == 160 and stops(half) == 80
    some = data.rebalance(samples, 0.3, seed=0)  # 34 stops: each of the 20 once, 14 of them twice
    assert sum(s.decision == "stop" for s in some) == 34 and len(some) == 114
    assert len({s.id for s in some if s.decision == "stop"}) == 20 and data.rebalance(samples, 0.3, seed=0) == some
    mostly_stops = [sample(f"t{i}", 0, "stop" if i % 5 else "continue", []) for i in range(20)]  # 16 stops, 4 continue
    rows = data.rebalance(mostly_stops, 0.5, seed=0)
    assert sum(s.decision == "continue" for s in rows) == 16 and len(rows) == 32


def test_warm_start_args_carry_the_run_seed_and_the_grpo_memory_setting(tmp_path):
    from train.warm_start import sft_args

    base = load_config(CONFIGS / "cpu-learn.yaml")
    config = base.model_copy(update={"seed": 7, "grpo": base.grpo | {"gradient_checkpointing": False}})
    args = sft_args(config, tmp_path)
    assert args.seed == 7 and args.gradient_checkpointing is False and args.max_steps == base.warm_start.steps
    assert args.report_to in ([], "none", ["none"])
    assert sft_args(config.model_copy(update={"grpo": {}}), tmp_path).gradient_checkpointing is True  # TRL's default


def test_policy_prompt_is_the_instructions_then_the_dialogue():
    rows = data.to_rows([sample("s", 1, "continue", ["duration: x", "allergies: none"])], "Ask one question.")
    assert rows[0]["prompt"] == [{"role": "system", "content": "Ask one question."}, {"role": "user", "content": "hi"}]
    assert rows[0]["target_info"] == "duration: x; allergies: none" and rows[0]["context"] == "patient: hi"


def run_cli(argv: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    from train.__main__ import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # main sets these; monkeypatch puts them back
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("name", ["cpu-smoke.yaml", "multi-gpu.yaml"])
def test_shipped_configs_validate_with_every_grpo_key(name, tmp_path, monkeypatch, capsys):
    import torch

    from train.config import grpo_config

    grpo = yaml.safe_load((CONFIGS / name).read_text())["grpo"]  # the file's block, as written
    config = load_config(CONFIGS / name, out=tmp_path / "out")
    args = grpo_config(config, CONFIGS / name, validate_only=True)
    assert config.grpo == grpo
    for key, value in grpo.items():  # nothing stripped or replaced on the way in (use_cpu only without a GPU)
        if key != "use_cpu" or torch.cuda.is_available():
            assert getattr(args, key) == ([] if (key, value) == ("report_to", "none") else value), key  # TRL reads "none" as []
    if grpo.get("use_vllm"):
        assert args.use_vllm and args.bf16 and args.activation_checkpointing and args.vllm_mode == "colocate"
    code, out, err = run_cli(["validate", "--config", str(CONFIGS / name)], monkeypatch, capsys)
    assert code == 0, err
    assert f"ok: {CONFIGS / name}: {len(grpo)} GRPOConfig keys validated" in out


def test_a_grpo_key_typo_is_refused_by_name_with_the_right_one_suggested(tmp_path, monkeypatch, capsys):
    from train.config import ConfigError, grpo_config

    grpo = yaml.safe_load((CONFIGS / "multi-gpu.yaml").read_text())["grpo"]
    grpo["per_device_train_batchsize"] = grpo.pop("per_device_train_batch_size")
    path = copy_config("multi-gpu.yaml", tmp_path, grpo=grpo)
    with pytest.raises(ConfigError, match=r"'per_device_train_batchsize'.*did you mean 'per_device_train_batch_size'"):
        grpo_config(load_config(path), path, validate_only=True)
    code, out, err = run_cli(["validate", "--config", str(path)], monkeypatch, capsys)
    assert code == 2 and not out
    assert str(path) in err and "per_device_train_batchsize" in err and "did you mean 'per_device_train_batch_size'" in err


def test_grpo_values_are_checked_by_trl_and_run_fields_are_not_set_twice(tmp_path):
    from train.config import ConfigError, grpo_config

    bad = load_config(None, out=tmp_path, grpo={"use_cpu": True, "per_device_train_batch_size": 4, "num_generations": 3})
    with pytest.raises(ConfigError, match="num_generations"):
        grpo_config(bad, "bad.yaml")
    with pytest.raises(ConfigError, match="'seed' is set by the top-level `seed`"):
        grpo_config(load_config(None, out=tmp_path, grpo={"seed": 1}), "seed.yaml")


def test_launch_print_writes_the_accelerate_config_and_prints_the_command(tmp_path, monkeypatch, capsys):
    path = copy_config("multi-gpu.yaml", tmp_path)
    code, out, err = run_cli(["launch", "--config", str(path), "--print"], monkeypatch, capsys)
    assert code == 0, err
    written = tmp_path / "out" / "accelerate.yaml"
    assert out.strip() == f"accelerate launch --config_file {written} -m train run --config {path}"
    assert yaml.safe_load(written.read_text()) == load_config(path).launcher.accelerate_config
    assert yaml.safe_load(written.read_text())["deepspeed_config"]["zero_stage"] == 2


def test_launch_refuses_a_config_without_a_launcher_block(tmp_path, monkeypatch, capsys):
    path = copy_config("cpu-smoke.yaml", tmp_path)
    code, out, err = run_cli(["launch", "--config", str(path), "--print"], monkeypatch, capsys)
    assert code == 2 and not out
    assert "has no launcher block" in err and str(path) in err
    assert not (tmp_path / "out").exists()


def test_a_launcher_typo_is_refused(tmp_path, monkeypatch, capsys):
    launcher = yaml.safe_load((CONFIGS / "multi-gpu.yaml").read_text())["launcher"]
    with pytest.raises(ValueError, match="accelerate_confg"):
        load_config(copy_config("multi-gpu.yaml", tmp_path, launcher={"accelerate_confg": launcher["accelerate_config"]}))
    launcher["accelerate_config"]["num_procs"] = launcher["accelerate_config"].pop("num_processes")
    code, out, err = run_cli(["launch", "--config", str(copy_config("multi-gpu.yaml", tmp_path, launcher=launcher)), "--print"],
                             monkeypatch, capsys)
    assert code == 2 and "'num_procs'" in err and "did you mean 'num_processes'" in err


def test_multi_gpu_config_says_how_it_is_launched():
    config = load_config(CONFIGS / "multi-gpu.yaml")
    assert config.launcher.accelerate_config["deepspeed_config"]["zero_stage"] == 2
    assert config.grpo["use_vllm"] and config.grader_lm.startswith("openai-compatible:") and config.concurrency == 64


def test_concurrency_comes_from_the_config_and_the_command_line(tmp_path):
    from train.__main__ import _parser

    assert load_config(CONFIGS / "cpu-smoke.yaml").concurrency is None  # the grader backend's default
    args = _parser().parse_args(["run", "--concurrency", "16"])
    assert load_config(args.config, concurrency=args.concurrency).concurrency == 16
    assert _parser().parse_args(["eval", "--model", "runs/x", "--concurrency", "2"]).concurrency == 2
    with pytest.raises(ValueError, match="concurrency"):
        load_config(None, concurrency=0)
    with pytest.raises(ValueError, match="grader_threads"):
        load_config(None, grader_threads=4)


def test_unknown_config_keys_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("modle: x\n")
    with pytest.raises(ValueError, match="modle"):
        load_config(path)


def test_resume_skips_a_checkpoint_cut_short_by_a_kill(tmp_path):
    from train.checkpoints import last_checkpoint

    assert last_checkpoint(tmp_path) is None
    for step in (2, 4):
        (tmp_path / f"checkpoint-{step}").mkdir()
        (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-6").mkdir()  # the kill came while this one was being written
    assert last_checkpoint(tmp_path) == tmp_path / "checkpoint-4"
    assert not (tmp_path / "checkpoint-6").exists()


@pytest.mark.parametrize("argv", [["--limit", "3"], ["--logs", "x.csv", "--limit", "0"]])
def test_eval_limit_needs_logs_and_a_positive_count(argv, tmp_path, capsys):
    from train.__main__ import main

    assert main(["eval", "--model", str(tmp_path), *argv]) == 2
    assert "--limit takes a positive number of sessions" in capsys.readouterr().err


def _samples_with_manifest(tmp_path, stop_rule: str | None):
    from calibrator.expert_logs.shards import Manifest, manifest_path

    samples = tmp_path / "samples.jsonl"
    samples.write_text("")
    if stop_rule:
        manifest_path(samples).write_text(Manifest(logs="l.csv", logs_sha256="0", shard=None, limit=None, sessions_file=None, sessions=1,
                                                   samples=0, prompt_sha256="0", lm="local", stop_rule=stop_rule).model_dump_json())
    return samples


def test_a_samples_file_cut_at_another_stop_rule_is_refused_before_anything_runs(tmp_path, capsys):
    from train.__main__ import main

    samples = _samples_with_manifest(tmp_path, "end")
    config = tmp_path / "c.yaml"
    config.write_text(f"stop_rule: advice\ncontent: false\nfusion: stop\nout: {tmp_path / 'out'}\ngrpo:\n  use_cpu: true\n  bf16: false\n")
    assert main(["run", "--config", str(config), "--samples", str(samples)]) == 2
    err = capsys.readouterr().err
    assert "cut at stop rule 'end'" in err and "stop_rule: advice" in err and "--stop-rule advice" in err
    assert not (tmp_path / "out").exists()


def test_a_samples_file_notes_what_the_log_options_do_not_do(tmp_path):
    from train import data
    from train.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text("stop_rule: advice\nlimit: 40\ncontent: false\nfusion: stop\n")
    same = load_config(config, samples=_samples_with_manifest(tmp_path, "advice"))
    assert data.samples_file_notes(same) == [f"limit 40 reads the first sessions of --logs; it does not cut --samples {same.samples}"]
    bare = tmp_path / "bare"
    bare.mkdir()
    unknown = data.samples_file_notes(load_config(config, samples=_samples_with_manifest(bare, None)))
    assert len(unknown) == 2 and "no manifest" in unknown[0] and "stop rule it was cut at is unknown" in unknown[0]


def test_expert_question_targets_are_the_experts_next_question_and_need_no_lm(tmp_path):
    """`targets: expert_question` on a corpus: each continue sample's target is the question the doctor asked next, a
    stop has none, and no LM is opened (the config's LM points at a port nothing listens on)."""
    from pydantic import ValidationError

    fixture = ROOT / "tests/fixtures/corpora/mts-dialog.csv"
    config = load_config(None, logs=fixture, content=True, targets="expert_question", lm="openai-compatible:m@http://127.0.0.1:9")
    samples = data.samples_from_logs(config, tmp_path / "samples.jsonl")
    by_id = {s.id: s for s in samples}
    assert by_id["0_0"].target_info == ["asked: Does it hurt on the stairs?"]
    assert by_id["1_0"].target_info == ["asked: How much, and how often?"]
    assert data.question_target(sample("s", 0, "stop")) == []  # a stop has nothing left to ask
    stops = [s for s in samples if s.decision == "stop"]
    assert all(s.target_info == [] for s in stops)
    no_content = load_config(None, logs=fixture, content=False, fusion="stop", targets="expert_question")
    assert all(s.target_info == [] for s in data.samples_from_logs(no_content, tmp_path / "none.jsonl"))
    with pytest.raises(ValidationError, match="targets: expert_question is the expert's next question"):
        load_config(None, targets="expert_question", target_scope="rest")
