"""Run one prompt over gold rows, `--concurrency` rows at a time, with a progress bar; failures are recorded per
row, never raised (except a backend that cannot serve the run at all, which stops it)."""

from collections.abc import Callable

import dspy

from calibrator.components import Component, Prediction
from calibrator.gold.goldset import GoldRow
from calibrator.lm import LMHandle
from calibrator.parallel import Progress, map_ordered
from calibrator.prompt import PromptFile

Evaluate = Callable[[PromptFile, list[GoldRow], str], list[Prediction]]


def evaluator(component: Component, show_progress: bool = True, lm: LMHandle | None = None) -> Evaluate:
    """An evaluate function that builds each prompt's program once and scores each (prompt, row) once per run.
    Rows go `lm.concurrency` at a time; predictions come back in row order, as a sequential run gives them."""
    programs: dict[str, dspy.Module] = {}
    seen: dict[tuple[str, str], Prediction] = {}
    concurrency = lm.concurrency if lm is not None else 1

    def evaluate(prompt: PromptFile, rows: list[GoldRow], label: str) -> list[Prediction]:
        key = prompt.model_dump_json()
        if key not in programs:
            programs[key] = component.build_program(prompt)
        todo = [r for r in rows if (key, r.id) not in seen]
        progress = Progress(len(todo), label, "row", show_progress and bool(todo), lm.in_flight if lm else None, leave=False)
        try:
            preds = map_ordered(lambda row: component.predict(programs[key], row), todo, concurrency=concurrency, progress=progress)
        finally:
            progress.close()
        seen.update({(key, r.id): p for r, p in zip(todo, preds)})
        return [seen[key, r.id] for r in rows]

    return evaluate
