"""Model-free floors: reference predictors fitted on train with no LM call, scored beside every prompt.

A judge that cannot beat a few lines of embedding arithmetic is below any useful floor, whatever its prompt; these
make that visible in every run. Each floor is fitted on the rows it is given (the run gives it the train split only)
and records their ids, so a test can prove it never saw val or test.
"""

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from calibrator.components.base import Floor, Prediction, nearest, neighbour_votes
from calibrator.agreement.decision import fit_cuts, label_by_cuts
from calibrator.gold.goldset import GoldRow
from calibrator.agreement.items import normalise
from calibrator.agreement.metrics import quadratic_weighted_kappa

NEIGHBOUR_KS = (1, 3, 5, 7)


def _encode(texts: list[str]) -> np.ndarray:
    from calibrator.embedder import encode

    return encode(texts)


def target_similarity(rows: list[GoldRow]) -> list[float]:
    """Cosine similarity (MiniLM) of each row's target info and its candidate."""
    targets = _encode([r.target_text for r in rows])
    candidates = _encode([r.candidate for r in rows])
    return (targets * candidates).sum(axis=1).tolist()


class ScoreCuts(Floor):
    """An ordinal judge from one model-free number per row, with cut points fitted on train to maximise qwk (for two labels,
    Cohen's kappa): e.g. "does the question talk about what the expert asked?" without reading it."""

    def __init__(self, name: str, what: str, score: Callable[[list[GoldRow]], list[float]], make: Callable[[GoldRow, float], Prediction],
                 labels: tuple[float, ...], label_value: Callable[[Any], float] = float) -> None:
        super().__init__()
        self.name, self.what, self.score, self.make, self.labels, self.label_value = name, what, score, make, labels, label_value
        self.cuts: list[float] = []

    def _fit(self, rows: list[GoldRow]) -> None:
        self.cuts = fit_cuts(self.score(rows), [self.label_value(r.label) for r in rows], self.labels)

    def predict(self, rows: list[GoldRow]) -> list[Prediction]:
        return [self.make(row, label_by_cuts(float(s), self.cuts, self.labels)) for row, s in zip(rows, self.score(rows))]

    def describe(self) -> str:
        return f"{self.what}, cut at {', '.join(f'{c:.3f}' for c in self.cuts)} (fitted on train; above a cut, the next label)"


class NeighbourVote(Floor):
    """The similarity-weighted label vote of the k train rows whose text (`on`) is nearest (MiniLM); k chosen by
    leave-one-out agreement (qwk; Cohen's kappa for two labels) on train."""

    name = "neighbours"

    def __init__(self, make: Callable[[GoldRow, float], Prediction], labels: tuple[float, ...], *,
                 text: Callable[[GoldRow], str], on: str, label_value: Callable[[Any], float] = float) -> None:
        super().__init__()
        self.make, self.labels, self.text, self.on, self.label_value, self.k = make, labels, text, on, label_value, 1
        self.vectors: np.ndarray | None = None
        self.gold: list[float] = []

    def _vote(self, similarity: np.ndarray, k: int) -> list[float]:
        return neighbour_votes(self.gold, nearest(similarity, k))

    def _fit(self, rows: list[GoldRow]) -> None:
        self.vectors = _encode([self.text(r) for r in rows])
        self.gold = [self.label_value(r.label) for r in rows]
        similarity = self.vectors @ self.vectors.T
        np.fill_diagonal(similarity, -np.inf)
        ks = [k for k in NEIGHBOUR_KS if k < len(rows)] or [1]
        self.k = max(ks, key=lambda k: (quadratic_weighted_kappa(self.gold, self._vote(similarity, k), self.labels), -k))

    def predict(self, rows: list[GoldRow]) -> list[Prediction]:
        similarity = _encode([self.text(r) for r in rows]) @ self.vectors.T
        return [self.make(row, vote) for row, vote in zip(rows, self._vote(similarity, self.k))]

    def describe(self) -> str:
        return (f"similarity-weighted label vote of the {self.k} train rows with the nearest {self.on} (MiniLM; k by leave-one-out "
                f"on train)")


_WORD = re.compile(r"[a-z][a-z']{2,}")
_COMMON = frozenset("the and you your for are have has had any that this what how with about been was were can did does "
                    "just get got it's i'm you're okay right well there then them they".split())


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _COMMON}


class LexicalFields(Floor):
    """An extractor without an LM: decision `stop` when no patient line follows the expert's run, else `continue`; items
    are the vocabulary fields whose cue words (learned on train: words of the expert's run that came with that field in at
    least half the train rows they appear in, and at least twice) occur in the run, valued with the first clause of the patient's reply."""

    name = "lexical"
    MAX_ITEMS = 2
    VALUE_CHARS = 60

    def __init__(self, make: Any) -> None:
        super().__init__()
        self.make = make
        self.cues: dict[str, dict[str, float]] = {}  # word -> field -> precision

    @staticmethod
    def run_and_reply(future: str) -> tuple[str, str | None]:
        """The expert's run (the pharmacist lines a future starts with) and the patient's reply after it, if any."""
        run, reply = [], None
        for line in future.split("\n"):
            speaker, _, text = line.partition(":")
            if speaker.strip().lower() == "patient":
                reply = text.strip()
                break
            run.append(text)
        return " ".join(run), reply

    def _fit(self, rows: list[GoldRow]) -> None:
        with_field: Counter[tuple[str, str]] = Counter()
        seen: Counter[str] = Counter()
        for row in rows:
            words = _words(self.run_and_reply(row.future)[0])
            fields = {normalise(i.partition(":")[0]) for i in row.target_info}
            seen.update(words)
            with_field.update((w, f) for w in words for f in fields)
        self.cues = {}
        for (word, field), count in with_field.items():
            if count >= 2 and count / seen[word] >= 0.5:
                self.cues.setdefault(word, {})[field] = count / seen[word]

    def predict(self, rows: list[GoldRow]) -> list[Prediction]:
        out = []
        for row in rows:
            run, reply = self.run_and_reply(row.future)
            if reply is None:
                out.append(self.make(row, "stop", []))
                continue
            score: dict[str, float] = {}
            for word in _words(run):
                for field, precision in self.cues.get(word, {}).items():
                    score[field] = max(score.get(field, 0.0), precision)
            fields = sorted(score, key=lambda f: (-score[f], f))[: self.MAX_ITEMS]
            value = " ".join(re.split(r"(?<=[.!?,])\s", reply.strip())[0].split())[: self.VALUE_CHARS]
            out.append(self.make(row, "continue", [f"{f}: {value}" for f in fields]))
        return out

    def describe(self) -> str:
        return (f"no LM: stop when no patient line follows the expert's run; fields whose cue words ({len(self.cues)} learned on "
                f"train) occur in the run, valued with the first clause of the patient's reply")
