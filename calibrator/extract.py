"""Training targets from expert logs: segment every session, run the extractor on every sample, write JSONL.

Resumable: each finished sample is appended (and fsynced) to `<out>.partial` as it completes; a run
started again reads what is there, drops a line cut short by a crash, and only does the rest. The
output file itself appears in one rename at the end, in sample order, so it is never truncated.
A `stop` sample needs no LM call: by definition the pharmacist asked nothing more.
"""

import json
import os
from collections.abc import Iterable
from pathlib import Path

import dspy
from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from calibrator.components.extractor import EXTRACTOR
from calibrator.logs import Decision, Message, Sample, render
from calibrator.prompt import PromptFile, write_atomic


class TrainingSample(BaseModel):
    """One line of samples.jsonl: a hindsight sample and its extracted micro-goal."""

    id: str
    session_id: str
    context: list[Message]
    future: list[Message]
    target_info: list[str]
    decision: Decision
    error: str | None = None  # the extractor failed on this sample; it is retried when the command runs again


class ExtractSummary(BaseModel):
    samples: int
    extracted: int  # LM calls made by this invocation (continue samples)
    reused: int  # finished in an earlier, interrupted or completed, invocation
    stops: int
    failed: int


class _RenderedSample(BaseModel):
    id: str
    context: str
    future: str


def default_prompt(root: Path = Path(".")) -> Path:
    """The calibrated extractor prompt when one exists, else the baseline: what `extract` and the trainer use."""
    calibrated = root / "prompts" / "extractor.calibrated.yaml"
    return calibrated if calibrated.is_file() else root / "prompts" / "extractor.yaml"


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _read_done(paths: Iterable[Path]) -> dict[str, TrainingSample]:
    """Finished records from earlier invocations; a torn last line or a failed sample is not finished."""
    done: dict[str, TrainingSample] = {}
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = TrainingSample.model_validate_json(line)
            except ValidationError:
                continue
            if record.error is None:
                done[record.id] = record
    return done


def extract_one(program: dspy.Module, sample: Sample) -> TrainingSample:
    """The sample with its extracted target; a failure is recorded on it, never raised."""
    fields = {"id": sample.id, "session_id": sample.session_id, "context": sample.context, "future": sample.future,
              "decision": sample.decision}
    if sample.decision == "stop":
        return TrainingSample(**fields, target_info=[])
    rendered = _RenderedSample(id=sample.id, context=render(sample.context), future=render(sample.future))
    pred = EXTRACTOR.predict(program, rendered)
    return TrainingSample(**fields, target_info=pred.target_info or [], error=pred.error)


def extract_samples(samples: list[Sample], prompt: PromptFile, out: Path, *, show_progress: bool = True) -> ExtractSummary:
    """Extract targets for `samples` into `out` (JSONL), resuming from `<out>.partial` or a finished `out`."""
    partial = partial_path(out)
    by_id = {s.id: s for s in samples}
    done = {i: r for i, r in _read_done([out, partial]).items()
            if i in by_id and (r.context, r.future) == (by_id[i].context, by_id[i].future)}
    out.parent.mkdir(parents=True, exist_ok=True)
    # Rewrite the partial file with only finished records of these samples: drops a torn line and stale ones.
    write_atomic(partial, "".join(r.model_dump_json() + "\n" for r in done.values()))
    program = EXTRACTOR.build_program(prompt)
    todo = [s for s in samples if s.id not in done]
    records = dict(done)
    extracted = failed = 0
    with open(partial, "a", encoding="utf-8") as f:
        for sample in tqdm(todo, desc="extract", unit="sample", disable=not show_progress or not todo, dynamic_ncols=True):
            record = records[sample.id] = extract_one(program, sample)
            extracted += sample.decision == "continue"
            failed += record.error is not None
            f.write(record.model_dump_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
    write_atomic(out, "".join(json.dumps(records[s.id].model_dump(mode="json"), ensure_ascii=False) + "\n" for s in samples))
    partial.unlink(missing_ok=True)
    return ExtractSummary(samples=len(samples), extracted=extracted, reused=len(samples) - len(todo),
                          stops=sum(s.decision == "stop" for s in samples), failed=failed)
