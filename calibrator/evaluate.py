"""Run one prompt over gold rows, with a progress bar; failures are recorded per row, never raised."""

from collections.abc import Callable

import dspy
from tqdm import tqdm

from calibrator.components import grader
from calibrator.goldset import GraderRow
from calibrator.prompt import PromptFile


def evaluator(show_progress: bool = True) -> Callable[[PromptFile, list[GraderRow], str], list[grader.GraderPrediction]]:
    programs: dict[str, dspy.Module] = {}

    def evaluate(prompt: PromptFile, rows: list[GraderRow], label: str) -> list[grader.GraderPrediction]:
        key = prompt.model_dump_json()
        if key not in programs:
            programs[key] = grader.build_program(prompt)
        program = programs[key]
        bar = tqdm(rows, desc=label, unit="row", disable=not show_progress, leave=False, dynamic_ncols=True)
        return [grader.grade(program, row) for row in bar]

    return evaluate
