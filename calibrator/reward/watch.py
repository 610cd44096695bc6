"""The watch on the judge: RL moves the policy's turns away from the gold set the judge was calibrated on, so its
agreement with people is measured again on what it actually graded.

`export_graded_review` draws a stratified random sample of the served log (by the judge's content score and by training
step) into the blind review sheet; people label it; `goldset add SHEET --component grader --goldset POLICY_GOLD` keeps
those rows in a gold set of policy outputs (apart from the seed gold set, whose version the gate checks); `measure_drift`
grades that gold set with the judge and sets its agreement beside the held-out agreement on the seed gold set."""

import hashlib
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from calibrator.reward.log import GradingEntry, read_log
from calibrator.reward.terms import Grade

HIDDEN = ("judge_content_score", "step", "graded_id")
LABEL_COLUMNS = ("id", "context", "target_info", "candidate", "content_score", "format_score", "note", "annotator",
                 "labelled_at", "adjudicated_label", "adjudication_note")
STEP_BANDS = 3  # early, middle and late training, by step (by order served when the caller gave no step)


def _judged(entry: GradingEntry) -> bool:
    """Only gradings the judge made: a wrong decision scores content 0 without asking it, so carries no judge error."""
    t = entry.terms
    return entry.target.decision == "continue" and t.stop == 1.0 and t.graded and not t.grader_failed


def stratified_sample(entries: list[GradingEntry], n: int, seed: int = 0) -> list[GradingEntry]:
    """n entries drawn at random, spread evenly over the strata (content score x step band); a stratum with too few
    gives its share to the others. The order is shuffled."""
    judged = [e for e in entries if _judged(e)]
    order = {e.id: i for i, e in enumerate(judged)}
    keyed = sorted(judged, key=lambda e: (e.step if e.step is not None else -1, order[e.id]))
    strata: dict[tuple[float, int], list[GradingEntry]] = defaultdict(list)
    for rank, e in enumerate(keyed):
        strata[(e.terms.content, rank * STEP_BANDS // max(len(keyed), 1))].append(e)
    rng = random.Random(seed)
    pools = {k: rng.sample(v, len(v)) for k, v in sorted(strata.items())}
    picked: list[GradingEntry] = []
    while len(picked) < n and any(pools.values()):
        for key in sorted(pools):
            if pools[key] and len(picked) < n:
                picked.append(pools[key].pop())
    rng.shuffle(picked)
    return picked


def label_row(row_id: str, context: str, target_info: str, candidate: str, note: str, hidden: list[str]) -> list[str]:
    """One unlabelled grader case in LABEL_COLUMNS order (labels, annotator and adjudication left empty), then the
    values of the hidden columns."""
    return [row_id, context, target_info, candidate, "", "", note, "", "", "", "", *hidden]


def write_label_sheet(rows: list[list[str]], hidden: tuple[str, ...], instructions: list[str], available: int, out: Path) -> None:
    """Grader cases to label blind, as `goldset add` reads them: LABEL_COLUMNS, then `hidden` grouped and hidden (the
    review sheet's writer: .xlsx or .csv, a temporary file renamed into place)."""
    from calibrator.curation.review import Review, write_review

    write_review(Review(header=[*LABEL_COLUMNS, *hidden], hidden=list(hidden), rows=rows, component="grader", disagreements=0,
                        agreements=len(rows), agreements_available=available, splits={}, goldset="", goldset_found=False,
                        relabelled=[], dropped=[], instructions=instructions), out)


def row_id(entry: GradingEntry) -> str:
    return "policy-" + hashlib.sha256(f"served|{entry.id}".encode()).hexdigest()[:12]


class GradedExport(BaseModel):
    written: int
    judged: int  # gradings the judge made, the pool the sample was drawn from
    entries: int  # every grading in the log
    strata: dict[str, int]  # "content 0.5, band 1" -> rows drawn


def export_graded_review(log: Path, n: int, out: Path, seed: int = 0) -> GradedExport:
    entries = list(read_log(log))
    picked = stratified_sample(entries, n, seed)
    rows = [label_row(row_id(e), e.context, "; ".join(e.target.target_info), e.candidate,
                      f"policy output graded by calibrator serve{'' if e.step is None else f' at step {e.step}'}, reviewed blind",
                      [f"{e.terms.content:g}", "" if e.step is None else str(e.step), e.id]) for e in picked]
    instructions = [
        "Each row of the `review` sheet is one turn the policy wrote during training, as the reward service graded it, in random order.",
        "Score it by the grader's rubric: put 0, 0.5 or 1 in adjudicated_label (or content_score), and format_score if you wish.",
        "Score every row, or delete the rows you leave: `goldset add` refuses a row without a content_score.",
        f"Columns {', '.join(HIDDEN)} are grouped and hidden so you label blind; expand them only once you have decided.",
        "Then: python -m calibrator goldset add <this file> --component grader --goldset <the policy-output gold set>",
        "and start `calibrator serve` with --policy-goldset <that gold set>: /health and /judge then show the judge's agreement "
        "on the policy's outputs beside its agreement on the seed gold set.",
    ]
    write_label_sheet(rows, HIDDEN, instructions, sum(map(_judged, entries)), out)
    bands: dict[str, int] = defaultdict(int)
    for e in picked:
        bands[f"content {e.terms.content:g}"] += 1
    return GradedExport(written=len(rows), judged=sum(map(_judged, entries)), entries=len(entries), strata=dict(bands))


class Drift(BaseModel):
    """The judge's agreement with people on the policy's outputs beside its held-out agreement on the seed gold set."""

    policy_goldset: str
    policy_n: int
    policy_qwk: float | None
    policy_qwk_ci: list[float] | None
    policy_exact: float | None
    seed_qwk: float | None
    seed_qwk_ci: list[float] | None
    seed_n: int | None
    min_qwk: float
    below_gate: bool  # the policy-output CI's lower end under min_qwk (or no figure at all): the warning /health gives
    warning: str | None = None


def measure_drift(grade: Grade, policy_goldset: Path, heldout: dict[str, Any] | None, min_qwk: float) -> Drift:
    from calibrator.components.grader import GRADER
    from calibrator.gold.goldset import load_goldset
    from calibrator.agreement.metrics import score_ordinal

    rows = load_goldset(policy_goldset, GRADER.row_model).rows
    predicted = [grade(r.context, r.target_text, r.candidate).content_score for r in rows]
    heldout = heldout or {}
    figures: dict[str, Any] = {"policy_qwk": None, "policy_qwk_ci": None, "policy_exact": None}
    if rows:
        scores = score_ordinal([r.content_score for r in rows], predicted)
        figures = {"policy_qwk": scores.qwk, "policy_qwk_ci": list(scores.qwk_ci) if scores.qwk_ci else None,
                   "policy_exact": scores.accuracy}
    low = (figures["policy_qwk_ci"] or [None])[0]
    below = low is None or low < min_qwk
    seed = heldout.get("qwk")
    warning = None
    if below:
        shown = "no figure" if figures["policy_qwk"] is None else (
            f"qwk {figures['policy_qwk']:.2f} [{figures['policy_qwk_ci'][0]:.2f}, {figures['policy_qwk_ci'][1]:.2f}]")
        warning = (f"the judge's agreement with people on the policy's own outputs is below the gate: {shown} on {len(rows)} "
                   f"labelled rows of {policy_goldset}, lower end under {min_qwk} (held-out on the seed gold set: "
                   f"{'not recorded' if seed is None else f'qwk {seed:.2f}'}); its rewards may not mean what they meant at calibration")
    return Drift(policy_goldset=str(policy_goldset), policy_n=len(rows), seed_qwk=seed, seed_qwk_ci=heldout.get("qwk_ci"),
                 seed_n=heldout.get("n"), min_qwk=min_qwk, below_gate=below, warning=warning, **figures)
