"""Which split a gold row belongs to, and whether the splits are still balanced.

A row's split is a function of its id alone (a hash mapped to [0, 1): under 0.4 train, under 0.7 val,
else test), so adding, relabelling or deleting other rows never moves it, and an adjudicated row that
keeps its id keeps its split. The price is that label counts per split are not exact: they follow
the hash, and `balance` says where they drift from 40/30/30 so a report can warn.

Train has a dev slice, also by a hash of the id: MIPROv2 and GEPA select among their own candidates
on it. Val only chooses among strategies (the baseline included); test only gives the verdict.
"""

import hashlib
from collections import Counter
from collections.abc import Hashable, Sequence
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")
SPLIT_FRACTIONS = {"train": 0.4, "val": 0.3, "test": 0.3}
DEV_FRACTION = 0.25  # of train: the optimizers' own validation slice
MIN_DEV = 3  # a dev slice smaller than this cannot rank candidates; tiny train sets borrow the rows nearest the cut


class Labelled(Protocol):
    id: str

    @property
    def label(self) -> Hashable: ...


L = TypeVar("L", bound=Labelled)


def _unit(text: str) -> float:
    """A uniform number in [0, 1) from a sha256: the same on every machine and Python version."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16) / 16**15


def split_of(row_id: str) -> Split:
    u = _unit("split:" + row_id)
    return "train" if u < SPLIT_FRACTIONS["train"] else "val" if u < SPLIT_FRACTIONS["train"] + SPLIT_FRACTIONS["val"] else "test"


def assign_splits(rows: Sequence[Labelled]) -> dict[str, Split]:
    return {row.id: split_of(row.id) for row in rows}


def dev_ids(train_ids: Sequence[str]) -> set[str]:
    """The dev slice of a train split: ids whose second hash falls under DEV_FRACTION; at least MIN_DEV rows
    (the ones nearest the cut) while train keeps as many rows to learn from, so tiny sets still have one."""
    ranked = sorted(train_ids, key=lambda i: _unit("dev:" + i))
    chosen = {i for i in ranked if _unit("dev:" + i) < DEV_FRACTION}
    if len(chosen) < MIN_DEV:
        chosen = set(ranked[: min(MIN_DEV, len(ranked) // 2)])
    return chosen


class LabelBalance(BaseModel):
    label: str
    total: int
    counts: dict[str, int]  # split -> rows with this label
    expected: dict[str, float]  # split -> total * fraction


class SplitBalance(BaseModel):
    """Label counts per split against 40/30/30, and a warning per label that lacks a split or drifts more than one row."""

    labels: list[LabelBalance]
    warnings: list[str]


def _label_text(label: Hashable) -> str:
    return f"{label:g}" if isinstance(label, float) else str(label)


def balance(rows: Sequence[Labelled], splits: dict[str, Split]) -> SplitBalance:
    by_label: dict[str, Counter] = {}
    for row in rows:
        by_label.setdefault(_label_text(row.label), Counter())[splits[row.id]] += 1
    labels, warnings = [], []
    for label in sorted(by_label):
        counts = {s: by_label[label][s] for s in SPLITS}
        total = sum(counts.values())
        expected = {s: round(total * SPLIT_FRACTIONS[s], 1) for s in SPLITS}
        labels.append(LabelBalance(label=label, total=total, counts=counts, expected=expected))
        missing = [s for s in SPLITS if counts[s] == 0]
        drift = [s for s in SPLITS if abs(counts[s] - total * SPLIT_FRACTIONS[s]) > 1]
        if missing or drift:
            shown = " / ".join(f"{s} {counts[s]}" for s in SPLITS)
            wanted = " / ".join(f"{expected[s]:g}" for s in SPLITS)
            why = f"no {', '.join(missing)} row" if missing else "more than one row off 40/30/30"
            warnings.append(f"label {label}: {shown} (40/30/30 of {total} is {wanted}): {why}; splits follow a hash of "
                            f"each id so they never move; their shares approach 40/30/30 as rows are added")
    return SplitBalance(labels=labels, warnings=warnings)


def sample_rows(rows: Sequence[L], limit: int | None) -> list[L]:
    """A label-stratified, deterministic subset (the smoke budget scores a few rows per split)."""
    if limit is None or len(rows) <= limit:
        return list(rows)
    by_label: dict[object, list[L]] = {}
    for row in rows:
        by_label.setdefault(row.label, []).append(row)
    picked: list[L] = []
    while len(picked) < limit:
        for group in by_label.values():
            if group and len(picked) < limit:
                picked.append(group.pop(0))
    return [r for r in rows if r in picked]
