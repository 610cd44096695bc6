"""Run folders built through the real scoring and writing code, with made-up predictions instead of an LM:
for tests and benchmarks of the report, which only reads run.json and predictions.csv."""

import random
from datetime import datetime, timezone
from pathlib import Path

from calibrator.components.grader import GraderRow
from calibrator.components.extractor import ExtractorRow
from calibrator.components import COMPONENTS
from calibrator.components.extractor import ExtractorPrediction
from calibrator.components.grader import GraderPrediction, format_by_rule
from calibrator.curation.curation import goldset_csv

from calibrator.lm.usage import Usage
from calibrator.prompt import write_atomic
from calibrator.calibration.record import GoldSetInfo, PromptInfo, RunRecord
from calibrator.calibration.runs import predictions_csv, versions
from calibrator.report.render import write_index, write_report

FIELDS = ("duration", "allergies", "age group", "severity")
QUESTIONS = ("Let me check.", "How long has it lasted?", "How long has it lasted? Any fever?",
             "How long has it lasted? Any fever? Any rash?")  # 0 to 3 questions: every format label


def _rows(component: str, n: int, text: str, rng: random.Random, turns: int) -> list:
    rows = []
    for i in range(n):
        lines = [f"patient: {text} I have had a dry tickly cough for a while now, it is worse at night {i}",
                 f"pharmacist: {text} I'm sorry to hear that. How long has it been going on for, roughly?"]
        context = "\n".join(lines[j % 2] for j in range(turns - 1)) + f"\npatient: {text} about {i} days"
        if component == "grader":
            candidate = f"{text} {rng.choice(QUESTIONS)}"
            # the humans mostly agree with the question count; every fifth row has no format label
            fmt = None if i % 5 == 4 else format_by_rule(candidate) if rng.random() < 0.9 else rng.choice((0.0, 0.5, 1.0))
            rows.append(GraderRow(id=f"{text}r{i}", context=context, target_info=[f"duration: {text} {i} days"],
                                  candidate=candidate, content_score=rng.choice((0.0, 0.5, 1.0)), format_score=fmt, note=text))
        else:
            stop = i % 3 == 0
            rows.append(ExtractorRow(id=f"{text}r{i}", context=context, note=text,
                                     future="pharmacist: take two a day" if stop else f"pharmacist: {text} any allergies?\npatient: none {text}",
                                     target_info=[] if stop else [f"{rng.choice(FIELDS)}: {text} none"], decision="stop" if stop else "continue"))
    return rows


def _predict(component: str, row, rng: random.Random, skill: float, text: str, unparsed: bool):
    if unparsed:
        return GraderPrediction(error=f"parse: {text}") if component == "grader" else ExtractorPrediction(error=f"parse: {text}")
    if component == "grader":
        score = row.content_score if rng.random() < skill else rng.choice((0.0, 0.5, 1.0))
        fmt = format_by_rule(row.candidate) if rng.random() < skill else rng.choice((0.0, 0.5, 1.0))
        return GraderPrediction(content_score=score, format_score=fmt)
    good = rng.random() < skill
    items = list(row.target_info) if good else [f"{rng.choice(FIELDS)}: {text} something"]
    decision = row.decision if good else rng.choice(("continue", "stop"))
    return ExtractorPrediction(decision=decision, target_info=items if decision == "continue" else [])


def make_run(parent: Path, *, component: str = "grader", n_val: int = 12, n_test: int = 20, text: str = "",
             seed: int = 0, run_id: str | None = None, turns: int = 3, goldset: Path | None = None,
             unparsed: int | None = None) -> Path:
    """A finished run folder under `parent` (run.json, predictions.csv, index.html) and parent/index.html.
    With `goldset`, the run's rows are also written there as a gold-set CSV, recorded as the run's gold set.
    Answers fail to parse at random (3%), or with `unparsed`, exactly the first that many rows of each split
    on both sides: a known parse-failure rate."""
    rng = random.Random(seed)
    c = COMPONENTS[component]
    val, test = _rows(component, n_val, text, rng, turns), _rows(component, n_test, text + "t", rng, turns)
    if goldset is not None:
        write_atomic(goldset, goldset_csv(val + test, c.row_model))
    def fails(position: int) -> bool:
        return rng.random() < 0.03 if unparsed is None else position < unparsed

    preds = {side: {r.id: _predict(component, r, rng, skill, text, fails(i)) for rows in (val, test) for i, r in enumerate(rows)}
             for side, skill in (("baseline", 0.4), ("calibrated", 0.7))}
    scores = {side: {name: c.score(rows, [preds[side][r.id] for r in rows], seed=seed) for name, rows in (("val", val), ("test", test))}
              for side in preds}
    comparison = c.compare(test, [preds["baseline"][r.id] for r in test], [preds["calibrated"][r.id] for r in test], seed=seed)
    run_id = run_id or f"20261124-000000-{component}-run-{seed:04d}"
    metric = c.selection_metric
    trials = [{"strategy": s, "trial": i, "metric": metric, "score": rng.random(), "kind": k, "detail": text}
              for i, (s, k) in enumerate([("baseline", "full"), ("knn", "train-loo"), ("knn", "full"), ("mipro", "minibatch"), ("mipro", "full")])]
    record = RunRecord(
        run_id=run_id, kind="run", command=f"python -m calibrator run --component {component} {text}", created=datetime.now(timezone.utc),
        component=component, lm="local", optimizer="auto", budget="light", seed=seed,
        goldset=GoldSetInfo(path=str(goldset) if goldset else f"goldsets/{text}{component}.csv", sha256="ab" * 32, n={"train": 10, "val": n_val, "test": n_test},
                            evaluated={"val": n_val, "test": n_test}),
        baseline=scores["baseline"], calibrated=scores["calibrated"], comparison=comparison, verdict=f"{comparison.verdict} {text}",
        optimization={"winner": "knn", "metric": metric, "trials": trials,
                      "candidates": [{"strategy": "baseline", "val_score": 0.1, "val_secondary": 0.3}, {"strategy": "knn", "val_score": 0.2, "val_secondary": 0.4}]},
        usage=Usage(lm_calls=90, cache_hits=24, prompt_tokens=70421, completion_tokens=2475), cost_usd=0.0, wall_seconds=250.2,
        prompt={"baseline": PromptInfo(path="prompts/x.yaml", instructions=f"Judge the turn. {text}"),
                "calibrated": PromptInfo(path=None, instructions=f"Judge the turn carefully. {text}",
                                         demos=[{"context": text, "candidate": text}], retrieval_k=2, retrieval_pool=30)},
        versions=versions(),
    )
    folder = parent / run_id
    folder.mkdir(parents=True)
    write_atomic(folder / "run.json", record.model_dump_json(indent=2))
    rows = [(r, "val") for r in val] + [(r, "test") for r in test]
    write_atomic(folder / "predictions.csv", predictions_csv(c, rows, preds))
    write_report(folder)
    write_index(parent)
    return folder
