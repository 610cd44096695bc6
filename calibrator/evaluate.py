"""Run one prompt over gold rows, with a progress bar; failures are recorded per row, never raised."""

from collections.abc import Callable

import dspy
from tqdm import tqdm

from calibrator.components import Component, Prediction
from calibrator.goldset import GoldRow
from calibrator.prompt import PromptFile

Evaluate = Callable[[PromptFile, list[GoldRow], str], list[Prediction]]


def evaluator(component: Component, show_progress: bool = True) -> Evaluate:
    """An evaluate function that builds each prompt's program once and scores each (prompt, row) once per run."""
    programs: dict[str, dspy.Module] = {}
    seen: dict[tuple[str, str], Prediction] = {}

    def evaluate(prompt: PromptFile, rows: list[GoldRow], label: str) -> list[Prediction]:
        key = prompt.model_dump_json()
        if key not in programs:
            programs[key] = component.build_program(prompt)
        todo = [r for r in rows if (key, r.id) not in seen]
        for row in tqdm(todo, desc=label, unit="row", disable=not show_progress or not todo, leave=False, dynamic_ncols=True):
            seen[key, row.id] = component.predict(programs[key], row)
        return [seen[key, r.id] for r in rows]

    return evaluate
