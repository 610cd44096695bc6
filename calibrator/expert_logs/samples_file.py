"""Sample files in either shape a Learn-to-Ask run meets: ours (`calibrator extract`'s samples.jsonl) and the public
reference implementation's processed samples (`cid, session_id, diagn, messages, remaining_chat, decision_truth,
info_truth`), read line by line with the line and field named on a bad one, and written in either shape.

The reference's `info_truth` is one comma-joined string of `Field: value` items; `remaining_chat` is the future as
messages or as text. Both are parsed into ours (items, messages) and their original text is kept on the sample, so a
file read and written back in the reference shape comes out as it went in: the kept text is written whenever it
still parses to the sample's items and messages, and the parsed form is written otherwise (a target edited since)."""

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError, field_validator

from calibrator.expert_logs.logs import SPEAKER_ROLES, Decision, Message, TargetScope

SampleFormat = Literal["ours", "reference"]
FORMATS: dict[str, str] = {
    "ours": "samples.jsonl from `calibrator extract` (id, session_id, context, future, target_info, decision)",
    "reference": "the Learn-to-Ask reference's processed samples (cid, session_id, diagn, messages, remaining_chat, "
                 "decision_truth, info_truth)",
}
REFERENCE_KEYS = ("cid", "session_id", "diagn", "messages", "remaining_chat", "decision_truth", "info_truth")
# Our provenance, carried on a reference-shaped line as extra keys (a reader of the reference's shape ignores them),
# so `calibrator extract --format reference` resumes like the default shape does. A line without `target_scope` holds
# the reference's own targets (rest); ours are stamped `next` when they are.
PROVENANCE_KEYS = ("error", "prompt_sha256", "lm", "session_index", "target_scope")
# An item starts where a `Field:` label does: `Symptom: sore throat, Symptom quality: thick, yellow` is two items,
# the comma inside the second value is not a boundary because no label follows it.
ITEM_BOUNDARY = re.compile(r"\s*[,，;；]\s*(?=[^\s,，;；:：][^,，;；:：]{0,40}[:：])")
SPEAKER_LINE = re.compile(r"^\s*([A-Za-z]+|[\u4e00-\u9fff]{2})\s*[:：]\s?(.*)$")
CHINESE_SPEAKERS = {"患者": "user", "病人": "user", "用户": "user", "顾客": "user", "医生": "assistant", "药师": "assistant"}


class TrainingSample(BaseModel):
    """One line of samples.jsonl: a hindsight sample and its extracted micro-goal."""

    id: str
    session_id: str
    context: list[Message]
    future: list[Message]
    target_info: list[str]
    decision: Decision
    error: str | None = None  # extraction failed on this sample; it is retried when the command runs again
    prompt_sha256: str | None = None  # PromptFile.content_sha256() of the prompt that made it; None: made before stamping
    lm: str | None = None  # the LM spec that made it (`str(LMSpec)`), e.g. "local"
    session_index: int | None = None  # the session's place among the log's valid sessions: merges shards in log order
    target_scope: TargetScope | None = None  # what target_info covers (calibrator.expert_logs.logs.TARGET_SCOPES); None: next
    diagn: str | None = None  # the reference's diagnosis field, kept for its round trip
    source_info_truth: str | None = None  # the reference's info_truth as read, written back while target_info matches it
    source_remaining_text: str | None = None  # the reference's remaining_chat when it was text, likewise


class SamplesFileError(ValueError):
    """A samples file that cannot be read as either shape: the message names the file, the line and the field."""


class ReferenceSample(BaseModel):
    """One processed sample of the reference implementation, its fields as the reference names them."""

    cid: str
    session_id: str
    diagn: str | None = None
    messages: list[Message]
    remaining_chat: list[Message] | str
    decision_truth: Decision
    info_truth: str = ""

    @field_validator("cid", "session_id", mode="before")
    @classmethod
    def _text_id(cls, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise ValueError(f"must be a non-empty string or integer, got {value!r}")
        return str(value).strip()

    @field_validator("info_truth", mode="before")
    @classmethod
    def _info(cls, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, list):  # some ports keep the items as a list
            return ", ".join(str(v) for v in value)
        if not isinstance(value, str):
            raise ValueError(f"must be text (`Field: value, Field: value`), got {value!r}")
        return value


def parse_info_truth(text: str) -> list[str]:
    """The reference's `Field: value, Field: value` as items; a value's own commas stay inside it."""
    return [item for part in ITEM_BOUNDARY.split(text.strip()) if (item := " ".join(part.split()).strip(" ,.;"))]


def join_info_truth(items: list[str]) -> str:
    return ", ".join(items)


def parse_chat_text(text: str) -> list[Message]:
    """`user: …` / `assistant: …` lines (or patient / doctor / pharmacist labels, or 患者 / 医生 / 药师) as messages; an
    unlabelled line continues the message before it. Text with no label at all gives no messages."""
    messages: list[dict[str, str]] = []
    for line in text.splitlines():
        match = SPEAKER_LINE.match(line)
        role = (SPEAKER_ROLES.get(match.group(1).lower()) or CHINESE_SPEAKERS.get(match.group(1))) if match else None
        if role is not None:
            messages.append({"role": role, "content": match.group(2)})
        elif messages and line.strip():
            messages[-1]["content"] += "\n" + line
    return [Message(**m) for m in messages if m["content"].strip()]


def chat_text(messages: list[Message]) -> str:
    return "\n".join(f"{m.role}: {m.content}" for m in messages)


def from_reference(ref: ReferenceSample, extras: dict[str, Any] | None = None) -> TrainingSample:
    text = ref.remaining_chat if isinstance(ref.remaining_chat, str) else None
    future = parse_chat_text(text) if text is not None else ref.remaining_chat
    return TrainingSample(id=ref.cid, session_id=ref.session_id, context=ref.messages, future=future,
                          target_info=parse_info_truth(ref.info_truth), decision=ref.decision_truth, diagn=ref.diagn,
                          source_info_truth=ref.info_truth, source_remaining_text=text,
                          **({"target_scope": "rest"} | (extras or {})))


def to_reference(sample: TrainingSample) -> dict[str, Any]:
    """The reference's seven keys, then our provenance keys that are set."""
    info = sample.source_info_truth
    if info is None or parse_info_truth(info) != sample.target_info:
        info = join_info_truth(sample.target_info)
    remaining: list[dict[str, str]] | str = [m.model_dump() for m in sample.future]
    if sample.source_remaining_text is not None and parse_chat_text(sample.source_remaining_text) == sample.future:
        remaining = sample.source_remaining_text
    record = {"cid": sample.id, "session_id": sample.session_id, "diagn": sample.diagn,
              "messages": [m.model_dump() for m in sample.context], "remaining_chat": remaining,
              "decision_truth": sample.decision, "info_truth": info}
    provenance = {k: v for k in PROVENANCE_KEYS if (v := getattr(sample, k)) is not None}
    scope = provenance.pop("target_scope", None) or "next"  # a sample that does not say was made before the option: next
    return record | provenance | ({} if scope == "rest" else {"target_scope": scope})  # the reference's own shape means rest


def line_format(record: dict[str, Any]) -> SampleFormat | None:
    if "cid" in record or "decision_truth" in record or "info_truth" in record:
        return "reference"
    if "target_info" in record or "future" in record:
        return "ours"
    return None


def _explain(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        where = ".".join(str(p if isinstance(p, str) else p + 1) for p in err["loc"]) or "the line"
        body = "is missing" if err["type"] == "missing" else str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {body}")
    return "; ".join(parts)


def parse_line(line: str, where: str) -> TrainingSample:
    """One JSON line of either shape as a sample; SamplesFileError naming `where` and the field otherwise."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise SamplesFileError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise SamplesFileError(f"{where}: expected a JSON object, got {type(record).__name__}")
    shape = line_format(record)
    if shape is None:
        raise SamplesFileError(f"{where}: neither sample shape (keys: {', '.join(record) or 'none'}); this reads "
                               + "; or ".join(FORMATS.values()))
    try:
        if shape == "reference":
            extras = {k: record[k] for k in PROVENANCE_KEYS if record.get(k) is not None}
            return from_reference(ReferenceSample.model_validate({k: record.get(k) for k in REFERENCE_KEYS
                                                                  if k in record}), extras)
        return TrainingSample.model_validate(record)
    except ValidationError as e:
        raise SamplesFileError(f"{where}: not a sample in {FORMATS[shape]}: {_explain(e)}") from None


def read_samples(path: Path) -> list[TrainingSample]:
    """Every sample of a file of either shape (lines may mix them); SamplesFileError on the first bad line."""
    if not path.is_file():
        raise SamplesFileError(f"{path}: no such file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise SamplesFileError(f"{path}: not UTF-8 text (byte {e.start})") from None
    return [parse_line(line, f"{path}, line {n}") for n, line in enumerate(text.split("\n"), start=1) if line.strip()]


def sample_lines(samples: Iterable[TrainingSample], shape: SampleFormat) -> Iterator[str]:
    for sample in samples:
        record = to_reference(sample) if shape == "reference" else sample.model_dump(mode="json", exclude_none=True)
        yield json.dumps(record, ensure_ascii=False) + "\n"


def reshape_line(line: str, shape: SampleFormat) -> str:
    """One line of either shape written in `shape`."""
    return next(sample_lines([parse_line(line, "a sample line")], shape))
