"""A judge whose label is read as a distribution: the program writes the label as a label token, the backend is
asked for token log-probabilities, and the prompt's decision rule (if any) turns the distribution into the label."""

from typing import Any

import dspy

from calibrator.components.retrieval import NearestDemos
from calibrator.agreement.decision import DecisionRule, label_distribution


class LabelReader(dspy.Module):
    """Wraps the prompt's program. Returns the label under its real value (token mapped back), the distribution as
    `label_probs` (None when the backend gave no log-probabilities: the parsed label stands), and no raw logprobs."""

    def __init__(self, program: dspy.Module, field: str, tokens: dict[str, float], rule: DecisionRule | None):
        super().__init__()
        self.program = program
        self.field = field
        self.tokens = tokens
        self.rule = rule

    def forward(self, exclude_id: str | None = None, **inputs: Any) -> dspy.Prediction:
        passed = {"exclude_id": exclude_id} if isinstance(self.program, NearestDemos) else {}
        out = self.program(**inputs, **passed)
        probs = label_distribution(out.get("logprobs"), self.field, self.tokens)
        raw = out.get(self.field)
        value = self.tokens.get(str(raw)) if raw is not None else None
        if probs is not None and self.rule is not None:
            value = self.rule.apply(probs)
        fields = {k: out[k] for k in out.keys() if k != "logprobs"}
        return dspy.Prediction(**(fields | {self.field: value, "label_probs": probs}))
