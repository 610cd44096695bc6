"""Which process writes a run's files, and which checkpoint a run resumes from. Apart from the trainer: neither
needs TRL, and the warm start and the baselines resume the same way."""

import os
import shutil
from pathlib import Path

from calibrator.prompt import write_atomic


def is_main_process() -> bool:
    """accelerate and torchrun start one process per device, each running `python -m train run` with its RANK;
    only rank 0 writes the run's files, so they are neither duplicated nor torn by concurrent writers."""
    return int(os.environ.get("RANK", "0")) == 0


def write_from_main(path: Path, text: str) -> None:
    """write_atomic in the main process; nothing elsewhere."""
    if is_main_process():
        write_atomic(path, text)


def last_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint that was completely written. One cut short by a kill (no trainer_state.json)
    is removed, so training resumes from the one before it and later saves are not confused by it."""
    found = sorted((p for p in out.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()), key=lambda p: int(p.name.split("-")[-1]))
    for candidate in reversed(found):
        if (candidate / "trainer_state.json").is_file():
            return candidate
        shutil.rmtree(candidate, ignore_errors=True)
    return None
