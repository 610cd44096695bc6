"""Item-level agreement for answers made of `field: value` items and a decision: a deterministic matcher, then
precision / recall / F1.

The matcher (no LLM in the metric, so a score means the same thing on every run):
- an item is `field: value`; both parts are normalised: lower case, every punctuation character
  replaced by a space, runs of whitespace collapsed;
- a predicted item matches a gold item when the fields are equal after normalisation and the
  values' token overlap (Dice: 2|A∩B| / (|A| + |B|) over token sets) is at least VALUE_OVERLAP;
- matching is one-to-one, greedy by overlap, so saying the same thing twice earns one match.

Scores are micro-averaged over a split (summed matches over summed items). Precision with no
predicted item, or recall with no gold item, is 0. A parse failure predicts no items and a wrong
decision. `no_invention_rate` is the share of gold-`stop` samples with a parsed answer on which no item
was predicted: an answer that did not parse neither invented nor refrained (the parse-failure rate counts it).
Intervals and the paired verdict resample samples, as the ordinal metrics do.
"""

import re
from collections.abc import Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from calibrator.agreement.metrics import Interval, PairedComparison, percentile_interval, verdict_for

VALUE_OVERLAP = 0.5
DECISIONS = ("continue", "stop")
_PUNCTUATION = re.compile(r"[^\w\s]|_")


def normalise(text: str) -> str:
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def split_item(item: str) -> tuple[str, str]:
    field, _, value = item.partition(":")
    return normalise(field), normalise(value)


def value_overlap(a: str, b: str) -> float:
    x, y = set(a.split()), set(b.split())
    if not x and not y:
        return 1.0
    return 2 * len(x & y) / (len(x) + len(y))


def match_items(gold: Sequence[str], predicted: Sequence[str], threshold: float = VALUE_OVERLAP) -> list[tuple[int, int]]:
    """(gold index, predicted index) pairs, one-to-one, best overlaps first."""
    g, p = [split_item(i) for i in gold], [split_item(i) for i in predicted]
    pairs = []
    for i, (gf, gv) in enumerate(g):
        for j, (pf, pv) in enumerate(p):
            if gf == pf and (overlap := value_overlap(gv, pv)) >= threshold:
                pairs.append((-overlap, i, j))
    used_g, used_p, matched = set(), set(), []
    for _, i, j in sorted(pairs):
        if i not in used_g and j not in used_p:
            used_g.add(i)
            used_p.add(j)
            matched.append((i, j))
    return sorted(matched)


def item_f1(gold: list[str], predicted: list[str]) -> float:
    """Per-sample F1 under the matcher; a stop sample scores 1 only when nothing was invented."""
    if not gold and not predicted:
        return 1.0
    matched = len(match_items(gold, predicted))
    if not matched:
        return 0.0
    precision, recall = matched / len(predicted), matched / len(gold)
    return 2 * precision * recall / (precision + recall)


class FieldCounts(BaseModel):
    gold: int = 0
    predicted: int = 0
    matched: int = 0
    precision: float = 0.0
    recall: float = 0.0


class ItemScores(BaseModel):
    """Item and decision agreement with gold on one split; every rate has a 95% bootstrap interval."""

    model_config = ConfigDict(frozen=True)

    n: int
    n_parsed: int
    n_stop: int
    item_precision: float
    item_recall: float
    item_f1: float
    decision_accuracy: float
    parse_failure_rate: float
    no_invention_rate: float | None
    item_precision_ci: Interval
    item_recall_ci: Interval
    item_f1_ci: Interval
    decision_accuracy_ci: Interval
    parse_failure_rate_ci: Interval
    no_invention_rate_ci: Interval | None
    decision_confusion: list[list[int]]  # gold continue/stop x predicted continue/stop, parsed only
    per_field: dict[str, FieldCounts]


class _Counts:
    """Per-sample counts as arrays, so bootstrap replicates are sums over resampled indices."""

    def __init__(self, gold: Sequence[tuple[Sequence[str], str]], predicted: Sequence[tuple[Sequence[str] | None, str | None]]):
        if len(gold) != len(predicted):
            raise ValueError(f"gold has {len(gold)} samples but predicted has {len(predicted)}")
        if not gold:
            raise ValueError("no samples to score")
        rows = []
        for (g_items, g_dec), (p_items, p_dec) in zip(gold, predicted):
            p_items = p_items or []
            rows.append((len(match_items(g_items, p_items)), len(p_items), len(g_items), p_dec == g_dec,
                         p_dec is not None, g_dec == "stop", len(p_items) == 0))
        matched, pred, gold_n, correct, parsed, stop, empty = (np.array(c, dtype=float) for c in zip(*rows))
        self.columns = {"matched": matched, "pred": pred, "gold": gold_n, "correct": correct, "parsed": parsed,
                        "stop": stop, "parsed_stop": stop * parsed, "clean_stop": stop * parsed * empty}

    def rates(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        s = {k: v[idx].sum(axis=-1) for k, v in self.columns.items()}
        n = idx.shape[-1]
        precision = np.divide(s["matched"], s["pred"], out=np.zeros_like(s["pred"]), where=s["pred"] > 0)
        recall = np.divide(s["matched"], s["gold"], out=np.zeros_like(s["gold"]), where=s["gold"] > 0)
        both = precision + recall
        f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
        clean = np.divide(s["clean_stop"], s["parsed_stop"], out=np.full_like(s["parsed_stop"], np.nan), where=s["parsed_stop"] > 0)
        # (n - parsed) / n, not 1 - parsed / n: exactly 1 in 20 must be 0.05, not a hair over the report's 5% limit
        return {"item_precision": precision, "item_recall": recall, "item_f1": f1, "decision_accuracy": s["correct"] / n,
                "parse_failure_rate": (n - s["parsed"]) / n, "no_invention_rate": clean}


def _resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _per_field(gold: Sequence[Sequence[str]], predicted: Sequence[Sequence[str] | None]) -> dict[str, FieldCounts]:
    fields: dict[str, FieldCounts] = {}
    for g_items, p_items in zip(gold, predicted):
        p_items = p_items or []
        for item in g_items:
            fields.setdefault(split_item(item)[0], FieldCounts()).gold += 1
        for item in p_items:
            fields.setdefault(split_item(item)[0], FieldCounts()).predicted += 1
        for i, _ in match_items(g_items, p_items):
            fields[split_item(g_items[i])[0]].matched += 1
    for c in fields.values():
        c.precision = c.matched / c.predicted if c.predicted else 0.0
        c.recall = c.matched / c.gold if c.gold else 0.0
    return dict(sorted(fields.items()))


def score_items(gold: Sequence[tuple[Sequence[str], str]], predicted: Sequence[tuple[Sequence[str] | None, str | None]],
                *, n_boot: int = 1000, seed: int = 0, confidence: float = 0.95) -> ItemScores:
    """`gold`: (items, decision) per sample; `predicted`: the same, None where the answer did not parse."""
    counts = _Counts(gold, predicted)
    n = len(gold)
    point = {k: float(v) for k, v in counts.rates(np.arange(n)).items()}
    boot = counts.rates(_resample(n, n_boot, seed))
    has_parsed_stop = counts.columns["parsed_stop"].sum() > 0
    confusion = [[sum(1 for (_, g), (_, p) in zip(gold, predicted) if g == gd and p == pd) for pd in DECISIONS] for gd in DECISIONS]

    def ci(name: str) -> Interval:
        values = boot[name][~np.isnan(boot[name])]
        return percentile_interval(values, confidence)

    return ItemScores(
        n=n, n_parsed=int(counts.columns["parsed"].sum()), n_stop=int(counts.columns["stop"].sum()),
        **{k: point[k] for k in ("item_precision", "item_recall", "item_f1", "decision_accuracy", "parse_failure_rate")},
        no_invention_rate=point["no_invention_rate"] if has_parsed_stop else None,
        **{f"{k}_ci": ci(k) for k in ("item_precision", "item_recall", "item_f1", "decision_accuracy", "parse_failure_rate")},
        no_invention_rate_ci=ci("no_invention_rate") if has_parsed_stop else None,
        decision_confusion=confusion,
        per_field=_per_field([g for g, _ in gold], [p for p, _ in predicted]),
    )


def paired_items(gold: Sequence[tuple[Sequence[str], str]], baseline: Sequence[tuple[Sequence[str] | None, str | None]],
                 calibrated: Sequence[tuple[Sequence[str] | None, str | None]], *, metric: str = "item_f1",
                 n_boot: int = 1000, seed: int = 0, confidence: float = 0.95, min_n: int = 10) -> PairedComparison:
    """Calibrated - baseline on the same samples, both resampled with the same indices."""
    base, cal = _Counts(gold, baseline), _Counts(gold, calibrated)
    n = len(gold)
    if metric not in base.rates(np.arange(n)):
        raise ValueError(f"unknown metric {metric!r}")
    idx = _resample(n, n_boot, seed)
    deltas = cal.rates(idx)[metric] - base.rates(idx)[metric]
    delta_ci = percentile_interval(deltas[~np.isnan(deltas)], confidence)
    b, c = float(base.rates(np.arange(n))[metric]), float(cal.rates(np.arange(n))[metric])
    return PairedComparison(metric=metric, n=n, baseline=b, calibrated=c, delta=c - b, delta_ci=delta_ci,
                            verdict=verdict_for(metric, n, delta_ci, min_n), confidence=confidence)
