"""Demonstrations retrieved per input: the k pool examples most similar to it, by MiniLM embedding."""

from typing import Any

import dspy


def retrieval_text(record: dict[str, Any], keys: list[str] | tuple[str, ...]) -> str:
    """The text embedded for an example, as DSPy's KNN builds it."""
    return " | ".join(f"{k}: {record[k]}" for k in keys)


class NearestDemos(dspy.Module):
    """DSPy's KNN retriever in front of a predictor; the nearest demo goes last, where a small model
    leans on it most. A pool example with the input's own id is never shown (`exclude_id`): scoring a train row
    against a pool built from train must not show the model its own label."""

    def __init__(self, predictor: dspy.Module, pool: list[dspy.Example], k: int, keys: list[str], vectorizer: Any):
        super().__init__()
        self.predictor = predictor  # a Predict, or a ChainOfThought around one
        self.keys = keys
        self.k = min(k, len(pool))
        inner = predictor.predictors()
        self.inputs = list((inner[0] if inner else predictor).signature.input_fields)
        # KNN embeds an example's input fields; similarity is measured on `keys` only. One extra neighbour is
        # fetched so that dropping the input's own row still leaves k.
        keyed = [example.with_inputs(*keys) for example in pool]
        self.knn = dspy.KNN(k=min(k + 1, len(pool)), trainset=keyed, vectorizer=vectorizer)

    def forward(self, exclude_id: str | None = None, **inputs: Any) -> dspy.Prediction:
        nearest = [d for d in self.knn(**{k: inputs[k] for k in self.keys})
                   if exclude_id is None or d.get("id") != exclude_id][: self.k]
        demos = [d.with_inputs(*self.inputs) for d in reversed(nearest)]
        return self.predictor(demos=demos, **inputs)
