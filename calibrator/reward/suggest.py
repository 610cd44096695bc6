"""`calibrator suggest`: which unlabelled grader rows to label next. Labels are expensive, so each row is ranked by what
labelling it would tell about the judge: where the judge and a model-free floor disagree one of them is wrong; where the
floors' own evidence is split (a similarity near a cut, neighbours voting both ways) the label is least predictable;
labels and target fields the gold set holds few rows of are where the verdict's interval is widest.

The ranking chooses rows on purpose, so they are not a random sample: a gold set grown by it over-represents hard rows,
and agreement measured on them is lower than on the rows a policy writes. `bench/suggest_gold.py` measured it on the
shipped gold set: the judge's interval narrows more slowly than with random rows, and its qwk is biased down (README).
The rows are for improving the judge; a figure that describes it needs a random draw."""

import hashlib
import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from calibrator.components.grader import GRADER, GraderRow
from calibrator.gold.goldset import GoldSet

SIGNALS = ("disagreement", "uncertainty", "thin_label", "thin_field")


class Candidate(BaseModel):
    context: str
    target_info: list[str]
    candidate: str
    judge: float | None = None  # the judge's content score, when the source holds one (a served log)
    source: str  # where the row came from: a log entry's id, a sample's id


class Suggestion(BaseModel):
    row: Candidate
    score: float
    signals: dict[str, float]  # each in [0, 1]; the score is their sum
    floor: float  # the similarity floor's label
    neighbours: float  # the neighbour vote's label


def field_of(item: str) -> str:
    return item.split(":", 1)[0].strip().lower()


def from_log(path: Path) -> list[Candidate]:
    """The gradings a served judge made (a wrong decision or a failure graded nothing to learn from)."""
    from calibrator.reward.log import read_log

    return [Candidate(context=e.context, target_info=e.target.target_info, candidate=e.candidate, judge=e.terms.content, source=e.id)
            for e in read_log(path) if e.target.decision == "continue" and e.terms.stop == 1.0 and e.terms.graded
            and not e.terms.grader_failed]


def from_samples(path: Path) -> list[Candidate]:
    """Continue samples of `calibrator extract` (or the reference's shape): the expert's next turn graded against the target."""
    from calibrator.expert_logs.logs import render
    from calibrator.expert_logs.samples_file import read_samples

    out = []
    for s in read_samples(path):
        turn = next((m.content for m in s.future if m.role == "assistant"), None)
        if s.decision == "continue" and s.target_info and turn:
            out.append(Candidate(context=render(s.context), target_info=s.target_info, candidate=turn.strip(), source=s.id))
    return out


def _rows(candidates: list[Candidate]) -> list[GraderRow]:
    return [GraderRow.model_validate({"id": f"c{i}", "context": c.context, "target_info": c.target_info,
                                      "candidate": c.candidate, "content_score": 0}) for i, c in enumerate(candidates)]


def rank(candidates: list[Candidate], gold: GoldSet, seed: int = 0) -> list[Suggestion]:
    """Every candidate scored by the four signals against the gold set's train split, best first (ties at random)."""
    from calibrator.components.floors import target_similarity
    from calibrator.embedder import encode

    train = gold.split("train")
    floors = {f.name: f for f in GRADER.floors()}
    for f in floors.values():
        f.fit(train)
    rows = _rows(candidates)
    similarity = np.array(target_similarity(rows)) if rows else np.array([])
    spread = float(np.std(target_similarity(train))) or 1.0
    cuts = floors["similarity"].cuts
    by_floor = [p.content_score for p in floors["similarity"].predict(rows)] if rows else []
    by_vote = [p.content_score for p in floors["neighbours"].predict(rows)] if rows else []
    vectors = encode([r.candidate for r in rows]) if rows else np.zeros((0, 1))
    train_vectors = encode([r.candidate for r in train])
    k = floors["neighbours"].k
    labels = Counter(r.content_score for r in gold.rows)
    fields = Counter(field_of(item) for r in gold.rows for item in r.target_info)
    most_label, most_field = max(labels.values(), default=1), max(fields.values(), default=1)
    rng = random.Random(seed)
    out = []
    for i, c in enumerate(candidates):
        near = np.argsort(vectors[i] @ train_vectors.T)[-k:]
        votes = Counter(train[j].content_score for j in near)
        distance = min((abs(similarity[i] - cut) for cut in cuts), default=spread) / spread
        judged = c.judge if c.judge is not None else by_vote[i]
        signals = {
            "disagreement": abs(judged - by_floor[i]),
            "uncertainty": 0.5 * max(0.0, 1.0 - distance) + 0.5 * (1.0 - max(votes.values()) / k),
            "thin_label": 1.0 - labels.get(judged, 0) / most_label,
            "thin_field": 1.0 - min(fields.get(field_of(item), 0) for item in c.target_info) / most_field,
        }
        out.append(Suggestion(row=c, score=sum(signals.values()), signals=signals, floor=by_floor[i], neighbours=by_vote[i]))
    keys = {id(s): rng.random() for s in out}
    return sorted(out, key=lambda s: (-s.score, keys[id(s)]))


def suggestion_id(s: Suggestion) -> str:
    text = json.dumps([s.row.context, s.row.target_info, s.row.candidate])
    return "suggest-" + hashlib.sha256(text.encode()).hexdigest()[:12]


HIDDEN = ("why", "judge_content_score", "source")


def write_suggestions(suggestions: list[Suggestion], out: Path, known_cases: set[str], limit: int) -> int:
    """The template sheet `goldset add` reads: the first `limit` suggestions not already in the gold set, labels left empty,
    why each was chosen in hidden columns (the judge's score among them, so the labeller decides blind)."""
    from calibrator.reward.watch import label_row, write_label_sheet

    rows, seen = [], set(known_cases)
    for s in suggestions:
        if len(rows) == limit:
            break
        probe = GraderRow.model_validate({"id": "x", "context": s.row.context, "target_info": s.row.target_info,
                                          "candidate": s.row.candidate, "content_score": 0})
        if probe.case_key() in seen:
            continue
        seen.add(probe.case_key())
        why = ", ".join(f"{k} {v:.2f}" for k, v in s.signals.items())
        rows.append(label_row(suggestion_id(s), s.row.context, "; ".join(s.row.target_info), s.row.candidate,
                              "suggested for labelling", [why, "" if s.row.judge is None else f"{s.row.judge:g}", s.row.source]))
    instructions = [
        "Each row of the `review` sheet is an unlabelled grader case chosen because labelling it tells most about the judge.",
        "Score it by the grader's rubric: put 0, 0.5 or 1 in content_score (or adjudicated_label), and format_score if you wish.",
        "Score every row, or delete the rows you leave: `goldset add` refuses a row without a content_score.",
        f"Columns {', '.join(HIDDEN)} are hidden so you label blind; expand them only once you have decided.",
        "Then: python -m calibrator goldset add <this file> --component grader",
    ]
    write_label_sheet(rows, HIDDEN, instructions, len(suggestions), out)
    return len(rows)
