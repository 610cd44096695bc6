"""The calibrated judge as a reward, wherever the policy is trained: the terms and their fusion (`terms`), the gate it
must pass (`gate`), the judge it grades with (`judge`), in-process callables for TRL and verl (`functions`), the HTTP
service (`service`) and the log of what it graded (`log`).

`from calibrator.reward import load_reward, compute_score, RewardFunction` is the public path; they are imported on
first use, so `calibrator.reward.gate` stays light for configs that only read its thresholds."""

PUBLIC = {"load_reward": "calibrator.reward.functions", "compute_score": "calibrator.reward.functions",
          "RewardFunction": "calibrator.reward.functions"}
__all__ = sorted(PUBLIC)


def __getattr__(name: str):
    if name in PUBLIC:
        import importlib

        return getattr(importlib.import_module(PUBLIC[name]), name)
    raise AttributeError(f"module 'calibrator.reward' has no attribute {name!r}")
