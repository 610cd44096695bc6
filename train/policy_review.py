"""The judge checked on the policy's own outputs: `train eval --review N` exports a blind, shuffled random sample of the
rollouts the judge graded (base and trained, side hidden) as a grader review sheet; the labelled rows come back into
the grader's gold set through `calibrator goldset add` with ids that say which eval they came from. Every later
`train eval` of the run reads those labels and reports each judge-measured content rate corrected by them
(prediction-powered inference, calibrator/agreement/ppi.py), and the judge's agreement on the policy's outputs beside its
agreement on the seed gold set (drift).

Only rollouts the judge graded are sampled: a wrong decision scores content 0 without asking the judge, so it carries no
judge error. A side's rate over its continue rollouts is the share the judge graded times the rate among those, so the
correction is made on the graded ones and scaled back."""

import hashlib
import random
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from calibrator.expert_logs.logs import render
from calibrator.agreement.metrics import quadratic_weighted_kappa
from calibrator.agreement.ppi import CorrectedRate, corrected_difference, corrected_rate
from calibrator.prompt import write_atomic
from calibrator.reward.watch import label_row, write_label_sheet
from calibrator.expert_logs.samples_file import TrainingSample

SIDES = ("base", "trained")
HIDDEN = ("side", "judge_content_score", "rollout")


class ReviewedRollout(BaseModel):
    """What the export remembers of a row it wrote: which side and rollout it is, and what the judge said."""

    side: str
    rollout: str  # the score's id in eval.json (`<sample id>` greedy, `<sample id>@<r>` sampled)
    judge_content: float
    case: str  # the row's context, target and candidate, as the gold set will hold them (case_key)


class ReviewIndex(BaseModel):
    """`<run>/review.json`: every exported row by gold-set id, and where its rollouts came from."""

    source: str  # "sampled" or "greedy": which of eval.json's score lists the rows were drawn from
    rows: dict[str, ReviewedRollout]


def _judged(score: dict[str, Any]) -> bool:
    terms = score["terms"]
    return score["expert"] == "continue" and score["predicted"] == "continue" and terms["graded"] and not terms["grader_failed"]


def _scores(result: dict[str, Any]) -> tuple[str, dict[str, list[dict[str, Any]]]]:
    if result.get("sampled"):
        return "sampled", result["sampled"]["scores"]
    return "greedy", result["scores"]


def case_key(context: str, target_info: str, candidate: str) -> str:
    """What a labelled row is a label of, however `goldset add` stored it: base and trained often write the same turn, and
    the gold set keeps one row per identical case and label, under the first id."""
    from calibrator.components.grader import GRADER

    row = GRADER.row_model.model_validate({"id": "x", "context": context, "target_info": target_info, "candidate": candidate,
                                           "content_score": 0})
    text = "\x1f".join([row.context, "; ".join(row.target_info), row.candidate])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def row_id(run_dir: Path, side: str, rollout: str) -> str:
    """Stable across exports of the same run, so a rollout exported twice is one gold row; says where it came from."""
    digest = hashlib.sha256(f"{run_dir.resolve()}|{side}|{rollout}".encode()).hexdigest()[:12]
    return f"policy-{digest}"


def export_review(run_dir: Path, result: dict[str, Any], samples: list[TrainingSample], n: int, out: Path,
                  seed: int = 0) -> ReviewIndex:
    """n judged rollouts drawn at random from both sides together, shuffled, written to `out` (.xlsx or .csv) as grader
    gold rows with the label left to the reviewer and the side hidden; the index is merged into run_dir/review.json.
    A rollout that wrote only whitespace is not drawn: a gold row needs a candidate turn (the judge scored it anyway)."""
    source, scores = _scores(result)
    by_id = {s.id: s for s in samples}
    pool = [(side, s) for side in SIDES for s in scores[side] if _judged(s) and s["completion"].strip()]
    rng = random.Random(seed)
    picked = rng.sample(pool, min(n, len(pool)))
    index_path = run_dir / "review.json"
    index = ReviewIndex.model_validate_json(index_path.read_text()) if index_path.is_file() else ReviewIndex(source=source, rows={})
    if index.source != source:
        raise ValueError(f"{index_path} holds rows drawn from the {index.source} rollouts, this eval scored {source} ones: "
                         "export with the same --rollouts setting, or move review.json away to start a new review")
    rows = []
    for side, score in picked:
        sample = by_id[score["id"].split("@")[0]]
        gid = row_id(run_dir, side, score["id"])
        context, target = render(sample.context), "; ".join(sample.target_info)
        index.rows[gid] = ReviewedRollout(side=side, rollout=score["id"], judge_content=score["terms"]["content"],
                                          case=case_key(context, target, score["completion"]))
        rows.append(label_row(gid, context, target, score["completion"], f"policy output of the run in {run_dir.name}, reviewed blind",
                              [side, f"{score['terms']['content']:g}", score["id"]]))
    instructions = [
        "Each row of the `review` sheet is one turn a policy wrote, base or trained (you are not told which), in random order.",
        "Score it by the grader's rubric: put 0, 0.5 or 1 in adjudicated_label (or content_score), and format_score if you wish.",
        "Score every row, or delete the rows you leave: `goldset add` refuses a row without a content_score.",
        f"Columns {', '.join(HIDDEN)} are grouped and hidden so you label blind; expand them only once you have decided.",
        "Then: python -m calibrator goldset add <this file> --component grader   (the grader's gold set)",
        f"and run `python -m train eval --model {run_dir}` again: it reads the labels and corrects its content figures.",
    ]
    write_label_sheet(rows, HIDDEN, instructions, len(pool), out)
    write_atomic(index_path, index.model_dump_json(indent=2))
    return index


class SideCorrection(BaseModel):
    judged_share: float  # continue rollouts the judge graded, of all continue rollouts
    good_question_rate: CorrectedRate  # among the judged ones; scaled by judged_share in `figures`
    mean_content: CorrectedRate


class Correction(BaseModel):
    source: str
    labelled: dict[str, int]
    sides: dict[str, SideCorrection]
    policy_agreement: float | None  # exact agreement of judge and humans on the labelled policy rows
    policy_qwk: float | None
    seed_qwk: float | None  # the judge's held-out qwk on the seed gold set (its calibration record)

    def figures(self) -> dict[str, dict[str, Any]]:
        """Per side and metric: the judge's rate, the corrected one and its interval, over all continue rollouts."""
        out: dict[str, dict[str, Any]] = {}
        for side, c in self.sides.items():
            for metric in ("good_question_rate", "mean_content"):
                r: CorrectedRate = getattr(c, metric)
                k = c.judged_share
                out.setdefault(side, {})[metric] = {"judge": k * r.judge, "corrected": k * r.corrected,
                                                    "ci": [k * r.ci[0], k * r.ci[1]], "labelled": r.n_labelled,
                                                    "enough_labels": r.enough_labels}
        return out

    def differences(self) -> dict[str, dict[str, Any]]:
        """Per metric, trained minus base, both corrected, over all continue rollouts; the verdict is `improved` or
        `worse` only when the interval excludes 0 and each side has enough labels for a normal interval."""
        out: dict[str, dict[str, Any]] = {}
        if set(self.sides) != set(SIDES):
            return out
        base, trained = self.sides["base"], self.sides["trained"]
        for metric in ("good_question_rate", "mean_content"):
            d = corrected_difference(getattr(base, metric), getattr(trained, metric), base.judged_share, trained.judged_share)
            verdict = ("too few labels" if not d.enough_labels else "improved" if d.ci[0] > 0 else "worse" if d.ci[1] < 0
                       else "no significant change")
            out[metric] = {"delta": d.delta, "ci": list(d.ci), "verdict": verdict}
        return out


def correct(run_dir: Path, result: dict[str, Any], labels: dict[str, float], seed_qwk: float | None) -> Correction | None:
    """The judge-measured content rates of `result` corrected by the humans' labels (read_labels: by id, else by
    case) on exported rollouts; None without review.json or without at least 2 labelled rows on each side."""
    index_path = run_dir / "review.json"
    if not index_path.is_file():
        return None
    index = ReviewIndex.model_validate_json(index_path.read_text())
    source, scores = _scores(result)
    if source != index.source:
        return None
    sides: dict[str, SideCorrection] = {}
    labelled: dict[str, int] = {}
    pairs: list[tuple[float, float]] = []
    for side in SIDES:
        continues = [s for s in scores[side] if s["expert"] == "continue"]
        judged = {s["id"]: s["terms"]["content"] for s in continues if _judged(s)}
        reviewed = {r.rollout: labels.get(gid, labels.get(r.case)) for gid, r in index.rows.items()
                    if r.side == side and (gid in labels or r.case in labels) and r.rollout in judged}
        labelled[side] = len(reviewed)
        if len(reviewed) < 2:
            return None
        mine = [(judged[rollout], human) for rollout, human in reviewed.items()]
        pairs += mine
        f_unl = [f for rollout, f in judged.items() if rollout not in reviewed]
        f_lab, y = [f for f, _ in mine], [h for _, h in mine]
        sides[side] = SideCorrection(
            judged_share=len(judged) / len(continues),
            good_question_rate=corrected_rate([float(v == 1.0) for v in f_unl], [float(v == 1.0) for v in f_lab],
                                              [float(v == 1.0) for v in y]),
            mean_content=corrected_rate(f_unl, f_lab, y))
    judge, human = [f for f, _ in pairs], [h for _, h in pairs]
    return Correction(source=source, labelled=labelled, sides=sides,
                      policy_agreement=sum(a == b for a, b in pairs) / len(pairs),
                      policy_qwk=quadratic_weighted_kappa(human, judge, (0.0, 0.5, 1.0)), seed_qwk=seed_qwk)


def describe(c: Correction) -> list[str]:
    lines = []
    for side, metrics in c.figures().items():
        for metric, f in metrics.items():
            flag = "" if f["enough_labels"] else " (under 30 labels: the interval is rough)"
            lines.append(f"{metric} ({c.source}, {side}): judge {f['judge']:.2f}, corrected by {f['labelled']} human labels "
                         f"{f['corrected']:.2f} [{f['ci'][0]:.2f}, {f['ci'][1]:.2f}]{flag}")
    for metric, d in c.differences().items():
        lines.append(f"{metric} ({c.source}), trained - base, both corrected: {d['delta']:+.2f} "
                     f"[{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]: {d['verdict']} (sides' variances added; rollouts taken as independent)")
    seed = "not recorded" if c.seed_qwk is None else f"{c.seed_qwk:.2f}"
    policy = "–" if c.policy_qwk is None else f"{c.policy_qwk:.2f}"
    lines.append(f"judge agreement on the policy's outputs: qwk {policy}, exact {c.policy_agreement:.2f} on "
                 f"{sum(c.labelled.values())} rows; on the seed gold set (held out): qwk {seed}")
    return lines


def read_labels(goldset: Path) -> dict[str, float]:
    """content_score of the gold rows that came from a policy review, by id and by case_key: a row `goldset add` kept
    under its own id answers for its rollout; one it dropped as a duplicate (same case, same label as a row it has)
    is found by its case."""
    from calibrator.components.grader import GRADER
    from calibrator.gold.goldset import read_rows

    if not goldset.is_file():
        return {}
    rows = [r for r, _ in read_rows(goldset, GRADER.row_model) if r.id.startswith("policy-")]
    return {case_key(r.context, "; ".join(r.target_info), r.candidate): r.content_score for r in rows} | {
        r.id: r.content_score for r in rows}

