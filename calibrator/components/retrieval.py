"""Demonstrations retrieved per input: the k pool examples most similar to it, by MiniLM embedding."""

from typing import Any

import dspy


class NearestDemos(dspy.Module):
    """DSPy's KNN retriever in front of a predictor; the nearest demo goes last, where a small model
    leans on it most."""

    def __init__(self, predictor: dspy.Predict, pool: list[dspy.Example], k: int, vectorizer: Any):
        super().__init__()
        self.predictor = predictor
        self.knn = dspy.KNN(k=min(k, len(pool)), trainset=pool, vectorizer=vectorizer)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        demos = list(reversed(self.knn(**inputs)))
        return self.predictor(demos=demos, **inputs)
