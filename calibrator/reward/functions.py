"""The reward in-process, one implementation for every engine: `RewardFunction` scores cases with one judge and one
fusion; called as TRL's `reward_funcs` (completions plus dataset columns as keyword arguments) it is the trainer's
reward, `compute_score` is verl's custom reward function, and `calibrator serve` is a thin HTTP layer over `score`.

    reward = load_reward("prompts/grader.calibrated.yaml", lm="openai:gpt-4o-mini")   # gated as `train run` is
    GRPOTrainer(..., reward_funcs=reward)                                              # TRL

verl: `custom_reward_function.path=<site-packages>/calibrator/reward/functions.py`, `.name=compute_score`, and the
loading options (grader_prompt, lm, fusion, allow_below_gate, ...) under `custom_reward_function.reward_kwargs`.
"""

import atexit
import json
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from calibrator.parallel import map_ordered
from calibrator.reward.gate import CALLABLE_WORDING, MIN_HELDOUT, MIN_QWK, GatePolicy, GateRecord, Wording, check_gate
from calibrator.reward.schema import Case, Graded, Target
from calibrator.reward.terms import Grade, completion_text, decision_of, fuse, score_terms, without_end_tokens

DEFAULT_PROMPT = Path("prompts/grader.calibrated.yaml")


class RewardFunction:
    """Scores cases: (context, target, candidate) -> the terms and the fused reward. A grader failure scores 0 and is
    counted, never raised. `log` (calibrator.reward.log.GradingLog) keeps every grading for the watch on the judge."""

    __name__ = "learn_to_ask"  # TRL names the reward's logged columns after it

    def __init__(self, grade: Grade | None, fusion: str, format_source: str, concurrency: int = 4, log: Any = None,
                 card: Any = None, gate: GateRecord | None = None):
        self.grade, self.fusion, self.format_source, self.concurrency = grade, fusion, format_source, concurrency
        self.log, self.card, self.gate = log, card, gate
        self.seconds = 0.0  # spent scoring, for the trainer's step-time split
        self.failures = 0
        self.last: list = []  # the terms of the latest call, for the trainer's logs
        self._stack: ExitStack | None = None
        self._lock = threading.Lock()

    def score(self, cases: list[Case]) -> list[Graded]:
        started = time.perf_counter()
        terms = map_ordered(lambda c: score_terms(c.candidate, c.target.decision, c.context, "; ".join(c.target.target_info),
                                                  self.grade, self.format_source), cases, concurrency=self.concurrency)
        graded = [Graded(candidate=c.candidate, terms=t, reward=fuse(t, self.fusion)) for c, t in zip(cases, terms)]
        with self._lock:
            self.last = terms
            self.failures += sum(t.grader_failed for t in terms)
            self.seconds += time.perf_counter() - started
        if self.log is not None:
            self.log.write(cases, graded, self.fusion)
        return graded

    def __call__(self, prompts: list, completions: list, context: list[str], target_info: list[str], decision: list[str],
                 log_metric: Callable[[str, float], None] | None = None, trainer_state: Any = None, **_: Any) -> list[float]:
        """TRL's reward function: one float per completion; the dataset's context, target_info and decision columns."""
        texts = [completion_text(c) for c in completions]
        step = getattr(trainer_state, "global_step", None)
        cases = [Case(context=ctx, target=Target(decision=d, target_info=t), candidate=text, step=step)
                 for text, ctx, t, d in zip(texts, context, target_info, decision)]
        graded = self.score(cases)
        if log_metric is not None:
            terms = [g.terms for g in graded]
            for name in ("stop", "content", "format"):
                log_metric(f"reward_terms/{name}", sum(getattr(t, name) for t in terms) / len(terms))
            log_metric("reward_terms/grader_failures", float(sum(t.grader_failed for t in terms)))
            log_metric("completions/stop_share", sum(decision_of(t) == "stop" for t in texts) / len(texts))
        return [g.reward for g in graded]

    def close(self) -> None:
        if self._stack is not None:
            self._stack.close()
            self._stack = None

    def __enter__(self) -> "RewardFunction":
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()


def load_reward(grader_prompt: Path | str = DEFAULT_PROMPT, lm: str = "local", fusion: str = "default", *,
                allow_below_gate: bool = False, accept_newer_goldset: bool = False, allow_uncalibrated: bool = False,
                min_qwk: float = MIN_QWK, min_heldout: int = MIN_HELDOUT, target_scope: str = "next",
                cache_dir: Path | str = ".cache", seed: int = 0, policy: Any = None, log: Any = None,
                wording: Wording = CALLABLE_WORDING) -> RewardFunction:
    """The calibrated judge as a reward, refused (GateError, the trainer's checks and messages) when it fails the gate
    unless told otherwise. Holds the LM backend open until `close()` (or the `with` block) ends."""
    from calibrator.reward.judge import open_judge

    if fusion not in ("default", "sum", "content", "stop"):
        raise ValueError(f"fusion {fusion!r}: one of default, sum, content, stop")
    gate = check_gate(Path(grader_prompt), lm, GatePolicy(min_qwk=min_qwk, min_heldout=min_heldout, allow_below_gate=allow_below_gate,
                      accept_newer_goldset=accept_newer_goldset, allow_uncalibrated=allow_uncalibrated, wording=wording),
                      target_scope)
    stack = ExitStack()
    try:
        judge = open_judge(stack, Path(grader_prompt), lm, cache_dir=Path(cache_dir), seed=seed, policy=policy)
    except BaseException:
        stack.close()
        raise
    reward = RewardFunction(judge.grade, fusion, judge.card.format_source["source"], max(judge.concurrency, 1), log=log,
                            card=judge.card, gate=gate)
    reward._stack = stack
    return reward


_shared: dict[str, RewardFunction] = {}
_shared_lock = threading.Lock()


def _reward_for(options: dict[str, Any]) -> RewardFunction:
    key = json.dumps(options, sort_keys=True, default=str)
    with _shared_lock:
        if key not in _shared:
            _shared[key] = load_reward(**options)
            atexit.register(_shared[key].close)
        return _shared[key]


def parse_target(ground_truth: Any) -> Target:
    """verl's ground_truth: {"decision": ..., "target_info": [...]} as a dict, or that dict as a JSON string."""
    if isinstance(ground_truth, str):
        try:
            ground_truth = json.loads(ground_truth)
        except json.JSONDecodeError as e:
            raise ValueError(f"ground_truth: not JSON ({e.msg}); give {{\"decision\": \"continue\"|\"stop\", "
                             f"\"target_info\": [\"field: value\", ...]}}") from None
    return Target.model_validate(ground_truth)


def compute_score(data_source: str, solution_str: str, ground_truth: Any, extra_info: dict | None = None,
                  **reward_kwargs: Any) -> dict[str, float]:
    """verl's custom reward function, called once per response as its reward managers call it (keyword arguments).
    ground_truth: the target (see parse_target); extra_info["context"]: the dialogue so far (lines or messages);
    reward_kwargs: load_reward's options. Returns {"score": the reward, and each term}: verl logs the extra keys."""
    from calibrator.reward.schema import context_text

    extra_info = extra_info or {}
    context = extra_info.get("context", "")
    case = Case(context=context_text(context) if isinstance(context, (str, list)) else str(context),
                target=parse_target(ground_truth), candidate=without_end_tokens(completion_text(solution_str)),
                step=extra_info.get("step"))
    graded = _reward_for(reward_kwargs).score([case])[0]
    t = graded.terms
    return {"score": graded.reward, "stop": t.stop, "content": t.content, "format": t.format,
            "grader_failed": float(t.grader_failed)}
