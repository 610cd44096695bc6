"""A component's prompt on disk: instructions, demonstrations, optional retrieval, calibration record.

Stored as YAML with block scalars so a calibrated prompt reads and diffs like prose. Written to a
temp file and renamed, so a crash never leaves half a prompt.
"""

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, model_validator

from calibrator.agreement.decision import DecisionRule


class Retrieval(BaseModel):
    """Demonstrations chosen per input: the k pool examples nearest to it by embedding similarity."""

    k: int
    keys: list[str]
    embedder: str
    pool: list[dict[str, Any]]


class Calibration(BaseModel):
    """Where a calibrated prompt came from and how well it agreed with humans on held-out data."""

    run_id: str
    created: datetime
    optimizer: str
    lm: str
    # a local GGUF's identity (its size and the sha256 of its head): the gate knows a renamed copy, and a new file at
    # the old path, by it
    lm_weights: str | None = None
    seed: int
    goldset_path: str
    goldset_sha256: str
    val: dict[str, Any]
    test: dict[str, Any]
    verdict: str
    goldset_rows: dict[str, str] = {}  # id -> short content hash: which rows changed since, when the gold set moves on
    # The model-free floors fitted on the same train split, as the prompt records itself: name -> {"description",
    # "val": {...}, "test": {...}}; the trainer takes its content judge from whichever agrees best on val
    floors: dict[str, dict[str, Any]] = {}


class PromptFile(BaseModel):
    component: str
    instructions: str
    fields: list[str] | None = None  # a field vocabulary, for components whose answer names fields; None otherwise
    demos: list[dict[str, Any]] = []
    retrieval: Retrieval | None = None
    # The judge's label written as one token per label ({"0": 0.0, "1": 0.5, "2": 1.0}) and read as a distribution
    # from token log-probabilities; `decision` turns it into a label (see calibrator/agreement/decision.py).
    label_tokens: dict[str, float] | None = None
    decision: DecisionRule | None = None
    # Reason before answering (DSPy's ChainOfThought: a `reasoning` field written first, as the reference's judge
    # thinks before it scores); None: answer at once. A run compares both on val (`--compare-reasoning`).
    reasoning: bool | None = None
    # Which target a prompt extracts, or grades a candidate against (calibrator.expert_logs.logs.TARGET_SCOPES);
    # None: next, as every prompt written before the option.
    target_scope: Literal["next", "rest"] | None = None
    calibration: Calibration | None = None

    @model_validator(mode="after")
    def _reasoning_moves_the_label_token(self) -> "PromptFile":
        if self.reasoning and self.label_tokens:
            raise ValueError("reasoning and label_tokens cannot be combined: the label's probabilities are read at the "
                             "answer's first token, and reasoning writes other text first")
        return self

    def content_sha256(self) -> str:
        """The sha256 of what shapes the component's answers (component, instructions, fields, demos, retrieval, label
        tokens, decision rule), not the calibration record: re-saving the same prompt with a new record leaves derived data valid."""
        content = self.model_dump(mode="json", exclude={"calibration"}, exclude_none=True)
        canonical = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class _BlockDumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def write_atomic(path: Path, text: str) -> None:
    write_atomic_lines(path, [text])


def write_atomic_lines(path: Path, pieces: Iterable[str]) -> None:
    """Write `pieces` (streamed, so a file of any size) to a temporary file beside `path`, fsync, then rename: a
    reader sees the old file or the whole new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a saved prompt or report is an ordinary file
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for piece in pieces:
                f.write(piece)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_prompt(prompt: PromptFile, path: Path) -> None:
    data = prompt.model_dump(mode="json", exclude_none=True)
    write_atomic(path, yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, allow_unicode=True, width=100))


def load_prompt(path: Path) -> PromptFile:
    with open(path, encoding="utf-8") as f:
        try:
            data = yaml.safe_load(f)
        except yaml.YAMLError as e:  # a ValueError, like every other bad prompt, so the commands report it in one line
            raise ValueError(f"{path}: not a prompt file, the YAML does not parse ({' '.join(str(e).split())})") from None
    return PromptFile.model_validate(data)
