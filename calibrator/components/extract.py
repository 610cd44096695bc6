"""Training targets from expert logs: segment every session, run the extractor on every sample, write JSONL.

It streams: sessions are read lazily, `--concurrency` samples are extracted at once with a bounded number queued,
and each finished sample is appended to `<out>.partial` as it completes (in completion order), so memory stays
flat whatever the corpus size. The partial file is the resume point: a run started again (after Ctrl-C or kill -9)
indexes what is there, ignores a line cut short by the kill, and only does the rest. The working index
(`<out>.index.sqlite`, on disk, rebuilt at every start) keeps the log order, so the output file appears in one
rename at the end in log order, never truncated, with a manifest beside it for `extract merge`.
Every record names the prompt (content sha256) and LM that made it; only records made by the same prompt and
LM are reused, any other is extracted again. A `stop` sample needs no LM call: by definition the pharmacist
asked nothing more.
"""

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Literal

import dspy
from pydantic import BaseModel, ValidationError

from calibrator.components.extractor import EXTRACTOR
from calibrator.lm.spec import LMSpec
from calibrator.expert_logs.logs import Message, Sample, render
from calibrator.parallel import Progress, imap_unordered
from calibrator.prompt import PromptFile, write_atomic_lines
from calibrator.expert_logs.samples_file import SampleFormat, SamplesFileError, TrainingSample, parse_line, reshape_line

COMPONENT = EXTRACTOR  # what `extract` runs over the logs


class MadeBy(BaseModel, frozen=True):
    """What made a record: a record made by another prompt or LM is re-extracted, never reused."""

    prompt_sha256: str
    lm: str

    @classmethod
    def of(cls, prompt: PromptFile, lm: LMSpec) -> "MadeBy":
        return cls(prompt_sha256=prompt.content_sha256(), lm=str(lm))

    def made(self, record: TrainingSample) -> bool:
        """A record from before stamping (no prompt_sha256) counts as made by another prompt."""
        return (record.prompt_sha256, record.lm) == (self.prompt_sha256, self.lm)


class ExtractSummary(BaseModel):
    sessions: int | None = None  # sessions selected from the log (None: samples were given directly)
    samples: int
    extracted: int  # LM calls made by this invocation (continue samples)
    reextracted: int  # of `extracted`: finished earlier, but made by another prompt or LM
    reused: int  # finished in an earlier, interrupted or completed, invocation by the same prompt and LM
    stops: int
    failed: int


class _RenderedSample(BaseModel):
    id: str
    context: str
    future: str
    target_scope: str | None = None


def default_prompt(root: Path = Path("."), target_scope: str = "next") -> Path:
    """The calibrated extractor prompt when one exists, else the baseline: what `extract` and the trainer use; for
    target_scope rest, prompts/extractor.rest[.calibrated].yaml."""
    stem = "extractor" if target_scope == "next" else f"extractor.{target_scope}"
    calibrated = root / "prompts" / f"{stem}.calibrated.yaml"
    return calibrated if calibrated.is_file() else root / "prompts" / f"{stem}.yaml"


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def index_path(out: Path) -> Path:
    return out.with_name(out.name + ".index.sqlite")


def _digest(context: list[Message], future: list[Message], decision: str) -> str:
    """What a record was made for: its dialogue cut, and the decision the stop rule gave it (the same cut is `continue`
    under one rule and `stop` under another)."""
    payload = json.dumps([[m.model_dump() for m in context], [m.model_dump() for m in future], decision], ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


class SampleIndex:
    """The extraction's working state on disk: every finished record by id (whether this prompt and LM made it, and
    a digest of its context and future) and the log order of this run's samples. Derived from the partial and
    finished files at every start, so it needs no durability of its own; it keeps memory flat at any corpus size."""

    BATCH = 2000  # writes per transaction

    def __init__(self, path: Path, made_by: MadeBy) -> None:
        path.unlink(missing_ok=True)
        self.path, self.made_by = path, made_by
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=OFF")
        self.db.execute("PRAGMA synchronous=OFF")
        self.db.execute("CREATE TABLE records (id TEXT PRIMARY KEY, fresh INTEGER NOT NULL, digest TEXT NOT NULL, line TEXT NOT NULL)")
        self.db.execute("CREATE TABLE log_order (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, session_index INTEGER)")
        self._pending = 0
        self.db.execute("BEGIN")

    def _wrote(self) -> None:
        self._pending += 1
        if self._pending >= self.BATCH:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN")
            self._pending = 0

    def failed(self, record: TrainingSample, line: str) -> None:
        """This run's failed attempt: it replaces any earlier record of the sample in the output (which must show the
        failure, not a record made by another prompt); a run started again retries it."""
        self.db.execute("INSERT OR REPLACE INTO records VALUES (?, 0, '', ?)", (record.id, line))
        self._wrote()

    def add(self, record: TrainingSample, line: str | None = None) -> None:
        """A finished record; one made by this prompt and LM replaces any other for the same sample, never the reverse."""
        if record.error is not None:
            return
        fresh = int(self.made_by.made(record))
        self.db.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET fresh = excluded.fresh, "
            "digest = excluded.digest, line = excluded.line WHERE excluded.fresh >= records.fresh",
            (record.id, fresh, _digest(record.context, record.future, record.decision), line or record.model_dump_json()))
        self._wrote()

    def load(self, paths: Iterable[Path]) -> None:
        """Finished records of earlier invocations, streamed; a torn last line or a failed sample is not finished."""
        for path in paths:
            if not path.is_file():
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for line in f:
                    try:  # our shape, kept as written; else the reference's, rewritten in ours
                        record = TrainingSample.model_validate_json(line)
                        kept = line.rstrip("\n")
                    except ValidationError:
                        try:
                            record = parse_line(line, str(path))
                        except SamplesFileError:
                            continue
                        kept = record.model_dump_json()
                    self.add(record, kept)

    def state(self, sample: Sample) -> Literal["reuse", "stale", "new"]:
        """reuse: finished by this prompt and LM for this very context and future; stale: finished, but by another
        prompt or LM (re-extracted and counted as such); new: anything else."""
        row = self.db.execute("SELECT fresh, digest FROM records WHERE id = ?", (sample.id,)).fetchone()
        if row is None or row[1] != _digest(sample.context, sample.future, sample.decision):
            return "new"
        return "reuse" if row[0] else "stale"

    def place(self, seq: int, sample_id: str, session_index: int | None) -> None:
        self.db.execute("INSERT INTO log_order VALUES (?, ?, ?)", (seq, sample_id, session_index))
        self._wrote()

    def in_log_order(self) -> Iterator[str]:
        """Every placed sample's record line, in log order, stamped with its session position."""
        self.db.execute("COMMIT")
        self.db.execute("BEGIN")
        rows = self.db.execute("SELECT o.id, o.session_index, r.line FROM log_order o JOIN records r ON r.id = o.id ORDER BY o.seq")
        for sample_id, session_index, line in rows:
            record = json.loads(line)
            record["session_index"] = session_index
            yield json.dumps(record, ensure_ascii=False) + "\n"

    def close(self) -> None:
        self.db.close()
        self.path.unlink(missing_ok=True)


def extract_one(program: dspy.Module, sample: Sample, target_scope: str | None = None) -> TrainingSample:
    """The sample with its extracted target (of the prompt's target_scope); a failure is recorded on it, never raised."""
    fields = {"id": sample.id, "session_id": sample.session_id, "context": sample.context, "future": sample.future,
              "decision": sample.decision}
    if sample.decision == "stop":
        return TrainingSample(**fields, target_info=[])
    rendered = _RenderedSample(id=sample.id, context=render(sample.context), future=render(sample.future),
                               target_scope=target_scope)
    pred = EXTRACTOR.predict(program, rendered)
    return TrainingSample(**fields, target_info=pred.target_info or [], error=pred.error)


class _Partial:
    """`<out>.partial`: finished records appended as they complete. Each line is flushed at once (a killed process
    loses nothing the OS already has); fsync at most once a second (a power cut loses at most that second)."""

    def __init__(self, path: Path) -> None:
        _drop_torn_tail(path)
        self.f = open(path, "a", encoding="utf-8")
        self._synced = time.monotonic()

    def write(self, line: str) -> None:
        self.f.write(line + "\n")
        self.f.flush()
        if time.monotonic() - self._synced > 1.0:
            os.fsync(self.f.fileno())
            self._synced = time.monotonic()

    def close(self) -> None:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()


def _drop_torn_tail(path: Path) -> None:
    """Cut a last line left without its newline by a kill, so the next record starts on a line of its own."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        size = f.seek(0, os.SEEK_END)
        step = min(size, 1 << 16)
        while True:
            f.seek(size - step)
            cut = f.read(step).rfind(b"\n")
            if cut >= 0:
                f.truncate(size - step + cut + 1)
                return
            if step == size:
                f.truncate(0)
                return
            step = min(size, step * 2)


def extract_stream(samples: Iterable[tuple[int | None, Sample]], prompt: PromptFile, lm: LMSpec, out: Path, *,
                   concurrency: int = 1, progress: Progress | None = None, sessions: Callable[[], int] | None = None,
                   shape: SampleFormat = "ours") -> ExtractSummary:
    """Extract targets for `samples` ((session position, sample), lazily) into `out` (JSONL, log order, in `shape`:
    ours or the reference's processed samples) with `prompt` on `lm` (the LM in the current dspy context),
    `concurrency` at a time, resuming from `<out>.partial` or a finished `out` (either shape) only where the same
    prompt and LM made the record."""
    made_by = MadeBy.of(prompt, lm)
    partial = partial_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    index = SampleIndex(index_path(out), made_by)
    index.load([out, partial])
    program = EXTRACTOR.build_program(prompt)
    writer = _Partial(partial)
    counts = {"samples": 0, "reused": 0, "stops": 0, "extracted": 0, "reextracted": 0, "failed": 0}
    stale: set[str] = set()  # ids being re-extracted now: bounded by what is in flight

    def finish(record: TrainingSample) -> None:
        record = record.model_copy(update=made_by.model_dump() | {"target_scope": prompt.target_scope or "next"})
        line = record.model_dump_json()
        writer.write(line)
        if record.error is None:
            index.add(record, line)
        else:
            counts["failed"] += 1
            index.failed(record, line)
        if progress is not None and sessions is None:
            progress.step()

    def todo() -> Iterator[Sample]:
        for seq, (position, sample) in enumerate(samples):
            counts["samples"] += 1
            index.place(seq, sample.id, position)
            state = index.state(sample)
            counts["stops"] += sample.decision == "stop"
            if state == "reuse":
                counts["reused"] += 1
                if progress is not None and sessions is None:
                    progress.step()
            elif sample.decision == "stop":  # no LM call: written as soon as it is read
                finish(extract_one(program, sample, prompt.target_scope))
            else:
                if state == "stale":
                    stale.add(sample.id)
                yield sample

    try:
        for sample, record in imap_unordered(lambda s: extract_one(program, s, prompt.target_scope), todo(), concurrency=concurrency):
            counts["extracted"] += 1
            counts["reextracted"] += sample.id in stale
            stale.discard(sample.id)
            finish(record)
    finally:
        writer.close()
    write_atomic_lines(out, (reshape_line(line, shape) for line in index.in_log_order()) if shape != "ours" else index.in_log_order())
    index.close()
    partial.unlink(missing_ok=True)
    return ExtractSummary(sessions=sessions() if sessions else None, samples=counts["samples"], extracted=counts["extracted"],
                          reextracted=counts["reextracted"], reused=counts["reused"], stops=counts["stops"],
                          failed=counts["failed"])


def extract_samples(samples: list[Sample], prompt: PromptFile, lm: LMSpec, out: Path, *, show_progress: bool = True,
                    concurrency: int = 1) -> ExtractSummary:
    """`extract_stream` over samples already in memory (tests, the trainer's small logs)."""
    progress = Progress(len(samples), "extract", "sample", show_progress, None)
    try:
        return extract_stream(((None, s) for s in samples), prompt, lm, out, concurrency=concurrency, progress=progress)
    finally:
        progress.close()
