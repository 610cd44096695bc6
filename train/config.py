"""A training run's settings: one YAML file, the CLI's flags on top. The same code runs the CPU smoke test and
a multi-GPU job; only this file differs. The `grpo` block goes to TRL's GRPOConfig whole (`grpo_config` checks
every key against it and lets TRL/transformers check the values); the `launcher` block is what
`python -m train launch` hands to `accelerate launch`."""

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from calibrator.expert_logs.logs import ContextCut, StopRule, TargetScope
from calibrator.reward.gate import MIN_HELDOUT, MIN_QWK

Fusion = Literal["default", "sum", "content", "stop"]
CONFIGS = Path(__file__).resolve().parent / "configs"
SET_ELSEWHERE = {"output_dir": "the top-level `out`", "seed": "the top-level `seed`"}  # GRPOConfig fields the run fills in


class ConfigError(ValueError):
    pass


class Launcher(BaseModel):
    """How `python -m train launch` starts the run on a cluster: an accelerate config (what `accelerate config`
    would write), saved as <out>/accelerate.yaml and passed to `accelerate launch --config_file`."""

    model_config = ConfigDict(extra="forbid")

    accelerate_config: dict[str, Any]


class WarmStart(BaseModel):
    """A few supervised steps on the experts' own next moves (their question, or `<stop />` at the stop point) before
    GRPO. A policy that never says `<stop />` gives every completion of a stop sample the same reward: no variance in
    the group, no gradient, so GRPO alone cannot teach it to stop (the embedded 135M model said it in 1 of 288
    completions sampled at temperature 1 on MTS-Dialog contexts, under four wordings of the policy prompt)."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    save_steps: int = Field(10, ge=1)  # a checkpoint this often, to resume from
    # Its rows resampled so stops make up this share; None: the experts' own share. At the log's share the stop
    # probability it learns is the log's, so greedy decoding stops only where a stop is likely; at 0.5 `<stop />`
    # (one first token) outweighs every single first word of a question and greedy decoding stops nearly everywhere.
    stop_share: float | None = Field(None, gt=0, lt=1)


class SFTBaseline(BaseModel):
    """`method: sft`: supervised fine-tuning on the experts' moves (their question, or `<stop />`) at the experts' own
    stop share, from the base model: the paper's SFT row."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(60, ge=1)
    learning_rate: float = Field(5e-5, gt=0)
    batch_size: int = Field(8, ge=1)
    save_steps: int = Field(10, ge=1)


class DPOBaseline(BaseModel):
    """`method: dpo`: direct preference optimisation of the expert's move over the lowest-reward of a few answers the
    base model sampled on the same prompt: the paper's DPO row. Its pairs are offline, so unlike GRPO it needs no
    warm start to see `<stop />` preferred where the expert stopped."""

    model_config = ConfigDict(extra="forbid")

    steps: int = Field(60, ge=1)
    learning_rate: float = Field(5e-6, gt=0)
    batch_size: int = Field(8, ge=1)
    save_steps: int = Field(10, ge=1)
    beta: float = Field(0.1, gt=0)  # how far from the starting policy the preference may pull (TRL's default)
    samples_per_prompt: int = Field(2, ge=1)  # answers sampled per prompt to find one worse than the expert's


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = "smollm2"  # the embedded GGUF, converted once; or a Hugging Face model folder
    samples: Path | None = None  # samples.jsonl from `calibrator extract`; else --logs, extracted on the fly
    logs: Path = Path("train/examples/sessions.jsonl")
    extractor_prompt: Path | None = None  # default: prompts/extractor.calibrated.yaml, else the baseline
    grader_prompt: Path = Path("prompts/grader.calibrated.yaml")
    policy_prompt: Path = Path("prompts/policy.yaml")
    lm: str = "local"  # the extractor's LM
    grader_lm: str = "local"
    fusion: Fusion = "default"
    min_grader_qwk: float = MIN_QWK  # the gate: the lower end of the grader's held-out qwk CI must reach this
    min_grader_heldout: int = MIN_HELDOUT  # ... measured on at least this many held-out gold rows
    allow_below_gate: bool = False  # relaxes those two quality checks, never the gold-set and LM checks (recorded)
    accept_newer_goldset: bool = False  # a gold set changed since the calibration is acceptable (recorded)
    allow_uncalibrated: bool = False  # overrides every check, even a missing calibration record (recorded)
    eval_fraction: float = 0.2  # sessions held out for `train eval`
    limit: int | None = Field(None, ge=1)  # read only the first N sessions of --logs
    stop_rule: StopRule = "end"  # where a session's stop point is (calibrator.expert_logs.logs.STOP_RULES)
    # What a continue sample's target is (calibrator.expert_logs.logs.TARGET_SCOPES): the extractor prompt extracts it and the
    # grader prompt grades against it, so both must say the same (the reference's processed samples are `rest`)
    target_scope: TargetScope = "next"
    context_cut: ContextCut = "history"  # the policy's context at each cut (calibrator.expert_logs.logs.CONTEXT_CUTS); --logs only
    context_turns: int | None = Field(None, ge=1)  # the policy sees the last N messages (bounds prompt length and step time)
    stop_share: float | None = Field(None, gt=0, lt=1)  # resample training rows so stop samples make up this share
    content: bool = True  # grade question content (reward and good_question_rate); false: decision and format only
    # Where a continue sample's target comes from (--logs only): the extractor prompt on the LM, or, with no LM, the
    # question the expert asked next as one `asked: ...` item (train.data.question_target), for when no extractor here
    # names targets well (the embedded 135M one does not); the grader's gold set should then carry the same targets
    targets: Literal["extractor", "expert_question"] = "extractor"
    warm_start: WarmStart | None = None
    # What trains the policy: GRPO on the reward (Learn-to-Ask), or one of the paper's baselines (train/baselines.py)
    method: Literal["grpo", "sft", "dpo"] = "grpo"
    sft: SFTBaseline = SFTBaseline()
    dpo: DPOBaseline = DPOBaseline()
    eval_after: bool = True  # `train run` ends with the held-out eval
    # The eval's sampled rollouts per held-out sample, besides greedy decoding: the reference evaluates 3 (temperature
    # 1.0, top_p 0.95, repetition penalty 1.2); 0: greedy only
    eval_rollouts: int = Field(3, ge=0)
    # LM calls at once: extraction, the trainer's reward, `train eval`'s grading; None: the backend's default (calibrator/lm/policy.py)
    concurrency: int | None = Field(None, ge=1)
    seed: int = 0
    out: Path = Path("runs/grpo")
    cache_dir: Path = Path(".cache")
    grpo: dict[str, Any] = {}  # TRL GRPOConfig fields, every one passed on (see grpo_config)
    launcher: Launcher | None = None  # what `python -m train launch` runs

    @model_validator(mode="after")
    def _content_off_needs_a_content_free_reward(self) -> "TrainConfig":
        if not self.content and self.fusion != "stop":
            raise ValueError(f"content: false grades no question, so the reward cannot use content: set fusion: stop "
                             f"(3 R_stop + R_format), not {self.fusion!r}")
        return self

    @model_validator(mode="after")
    def _expert_question_is_a_next_target(self) -> "TrainConfig":
        if self.targets == "expert_question" and self.target_scope != "next":
            raise ValueError("targets: expert_question is the expert's next question, a target_scope: next target; "
                             f"target_scope: {self.target_scope} needs targets: extractor")
        return self

    @field_validator("launcher", mode="before")
    @classmethod
    def _empty_launcher_is_none(cls, value: Any) -> Any:
        return value or None  # `launcher: {}` in configs and run records written before the block had a model


def load_config(path: Path | None, **overrides: Any) -> TrainConfig:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path else {}
    data = (data or {}) | {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig.model_validate(data)


def _unknown_keys(keys: list[str], known: set[str], block: str, owner: str, source: str | Path) -> list[str]:
    """One line per key that `owner` has no field for, with the closest field's name when there is one."""
    problems = []
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            problems.append(f"{source}: {block}: unknown key {key!r} (not a field of {owner})"
                            + (f"; did you mean {close[0]!r}?" if close else ""))
    return problems


def grpo_config(config: TrainConfig, source: str | Path = "the config", *, validate_only: bool = False) -> Any:
    """TRL's GRPOConfig from the `grpo` block, every key of it, plus output_dir=out and seed. A key that is not a
    GRPOConfig field is refused by name with the closest field's name; the values are then checked by TRL and
    transformers as they build it. validate_only builds it on a machine that may lack the config's GPUs: with
    no CUDA device it adds use_cpu=True (transformers refuses bf16 without a GPU otherwise); never to train with."""
    import dataclasses

    from trl import GRPOConfig

    fields = {f.name for f in dataclasses.fields(GRPOConfig) if f.init}
    keys = list(config.grpo)
    problems = [f"{source}: grpo: {key!r} is set by {SET_ELSEWHERE[key]}, not in the grpo block"
                for key in keys if key in SET_ELSEWHERE]
    problems += _unknown_keys([k for k in keys if k not in SET_ELSEWHERE], fields, "grpo", "TRL's GRPOConfig", source)
    if problems:
        raise ConfigError("\n".join(problems))
    grpo = dict(config.grpo)
    if validate_only:
        import torch

        if not torch.cuda.is_available():
            grpo["use_cpu"] = True
    try:
        return GRPOConfig(output_dir=str(config.out), seed=config.seed, **grpo)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: grpo: TRL's GRPOConfig refuses it: {e}") from None


def check_accelerate_config(launcher: Launcher, source: str | Path = "the config") -> bool:
    """The accelerate config's keys and values as `accelerate launch` reads them; False if accelerate is not
    installed here (nothing checked), True if it passed."""
    try:
        from accelerate.commands.config.config_args import ClusterConfig
    except ImportError:
        return False
    try:
        data = ClusterConfig.process_config(dict(launcher.accelerate_config))
    except ValueError as e:
        raise ConfigError(f"{source}: launcher.accelerate_config: {e}") from None
    problems = _unknown_keys(list(data), set(ClusterConfig.__dataclass_fields__), "launcher.accelerate_config",
                             "accelerate's config", source)
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        ClusterConfig(**data)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{source}: launcher.accelerate_config: accelerate refuses it: {e}") from None
    return True


def launch_command(accelerate_yaml: Path, config_path: Path) -> list[str]:
    """What every node runs: accelerate starts one `python -m train run` per device with this config."""
    return ["accelerate", "launch", "--config_file", str(accelerate_yaml), "-m", "train", "run", "--config", str(config_path)]


def accelerate_yaml(launcher: Launcher) -> str:
    return yaml.safe_dump(launcher.accelerate_config, sort_keys=False)
