"""Training targets from expert logs: segment every session, run the extractor on every sample, write JSONL.

Resumable: each finished sample is appended (and fsynced) to `<out>.partial` as it completes; a run
started again reads what is there, drops a line cut short by a crash, and only does the rest. The
output file itself appears in one rename at the end, in sample order, so it is never truncated.
Every record names the prompt (content sha256) and LM that made it; only records made by the same prompt and
LM are reused, any other is extracted again. A `stop` sample needs no LM call: by definition the pharmacist
asked nothing more.
"""

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import dspy
from pydantic import BaseModel, ValidationError
from tqdm import tqdm

from calibrator.components.extractor import EXTRACTOR
from calibrator.lm.spec import LMSpec
from calibrator.logs import Decision, Message, Sample, render
from calibrator.prompt import PromptFile, write_atomic

COMPONENT = EXTRACTOR  # what `extract` runs over the logs


class TrainingSample(BaseModel):
    """One line of samples.jsonl: a hindsight sample and its extracted micro-goal."""

    id: str
    session_id: str
    context: list[Message]
    future: list[Message]
    target_info: list[str]
    decision: Decision
    error: str | None = None  # the extractor failed on this sample; it is retried when the command runs again
    prompt_sha256: str | None = None  # PromptFile.content_sha256() of the prompt that made it; None: made before stamping
    lm: str | None = None  # the LM spec that made it (`str(LMSpec)`), e.g. "local"


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


def default_prompt(root: Path = Path(".")) -> Path:
    """The calibrated extractor prompt when one exists, else the baseline: what `extract` and the trainer use."""
    calibrated = root / "prompts" / "extractor.calibrated.yaml"
    return calibrated if calibrated.is_file() else root / "prompts" / "extractor.yaml"


def partial_path(out: Path) -> Path:
    return out.with_name(out.name + ".partial")


def _read_finished(paths: Iterable[Path]) -> Iterator[TrainingSample]:
    """Finished records from earlier invocations; a torn last line or a failed sample is not finished."""
    for path in paths:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = TrainingSample.model_validate_json(line)
            except ValidationError:
                continue
            if record.error is None:
                yield record


def reusable(records: Iterable[TrainingSample], samples: list[Sample], made_by: MadeBy) -> tuple[dict[str, TrainingSample], set[str]]:
    """Earlier records that can stand for `samples` (same context and future, made by this prompt and LM), and
    the ids of samples whose only earlier records were made by another prompt or LM (to be re-extracted)."""
    by_id = {s.id: s for s in samples}
    done: dict[str, TrainingSample] = {}
    stale: set[str] = set()
    for record in records:
        sample = by_id.get(record.id)
        if sample is None or (record.context, record.future) != (sample.context, sample.future):
            continue
        if made_by.made(record):
            done[record.id] = record
        else:
            stale.add(record.id)
    return done, stale - done.keys()


def extract_one(program: dspy.Module, sample: Sample) -> TrainingSample:
    """The sample with its extracted target; a failure is recorded on it, never raised."""
    fields = {"id": sample.id, "session_id": sample.session_id, "context": sample.context, "future": sample.future,
              "decision": sample.decision}
    if sample.decision == "stop":
        return TrainingSample(**fields, target_info=[])
    rendered = _RenderedSample(id=sample.id, context=render(sample.context), future=render(sample.future))
    pred = EXTRACTOR.predict(program, rendered)
    return TrainingSample(**fields, target_info=pred.target_info or [], error=pred.error)


def extract_samples(samples: list[Sample], prompt: PromptFile, lm: LMSpec, out: Path, *, show_progress: bool = True) -> ExtractSummary:
    """Extract targets for `samples` into `out` (JSONL) with `prompt` on `lm` (the LM in the current dspy
    context), resuming from `<out>.partial` or a finished `out` only where the same prompt and LM made the record."""
    partial = partial_path(out)
    made_by = MadeBy.of(prompt, lm)
    done, stale = reusable(_read_finished([out, partial]), samples, made_by)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Rewrite the partial file with only reusable records of these samples: drops a torn line and stale ones.
    write_atomic(partial, "".join(r.model_dump_json() + "\n" for r in done.values()))
    program = EXTRACTOR.build_program(prompt)
    todo = [s for s in samples if s.id not in done]
    records = dict(done)
    extracted = reextracted = failed = 0
    with open(partial, "a", encoding="utf-8") as f:
        for sample in tqdm(todo, desc="extract", unit="sample", disable=not show_progress or not todo, dynamic_ncols=True):
            record = records[sample.id] = extract_one(program, sample).model_copy(update=made_by.model_dump())
            extracted += sample.decision == "continue"
            reextracted += sample.decision == "continue" and sample.id in stale
            failed += record.error is not None
            f.write(record.model_dump_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
    write_atomic(out, "".join(json.dumps(records[s.id].model_dump(mode="json"), ensure_ascii=False) + "\n" for s in samples))
    partial.unlink(missing_ok=True)
    return ExtractSummary(samples=len(samples), extracted=extracted, reextracted=reextracted, reused=len(samples) - len(todo),
                          stops=sum(s.decision == "stop" for s in samples), failed=failed)
