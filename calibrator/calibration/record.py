"""What a run or an eval leaves behind, as run.json holds it: the record `runs` writes and `report` reads.

Kept apart from `runs` so the report (and anything else reading a run folder) depends on the record, not on the code
that makes it.
"""

from datetime import datetime
from typing import Any, Literal, Union

from pydantic import BaseModel

from calibrator.components import COMPONENTS
from calibrator.calibration.floor import FloorRecord
from calibrator.gold.goldset import GoldSetChanges
from calibrator.lm import Usage
from calibrator.agreement.metrics import PairedComparison
from calibrator.gold.splits import SplitBalance

SplitScores = Union[tuple(c.scores_model for c in COMPONENTS.values())]  # noqa: UP007 (a union built from the registry)


class GoldSetInfo(BaseModel):
    path: str
    sha256: str
    n: dict[str, int]
    evaluated: dict[str, int]
    annotators: list[str] = []
    human_qwk: float | None = None  # mean pairwise agreement of the annotator columns: the ceiling for any prompt
    human_n: int | None = None
    splits: dict[str, list[str]] = {}  # every split's ids (dev: the optimizers' slice of train), to prove what was held out
    balance: SplitBalance | None = None


class PromptInfo(BaseModel):
    path: str | None
    instructions: str
    demos: list[dict[str, Any]] = []
    retrieval_k: int | None = None
    retrieval_pool: int | None = None
    label_tokens: dict[str, float] | None = None  # the label read as a distribution over these tokens
    decision: dict[str, Any] | None = None  # the fitted decision rule (calibrator.agreement.decision.DecisionRule)
    decision_text: str | None = None
    probabilities_read: int | None = None  # of the rows it scored, how many came with a label distribution


class RunRecord(BaseModel):
    run_id: str
    kind: Literal["run", "eval"]
    command: str
    created: datetime
    component: str
    lm: str
    optimizer: str | None
    budget: str | None
    seed: int
    goldset: GoldSetInfo
    baseline: dict[str, SplitScores]
    calibrated: dict[str, SplitScores] | None = None
    comparison: PairedComparison | None = None
    verdict: str
    floors: dict[str, FloorRecord] = {}  # model-free reference predictors, fitted on train, scored on val and test
    floor: str | None = None  # the floor chosen on val; the verdict compares the judged prompt with it on test
    floor_comparison: PairedComparison | None = None  # judged prompt - floor on test
    floor_sentence: str | None = None
    warnings: list[str] = []  # shown as banners: split balance, a prompt calibrated on another gold-set version
    excluded: list[str] = []  # eval: rows left out because the prompt carries them as demonstrations or retrieval pool
    goldset_changes: GoldSetChanges | None = None  # eval: rows changed since the prompt was calibrated
    saved_prompt: str | None = None  # run: where the calibrated prompt was written, if it was
    optimization: dict[str, Any] | None = None
    usage: Usage
    cost_usd: float | None = None  # None: the LM has no price in the table (see calibrator/lm/prices.py)
    wall_seconds: float
    prompt: dict[str, PromptInfo]
    versions: dict[str, str]


def judged_side(record: dict[str, Any]) -> str:
    """Which prediction set a run is judged by: the calibrated prompt's after a `run`, the scored prompt's after an `eval`."""
    return "calibrated" if record.get("calibrated") else "baseline"
