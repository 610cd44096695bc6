"""The reward's gate with a run's thresholds and switches, worded for `train run`. Apart from the trainer, so that
checking a grader (and testing it) never imports TRL."""

from typing import Any

from calibrator.reward.gate import TRAIN_WORDING, GatePolicy, check_gate
from train.config import TrainConfig


def gate(config: TrainConfig) -> dict[str, Any]:
    """The gate (calibrator/reward/gate.py) with the run's thresholds and switches, worded for `train run`."""
    policy = GatePolicy(min_qwk=config.min_grader_qwk, min_heldout=config.min_grader_heldout,
                        allow_below_gate=config.allow_below_gate, accept_newer_goldset=config.accept_newer_goldset,
                        allow_uncalibrated=config.allow_uncalibrated, wording=TRAIN_WORDING)
    return check_gate(config.grader_prompt, config.grader_lm, policy, config.target_scope).model_dump()
