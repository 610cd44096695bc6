"""A training run's settings: one YAML file, the CLI's flags on top. The same code runs the CPU smoke test and
a multi-GPU job; only this file differs (the `grpo` block goes to TRL's GRPOConfig as it is)."""

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict

Fusion = Literal["default", "sum", "content", "stop"]
CONFIGS = Path(__file__).resolve().parent / "configs"


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
    min_grader_qwk: float = 0.4  # the gate: the lower end of the grader's held-out qwk CI must reach this
    min_grader_heldout: int = 20  # ... measured on at least this many held-out gold rows
    allow_below_gate: bool = False  # relaxes those two quality checks, never the gold-set and LM checks (recorded)
    accept_newer_goldset: bool = False  # a gold set changed since the calibration is acceptable (recorded)
    allow_uncalibrated: bool = False  # overrides every check, even a missing calibration record (recorded)
    eval_fraction: float = 0.2  # sessions held out for `train eval`
    grader_threads: int = 4
    seed: int = 0
    out: Path = Path("runs/grpo")
    cache_dir: Path = Path(".cache")
    grpo: dict[str, Any] = {}  # TRL GRPOConfig fields
    launcher: dict[str, Any] = {}  # how a cluster starts it (accelerate/DeepSpeed); documented, not used on CPU


def load_config(path: Path | None, **overrides: Any) -> TrainConfig:
    data = yaml.safe_load(path.read_text(encoding="utf-8")) if path else {}
    data = (data or {}) | {k: v for k, v in overrides.items() if v is not None}
    return TrainConfig.model_validate(data)
