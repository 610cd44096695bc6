"""The content judge a reward grades with, opened once: the calibrated grader prompt on its LM, or the model-free floor
its calibration record shows agreeing better with people on val (choose_content_source), fitted again on the same gold
set's train split; plus where the format term comes from (choose_format_source). `train run`, `train eval`, the reward
callables and `calibrator serve` all open their judge here."""

import threading
from collections import OrderedDict
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from calibrator.reward.terms import Grade, floor_call, grader_call

WEAK_LM_NOTE = ("the embedded SmolLM2-135M is a weak judge: its held-out agreement with people is near zero on the shipped "
                "gold set; use --lm with a stronger model for a reward worth training on")


class JudgeCard(BaseModel):
    """What grades, and how well it was measured to agree with people: what `/judge` answers and a log line names."""

    grader_prompt: str
    content_source: dict[str, Any]  # ContentSource: "lm" or a floor's name, with the val figures it was chosen on
    format_source: dict[str, Any]  # FormatSource
    lm: str | None  # the LM that grades content; None when a floor does
    calibration_run: str | None = None
    goldset_path: str | None = None
    goldset_sha256: str | None = None
    heldout: dict[str, Any] | None = None  # the content judge's held-out figures: qwk, qwk_ci, n (the floor's, for a floor)
    decision_rule: dict[str, Any] | None = None  # label-probability thresholds, when the prompt reads them
    reasoning: bool = False
    note: str | None = None


class Remembered:
    """A Grade that answers a case it graded before from memory (bounded, least recently used out): the judge is
    deterministic (temperature 0, a seeded LM, a fitted floor), so this is the LM call cache without the prompt's
    rendering, demo retrieval and lookup. A failed grading is not remembered: it is tried again."""

    def __init__(self, grade: Grade, size: int = 100_000):
        self.grade, self.size = grade, size
        self._seen: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._lock = threading.Lock()

    def __call__(self, context: str, target_info: str, candidate: str):
        key = (context, target_info, candidate)
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return self._seen[key]
        graded = self.grade(context, target_info, candidate)
        if graded.error is None and graded.content_score is not None:
            with self._lock:
                self._seen[key] = graded
                if len(self._seen) > self.size:
                    self._seen.popitem(last=False)
        return graded


@dataclass
class Judge:
    grade: Grade
    card: JudgeCard
    handle: Any = None  # calibrator.lm.LMHandle when an LM grades

    @property
    def concurrency(self) -> int:
        return self.handle.concurrency if self.handle is not None else 1


def format_source_of(grader_prompt: Path):
    """FormatSource chosen on the prompt's val agreement (the rule without a calibration record)."""
    from calibrator.components.grader import choose_format_source
    from calibrator.prompt import load_prompt

    calibration = load_prompt(grader_prompt).calibration
    return choose_format_source(calibration.val if calibration else None)


def open_judge(stack: ExitStack, grader_prompt: Path, lm: str = "local", *, cache_dir: Path = Path(".cache"), seed: int = 0,
               policy: Any = None, judge: str | None = None) -> Judge:
    """Open the judge inside `stack` (an LM backend, when an LM grades, is shut down with it). judge: `lm` or a floor's
    name instead of the one the calibration chose (`train eval --judge`)."""
    import dspy

    from calibrator.components.grader import GRADER, choose_content_source
    from calibrator.lm import LMSpec, default_concurrency, open_lm
    from calibrator.lm.adapter import CompactJSONAdapter
    from calibrator.lm.policy import CallPolicy
    from calibrator.prompt import load_prompt

    prompt = load_prompt(grader_prompt)
    calibration = prompt.calibration
    chosen = choose_content_source(calibration)
    source = judge or chosen.source
    if judge is not None and judge != chosen.source:
        chosen = chosen.model_copy(update={"source": judge, "reason": f"asked for {judge} (the calibration chose {chosen.source})"})
    card = JudgeCard(grader_prompt=str(grader_prompt), content_source=chosen.model_dump(),
                     format_source=format_source_of(grader_prompt).model_dump(), lm=None,
                     calibration_run=calibration.run_id if calibration else None,
                     goldset_path=calibration.goldset_path if calibration else None,
                     goldset_sha256=calibration.goldset_sha256 if calibration else None,
                     decision_rule=prompt.decision.model_dump(mode="json") if prompt.decision else None,
                     reasoning=bool(prompt.reasoning))
    if calibration is not None:
        test = (calibration.floors.get(source) or {}).get("test") if source != "lm" else calibration.test
        card.heldout = {k: (test or {}).get(k) for k in ("qwk", "qwk_ci", "n")}
    if source != "lm":
        from calibrator.gold.goldset import load_goldset

        if calibration is None:
            raise ValueError(f"the model-free judge {source} is fitted on the gold set the grader prompt was calibrated on, "
                             f"and {grader_prompt} has no calibration record")
        floor = next((f for f in GRADER.floors() if f.name == source), None)
        if floor is None:
            raise ValueError(f"unknown judge {source!r}: lm or one of {', '.join(f.name for f in GRADER.floors())}")
        floor.fit(load_goldset(Path(calibration.goldset_path), GRADER.row_model).split("train"))
        return Judge(grade=Remembered(floor_call(floor)), card=card)
    spec = LMSpec.parse(lm)
    policy = policy or CallPolicy(concurrency=default_concurrency(spec))
    handle = stack.enter_context(open_lm(spec, cache_dir=cache_dir, seed=seed, policy=policy))
    adapter = CompactJSONAdapter()
    stack.enter_context(dspy.context(lm=handle.lm, adapter=adapter))
    card.lm = str(spec)
    card.note = WEAK_LM_NOTE if spec.backend == "local" and spec.path is None else None
    program = grader_call(GRADER.build_program(prompt), GRADER.predict)

    def grade(context: str, target_info: str, candidate: str):
        with dspy.context(lm=handle.lm, adapter=adapter):  # from any thread: a server's workers, verl's, TRL's
            return program(context, target_info, candidate)

    return Judge(grade=Remembered(grade), card=card, handle=handle)
