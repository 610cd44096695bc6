"""The LLM components a run can calibrate, by name."""

from calibrator.components.base import Component, Disagreement, Prediction
from calibrator.components.extractor import EXTRACTOR
from calibrator.components.grader import GRADER
from calibrator.components.stop import STOP

COMPONENTS: dict[str, Component] = {c.name: c for c in (GRADER, EXTRACTOR, STOP)}
DEFAULT_COMPONENT = GRADER.name  # what `--component` means when not given

__all__ = ["COMPONENTS", "DEFAULT_COMPONENT", "Component", "Disagreement", "Prediction"]
