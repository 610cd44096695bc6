"""`python -m train eval`: the base and the trained policy on held-out samples, scored with the same reward.

Greedy decoding, one completion per sample, cached per model so a killed eval resumes. good_question_rate is the
share of continue samples whose question the grader scores content 1; termination_accuracy the share of stop samples
answered `<stop />`. Those depend on where greedy decoding puts the line between asking and stopping; whether the policy
knows *which* contexts are stops does not: stop_discrimination is the ROC AUC of its probability of beginning the
answer with `<stop` (teacher-forced, one forward pass; decision_of also reads `<stop` later in an answer, so this is a
lower bound on P(stop)), stop samples against continue samples (0.5: no idea where the expert stopped; 1: every stop
sample above every continue sample). Intervals come from a bootstrap over held-out sessions, paired between base and
trained: samples of one dialogue are correlated, so resampling them one by one would claim more certainty than the
sessions give.
"""

import hashlib
import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field, computed_field

from calibrator.expert_logs.samples_file import TrainingSample
from calibrator.components.grader import FormatSourceName
from calibrator.expert_logs.logs import Decision, render
from calibrator.agreement.metrics import Interval, Verdict, percentile_interval, verdict_for
from calibrator.parallel import Progress, map_ordered
from calibrator.prompt import Calibration, write_atomic
from train.data import policy_messages
from calibrator.reward.terms import STOP_PREFIX, Grade, Terms, decision_of, fuse, score_terms


class Completion(BaseModel):
    """The policy's answer to one sample, and (greedy decoding) the probability it gives to beginning with `<stop`."""

    text: str
    p_stop: float | None = Field(None, ge=0.0, le=1.0)


class Sampling(BaseModel):
    """The reference's evaluation decoding: `rollouts` sampled answers per sample (temperature 1.0, top_p 0.95,
    repetition penalty 1.2), each seeded by (seed, sample, rollout) so a re-run draws the same answers."""

    rollouts: int = Field(3, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    repetition_penalty: float = Field(1.2, gt=0)
    seed: int = 0

    def describe(self) -> str:
        return (f"{self.rollouts} sampled rollouts per sample (temperature {self.temperature}, top_p {self.top_p}, "
                f"repetition penalty {self.repetition_penalty}, seed {self.seed})")


class SampleScore(BaseModel):
    id: str
    session_id: str
    expert: Decision
    completion: str
    predicted: Decision
    terms: Terms
    reward: float
    p_stop: float | None = None  # None: not measured (scores made without the policy's probabilities)


# metric -> (the expert decision it is measured on, None: every sample; its per-sample value, None: not counted)
METRICS: dict[str, tuple[Decision | None, Callable[[SampleScore], float | None]]] = {
    "good_question_rate": ("continue", lambda s: float(s.terms.content == 1.0) if s.terms.graded else None),
    "mean_content": ("continue", lambda s: s.terms.content if s.terms.graded else None),
    "good_question_rate_if_correct": ("continue", lambda s: float(s.terms.content == 1.0)
                                      if s.terms.graded and s.predicted == "continue" else None),
    "mean_content_if_correct": ("continue", lambda s: s.terms.content if s.terms.graded and s.predicted == "continue"
                                else None),
    "termination_accuracy": ("stop", lambda s: float(s.predicted == "stop")),
    "continue_accuracy": ("continue", lambda s: float(s.predicted == "continue")),
    "decision_accuracy": (None, lambda s: float(s.predicted == s.expert)),
    "mean_format": (None, lambda s: s.terms.format),
    "mean_reward": (None, lambda s: s.reward),
}
DISCRIMINATION = "stop_discrimination"  # a ranking over all samples, not a mean of per-sample values
# Our metric names as the reference's evaluation names them (the same meaning: a wrong decision scores content 0,
# "if correct" counts only rollouts whose decision was right).
REFERENCE_NAMES = {"mean_content": "mean continue content", "good_question_rate": "win continue content",
                   "mean_content_if_correct": "mean continue content if correct",
                   "good_question_rate_if_correct": "win continue content if correct",
                   "termination_accuracy": "stop decision accuracy", "continue_accuracy": "continue decision accuracy",
                   "decision_accuracy": "total decision accuracy", "mean_format": "mean format",
                   "mean_reward": "mean total reward"}


def score(samples: list[TrainingSample], completions: list[str], grade: Grade | None, fusion: str,
          format_source: FormatSourceName, concurrency: int = 1, show_progress: bool = False,
          p_stop: list[float] | None = None) -> list[SampleScore]:
    """concurrency: grader calls at once, as in the trainer's reward. p_stop: the policy's P(`<stop`) per sample."""
    if p_stop is not None and len(p_stop) != len(samples):
        raise ValueError(f"{len(p_stop)} stop probabilities for {len(samples)} samples")
    jobs = [(c, s.decision, render(s.context), "; ".join(s.target_info)) for s, c in zip(samples, completions, strict=True)]
    progress = Progress(len(jobs), "grade", "sample", show_progress, None, leave=False)
    try:
        terms = map_ordered(lambda job: score_terms(*job, grade, format_source), jobs, concurrency=concurrency, progress=progress)
    finally:
        progress.close()
    if grade is None:  # no grader: no content figure means anything, a wrong decision's 0 included
        terms = [t.model_copy(update={"graded": False}) for t in terms]
    return [SampleScore(id=s.id, session_id=s.session_id, expert=s.decision, completion=c, predicted=decision_of(c), terms=t,
                        reward=fuse(t, fusion), p_stop=None if p_stop is None else p_stop[i])
            for i, (s, c, t) in enumerate(zip(samples, completions, terms))]


def metrics(scores: list[SampleScore]) -> dict[str, Any]:
    result: dict[str, Any] = {"n": len(scores), "n_continue": sum(s.expert == "continue" for s in scores),
                              "n_stop": sum(s.expert == "stop" for s in scores)}
    for name, (subset, value) in METRICS.items():
        values = [v for s in scores if subset in (None, s.expert) and (v := value(s)) is not None]
        result[name] = statistics.fmean(values) if values else None
    result[DISCRIMINATION] = _discrimination(scores)
    result["grader_failures"] = sum(s.terms.grader_failed for s in scores)
    return result


def _discrimination(scores: list[SampleScore]) -> float | None:
    if any(s.p_stop is None for s in scores):
        return None
    y = np.array([s.expert == "stop" for s in scores])
    auc = weighted_auc(y, np.array([s.p_stop for s in scores]), np.ones((1, len(scores))))
    return None if np.isnan(auc[0]) else float(auc[0])


def weighted_auc(positive: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC per row of `weights` (replicates x samples): the chance that a positive drawn by weight outranks a
    negative drawn by weight, ties counting one half; nan for a row without a positive or without a negative."""
    positive = np.asarray(positive, dtype=bool)
    if np.isnan(score).any():
        raise ValueError("a NaN score has no rank")
    values, group = np.unique(score, return_inverse=True)
    onehot = np.zeros((len(score), len(values)))
    onehot[np.arange(len(score)), group] = 1.0
    pos = (weights * positive) @ onehot  # replicates x distinct scores, ascending
    neg = (weights * ~positive) @ onehot
    below = np.cumsum(neg, axis=1) - neg  # negatives strictly below each distinct score
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    total = pos.sum(axis=1) * neg.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, wins / np.where(total > 0, total, 1.0), np.nan)


class MetricComparison(BaseModel):
    """Base vs trained on one metric; delta is trained - base, its interval from the same resampled sessions."""

    name: str
    n: int  # samples the metric is measured on
    sessions: int  # held-out sessions those samples come from: the bootstrap's unit
    replicates: int  # bootstrap replicates whose resampled sessions held any of those samples
    base: float | None = None
    base_ci: Interval | None = None
    trained: float | None = None
    trained_ci: Interval | None = None
    delta: float | None = None
    delta_ci: Interval | None = None
    verdict: Verdict


def session_draws(n_sessions: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n_sessions): how often each session is drawn in each replicate, sessions drawn with replacement."""
    idx = np.random.default_rng(seed).integers(0, n_sessions, size=(n_boot, n_sessions))
    flat = (np.arange(n_boot)[:, None] * n_sessions + idx).ravel()
    return np.bincount(flat, minlength=n_boot * n_sessions).reshape(n_boot, n_sessions)


def compare(samples: list[TrainingSample], base: list[SampleScore], trained: list[SampleScore], *, n_boot: int = 2000,
            seed: int = 0, confidence: float = 0.95, min_n: int = 10) -> list[MetricComparison]:
    """Every metric with a session-cluster bootstrap: each replicate takes all samples of sessions drawn with
    replacement, the same draw for base and trained; a replicate without any sample of a metric's subset is dropped."""
    ids = [s.id for s in samples]
    if not samples or [s.id for s in base] != ids or [s.id for s in trained] != ids:
        raise ValueError("base and trained scores must be non-empty and follow the samples' order")
    sessions = {sid: i for i, sid in enumerate(sorted({s.session_id for s in samples}))}
    cluster = np.array([sessions[s.session_id] for s in samples])
    draws = session_draws(len(sessions), n_boot, seed)
    points = {"base": metrics(base), "trained": metrics(trained)}
    out = []
    for name, (subset, value) in METRICS.items():
        # Each side's own samples: an "if correct" metric counts the rollouts that side decided right.
        values = {side: [value(s) for s in scores] for side, scores in (("base", base), ("trained", trained))}
        masks = {side: np.array([subset in (None, s.decision) and v is not None for s, v in zip(samples, vs)], dtype=float)
                 for side, vs in values.items()}
        n = int(min(m.sum() for m in masks.values()))
        weights = {side: draws @ np.bincount(cluster, weights=m, minlength=len(sessions)) for side, m in masks.items()}
        kept = (weights["base"] > 0) & (weights["trained"] > 0)
        boot = {side: draws[kept] @ np.bincount(cluster, weights=masks[side] * [v or 0.0 for v in vs], minlength=len(sessions))
                / weights[side][kept] for side, vs in values.items()}
        ci = {side: _interval(b, confidence) for side, b in boot.items()}
        delta_ci = _interval(boot["trained"] - boot["base"], confidence)
        b, t = points["base"][name], points["trained"][name]
        either = (masks["base"] + masks["trained"]) > 0
        out.append(MetricComparison(
            name=name, n=n, sessions=len(set(cluster[either])), replicates=int(kept.sum()), base=b, base_ci=ci["base"],
            trained=t, trained_ci=ci["trained"], delta=None if b is None or t is None else t - b, delta_ci=delta_ci,
            verdict="too few examples" if delta_ci is None else verdict_for(name, n, delta_ci, min_n)))
    if all(s.p_stop is not None for s in (*base, *trained)):
        out.append(_compare_discrimination(samples, base, trained, cluster, draws, points, confidence, min_n))
    return out


def _compare_discrimination(samples: list[TrainingSample], base: list[SampleScore], trained: list[SampleScore],
                            cluster: np.ndarray, draws: np.ndarray, points: dict[str, dict[str, Any]], confidence: float,
                            min_n: int) -> MetricComparison:
    """stop_discrimination under the same session draws: each replicate weighs a sample by its session's draw count.
    min_n applies to the smaller class: an AUC over a handful of stops says little however many continues there are."""
    positive = np.array([s.decision == "stop" for s in samples])
    weights = draws[:, cluster].astype(float)
    boot = {side: weighted_auc(positive, np.array([s.p_stop for s in scores]), weights)
            for side, scores in (("base", base), ("trained", trained))}
    kept = ~np.isnan(boot["base"])  # no replicate is kept when the samples lack a class, the case where b and t are None
    ci = {side: _interval(b[kept], confidence) for side, b in boot.items()}
    delta_ci = _interval(boot["trained"][kept] - boot["base"][kept], confidence)
    b, t = points["base"][DISCRIMINATION], points["trained"][DISCRIMINATION]
    smaller = int(min(positive.sum(), (~positive).sum()))
    return MetricComparison(
        name=DISCRIMINATION, n=len(samples), sessions=len(set(cluster)), replicates=int(kept.sum()), base=b,
        base_ci=ci["base"], trained=t, trained_ci=ci["trained"], delta=None if b is None or t is None else t - b,
        delta_ci=delta_ci,
        verdict="too few examples" if delta_ci is None else verdict_for(DISCRIMINATION, smaller, delta_ci, min_n))


def _interval(replicates: np.ndarray, confidence: float) -> Interval | None:
    return percentile_interval(replicates, confidence) if replicates.size else None


def figure(value: float | None, ci: Interval | None, sign: str = "") -> str:
    """0.10 [0.00, 0.25]; with sign="+", +0.50 [+0.30, +0.70]."""
    if value is None:
        return "–"
    return f"{value:{sign}.2f}" + ("" if ci is None else f" [{ci[0]:{sign}.2f}, {ci[1]:{sign}.2f}]")


def describe(c: MetricComparison, name: str | None = None) -> str:
    name = name or c.name
    if c.base is None:
        return f"{name}: no samples: {c.verdict}"
    return (f"{name}: base {figure(c.base, c.base_ci)} → trained {figure(c.trained, c.trained_ci)}, "
            f"{figure(c.delta, c.delta_ci, '+')}: {c.verdict}")


class GraderAgreement(BaseModel):
    """The grader's own held-out agreement with humans, from its calibration record: what good_question_rate and
    mean_content rest on. Not established without a record, or when the qwk CI's lower bound is under the gate's."""

    prompt: str
    threshold: float  # the config's min_grader_qwk
    calibrated: bool
    run_id: str | None = None
    lm: str | None = None
    qwk: float | None = None
    qwk_ci: Interval | None = None
    n: int | None = None
    used: bool = True  # False: the run grades no content (`content: false`), so no metric rests on the grader

    @computed_field
    @property
    def established(self) -> bool:
        return self.qwk_ci is not None and self.qwk_ci[0] >= self.threshold

    def summary(self) -> str:
        if not self.used:
            return "no grader: content not graded (content: false), so good_question_rate and mean_content are not measured"
        if not self.calibrated:
            return f"grader {self.prompt} has no calibration record"
        rows = "an unrecorded number of" if self.n is None else self.n
        return f"grader held-out qwk {figure(self.qwk, None)}, 95% CI {_bracket(self.qwk_ci)} on {rows} rows (LM {self.lm})"

    def warning(self) -> str | None:
        if self.established or not self.used:
            return None
        why = ("no calibration record" if not self.calibrated else "no held-out qwk CI recorded" if self.qwk_ci is None
               else f"qwk CI lower bound {self.qwk_ci[0]:.2f} < {self.threshold:.2f}")
        return (f"The good-question rate is scored by a grader whose agreement with humans is not established ({why}), "
                f"so it does not measure question quality.")


def _bracket(ci: Interval | None) -> str:
    return "[–, –]" if ci is None else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def grader_agreement(prompt: Path, calibration: Calibration | None, threshold: float, used: bool = True,
                     source: str = "lm") -> GraderAgreement:
    """source: the content judge (choose_content_source): the LM's held-out figures, or that floor's."""
    if calibration is None:
        return GraderAgreement(prompt=str(prompt), threshold=threshold, calibrated=False, used=used)
    floor = source != "lm"
    test = (calibration.floors.get(source, {}).get("test") or {}) if floor else calibration.test
    return GraderAgreement(prompt=str(prompt), threshold=threshold, calibrated=True, run_id=calibration.run_id,
                           lm=f"none: model-free floor {source}" if floor else calibration.lm,
                           qwk=test.get("qwk"), qwk_ci=test.get("qwk_ci"), n=test.get("n"), used=used)


def model_identity(model_dir: Path) -> str:
    """The folder and its weight files' sizes and mtimes: training into the same folder again changes it."""
    root = model_dir.resolve()
    weights = sorted(p for p in root.iterdir() if p.suffix in (".safetensors", ".bin"))
    return " ".join([str(root), *(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in weights)])


def cache_key(model_dir: Path, instructions: str, max_new_tokens: int, context_turns: int | None = None) -> dict[str, Any]:
    return {"model": model_identity(model_dir), "max_new_tokens": max_new_tokens, "context_turns": context_turns,
            "prompt_sha256": hashlib.sha256(instructions.encode("utf-8")).hexdigest()}


class CompletionCache:
    """Completions of one (model, instructions, max_new_tokens), one JSON line each, appended as they finish. On open,
    lines of another key and a line torn by a kill are dropped (the file is rewritten), so appends start clean. A line
    without a stop probability (written before it was measured) keeps its text in `texts`: only the probability is
    left to compute."""

    def __init__(self, path: Path, key: dict[str, Any], probabilities: bool = True):
        self.path, self.key = path, key
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        kept: dict[str, dict[str, Any]] = {}
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("completion"), str) and all(
                    record.get(k) == v for k, v in key.items()):
                kept[record["id"]] = record
        self.done = {i: Completion(text=r["completion"], p_stop=r.get("p_stop")) for i, r in kept.items()
                     if isinstance(r.get("p_stop"), float) or not probabilities}
        self.texts = {i: r["completion"] for i, r in kept.items() if i not in self.done}
        clean = "".join(self._line(r) for r in kept.values())
        if clean != text:
            write_atomic(path, clean)

    @staticmethod
    def _line(record: dict[str, Any]) -> str:
        return json.dumps(record, ensure_ascii=False) + "\n"

    def add(self, sample_id: str, completion: Completion) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(self._line({"id": sample_id, "completion": completion.text, "p_stop": completion.p_stop, **self.key}))
            f.flush()


_LOADED: dict[str, Any] = {}


def loaded(model_dir: Path) -> tuple[Any, Any]:
    """The tokenizer and model of `model_dir`, loaded once for as long as the folder's weights stay the same
    (model_identity): the greedy and the sampled generation of one side share a load. One model is kept."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    identity = model_identity(model_dir)
    if identity not in _LOADED:
        _LOADED.clear()
        _LOADED[identity] = (AutoTokenizer.from_pretrained(model_dir), AutoModelForCausalLM.from_pretrained(model_dir).eval())
    return _LOADED[identity]


def _prompt_ids(tokenizer: Any, sample: TrainingSample, instructions: str, context_turns: int | None) -> Any:
    """The policy's chat for `sample` as model inputs, ending where the policy's answer begins."""
    return tokenizer.apply_chat_template(policy_messages(sample.context, instructions, context_turns),
                                         add_generation_prompt=True, return_tensors="pt", return_dict=True)


def generate(model_dir: Path, samples: list[TrainingSample], instructions: str, max_new_tokens: int,
             cache: Path | None = None, context_turns: int | None = None) -> list[Completion]:
    """Greedy completions and P(`<stop`) in sample order; with `cache`, those already there for this model are reused
    and each new one is appended as it finishes. The model is loaded only when something is left to generate."""
    store = CompletionCache(cache, cache_key(model_dir, instructions, max_new_tokens, context_turns)) if cache else None
    done = dict(store.done) if store else {}
    texts = dict(store.texts) if store else {}
    todo = [s for s in samples if cache_slot(s) not in done]
    if todo:
        import torch

        tokenizer, model = loaded(model_dir)
        stop = torch.tensor([tokenizer(STOP_PREFIX, add_special_tokens=False)["input_ids"]])
        progress = Progress(len(samples), f"generate {model_dir.name}", "sample", True, None, initial=len(samples) - len(todo))
        try:
            for sample in todo:
                ids = _prompt_ids(tokenizer, sample, instructions, context_turns)
                prompt = ids["input_ids"]
                with torch.no_grad():
                    if (text := texts.get(cache_slot(sample))) is None:
                        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                             pad_token_id=tokenizer.eos_token_id)
                        text = tokenizer.decode(out[0, prompt.shape[1]:], skip_special_tokens=True)
                    forced = model(torch.cat([prompt, stop], dim=1)).logits[0, prompt.shape[1] - 1:-1].float()
                logp = torch.log_softmax(forced, dim=-1).gather(1, stop[0][:, None]).sum().item()
                if math.isnan(logp):
                    raise RuntimeError(f"{model_dir}: the probability of {STOP_PREFIX!r} is NaN on sample {sample.id}")
                done[cache_slot(sample)] = Completion(text=text, p_stop=min(1.0, math.exp(logp)))
                if store:
                    store.add(cache_slot(sample), done[cache_slot(sample)])
                progress.step()
        finally:
            progress.close()
    return [done[cache_slot(s)] for s in samples]


def rollout_seed(seed: int, slot: str, rollout: int) -> int:
    """The seed of one sampled rollout: fixed by the run's seed, the sample and the rollout's number, so each answer
    is drawn the same whatever was generated before it (a resumed eval draws what the killed one would have)."""
    return int.from_bytes(hashlib.sha256(f"{seed}|{slot}|{rollout}".encode()).digest()[:4], "big")


def generate_sampled(model_dir: Path, samples: list[TrainingSample], instructions: str, max_new_tokens: int,
                     sampling: Sampling, cache: Path | None = None, context_turns: int | None = None) -> list[list[str]]:
    """`sampling.rollouts` sampled answers per sample, in sample order; cached like the greedy ones (one line per
    rollout, appended as it finishes; the key holds the decoding settings), so a killed eval resumes."""
    key = cache_key(model_dir, instructions, max_new_tokens, context_turns) | {"sampling": sampling.model_dump()}
    store = CompletionCache(cache, key, probabilities=False) if cache else None
    done = {i: c.text for i, c in store.done.items()} if store else {}
    todo = [(s, r) for s in samples for r in range(sampling.rollouts) if f"{cache_slot(s)}@{r}" not in done]
    if todo:
        import torch

        tokenizer, model = loaded(model_dir)
        total = len(samples) * sampling.rollouts
        progress = Progress(total, f"sample {model_dir.name}", "rollout", True, None, initial=total - len(todo))
        ids, of = None, None
        try:
            for sample, rollout in todo:  # a sample's rollouts come together: its chat is built once
                slot = f"{cache_slot(sample)}@{rollout}"
                if of is not sample:
                    ids, of = _prompt_ids(tokenizer, sample, instructions, context_turns), sample
                torch.manual_seed(rollout_seed(sampling.seed, cache_slot(sample), rollout))
                with torch.no_grad():
                    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=True,
                                         temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                                         repetition_penalty=sampling.repetition_penalty,
                                         pad_token_id=tokenizer.eos_token_id)
                done[slot] = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
                if store:
                    store.add(slot, Completion(text=done[slot]))
                progress.step()
        finally:
            progress.close()
    return [[done[f"{cache_slot(s)}@{r}"] for r in range(sampling.rollouts)] for s in samples]


def rollout_samples(samples: list[TrainingSample], rollouts: int) -> list[TrainingSample]:
    """Each sample once per rollout (`<id>@<r>`, same session), so the rollouts of a sample are scored and resampled
    with its session like any sample."""
    return [s.model_copy(update={"id": f"{s.id}@{r}"}) for s in samples for r in range(rollouts)]


def cache_slot(sample: TrainingSample) -> str:
    """A cached completion's address: the sample's id and a digest of its dialogue, so another samples file (or other
    logs in the same folder) whose ids collide never gets this one's completion."""
    dialogue = json.dumps([m.model_dump() for m in sample.context], ensure_ascii=False)
    return f"{sample.id}#{hashlib.sha256(dialogue.encode('utf-8')).hexdigest()[:16]}"
