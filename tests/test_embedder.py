"""The MiniLM embedder encodes each distinct text once per process: the vectors are the model's own, a text asked for
again is not encoded again, and the memo keeps the most recently used texts up to its size."""

import numpy as np
import pytest

from calibrator import embedder

pytestmark = pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)


def test_a_text_is_encoded_once_and_its_vector_is_the_models(monkeypatch):
    memo = embedder._Memo(100)
    encoded: list[str] = []

    def counted(texts: list[str]) -> np.ndarray:
        encoded.extend(texts)
        return embedder._model().encode(texts, normalize_embeddings=True, show_progress_bar=False, convert_to_numpy=True)

    monkeypatch.setattr(embedder, "_vectors", counted)
    texts = ["Any allergies?", "How long has it lasted?", "Any allergies?"]
    first = memo.encode(texts)
    assert encoded == ["Any allergies?", "How long has it lasted?"]  # the repeat inside one batch too
    direct = embedder._model().encode(texts, normalize_embeddings=True, convert_to_numpy=True)
    assert first.shape == (3, direct.shape[1]) and np.abs(first - direct).max() < 1e-5
    again = memo.encode(["How long has it lasted?", "Is it for you?"])
    assert encoded == ["Any allergies?", "How long has it lasted?", "Is it for you?"]
    assert np.array_equal(again[0], first[1])


def test_the_memo_keeps_the_most_recently_used_texts(monkeypatch):
    memo = embedder._Memo(2)
    encoded: list[str] = []

    def fake(texts: list[str]) -> np.ndarray:  # one distinct vector per text: the eviction logic is what is tested here
        encoded.extend(texts)
        return np.array([[float(len(t)), 1.0] for t in texts])

    monkeypatch.setattr(embedder, "_vectors", fake)
    memo.encode(["a", "bb"])
    memo.encode(["a"])  # "a" is now the most recent: "bb" goes first
    memo.encode(["ccc"])
    assert list(memo.vectors) == ["a", "ccc"]
    memo.encode(["a", "bb"])
    assert encoded == ["a", "bb", "ccc", "bb"]
    assert memo.encode([]).shape[0] == 0


def test_encode_goes_through_the_process_memo(monkeypatch):
    monkeypatch.setattr(embedder, "_memo", embedder._Memo(10))
    vectors = embedder.encode(("a cough", "a cold"))
    assert list(embedder._memo.vectors) == ["a cough", "a cold"]
    assert np.array_equal(vectors, embedder.encode(["a cough", "a cold"]))
