"""The LLM components a run can calibrate, by name."""

from calibrator.components.base import Component, Prediction
from calibrator.components.extractor import EXTRACTOR
from calibrator.components.grader import GRADER

COMPONENTS: dict[str, Component] = {c.name: c for c in (GRADER, EXTRACTOR)}

__all__ = ["COMPONENTS", "Component", "Prediction"]
