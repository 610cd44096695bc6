"""Every grading the reward served, one JSON line each, so the judge can be re-checked on the policy's own outputs.

Bounded and rotating: when the file passes `max_bytes` it becomes LOG.1 (LOG.1 becomes LOG.2, ...) and the oldest of
`backups` is dropped. A line holds the case, the terms, the reward and who graded: never a request's headers, a key or
anything the client sent besides the case. Lines are written whole, under a lock, and flushed before the answer leaves,
so a grading that was answered is in the log once."""

import json
import os
import threading
import uuid
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel

from calibrator.reward.schema import Case, Graded, Target
from calibrator.reward.terms import Terms

DEFAULT_MAX_BYTES = 50_000_000
DEFAULT_BACKUPS = 5


class GradingEntry(BaseModel):
    id: str  # unique over every log this service wrote
    time: datetime
    step: int | None
    context: str
    target: Target
    candidate: str
    terms: Terms
    reward: float
    fusion: str
    judge: str  # the content judge: "lm" or a floor's name


class GradingLog:
    def __init__(self, path: Path, judge: str, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS):
        if max_bytes < 1024:
            raise ValueError(f"max_bytes {max_bytes}: at least 1024")
        if backups < 1:
            raise ValueError(f"backups {backups}: at least 1")
        self.path, self.judge, self.max_bytes, self.backups = path, judge, max_bytes, backups
        self._lock = threading.Lock()
        self._prefix = uuid.uuid4().hex[:8]  # this process's entries; the counter numbers them
        self._count = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")

    def write(self, cases: list[Case], graded: list[Graded], fusion: str) -> None:
        now = datetime.now(timezone.utc)
        with self._lock:
            lines = []
            for case, g in zip(cases, graded):
                self._count += 1
                entry = GradingEntry(id=f"{self._prefix}-{self._count}", time=now, step=case.step, context=case.context,
                                     target=case.target, candidate=case.candidate, terms=g.terms, reward=g.reward,
                                     fusion=fusion, judge=self.judge)
                lines.append(entry.model_dump_json() + "\n")
            self._file.write("".join(lines))
            self._file.flush()
            if self._file.tell() >= self.max_bytes:
                self._rotate()

    @property
    def written(self) -> int:
        return self._count

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "a", encoding="utf-8")

    def close(self) -> None:
        with self._lock:
            self._file.close()


def log_files(path: Path) -> list[Path]:
    """LOG and its rotated files, oldest first."""
    rotated = sorted((p for p in path.parent.glob(f"{path.name}.*") if p.suffix[1:].isdigit()), key=lambda p: -int(p.suffix[1:]))
    return [*rotated, *([path] if path.exists() else [])]


class LogLineError(ValueError):
    pass


def read_log(path: Path) -> Iterator[GradingEntry]:
    """Every entry of LOG and its rotated files; a line that is not an entry is named by file and line. A last line cut
    short by a kill is skipped: it was never answered."""
    files = log_files(path)
    if not files:
        raise LogLineError(f"{path}: no such log (nor rotated files {path.name}.1, ...)")
    for file in files:
        lines = file.read_text(encoding="utf-8").split("\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                yield GradingEntry.model_validate(json.loads(line))
            except ValueError as e:
                if number == len(lines):  # no newline after it: the write was cut short
                    continue
                first = str(e).splitlines()[0]
                raise LogLineError(f"{file}, line {number}: not a grading entry ({first})") from None
