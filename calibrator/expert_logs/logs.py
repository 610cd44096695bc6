"""Expert dialogue logs: pharmacist-patient sessions read, validated and cut into Learn-to-Ask samples.

A bad line or row skips only its own session and is reported with its line number, so one typo
does not throw away a whole log. Hindsight segmentation turns each pharmacist run that answers the
patient into a sample: the full history so far, and what the expert actually did next.
"""

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError, field_validator

Role = Literal["user", "assistant"]  # user = patient, assistant = pharmacist
Decision = Literal["continue", "stop"]
PATIENTS = ("patient", "user", "customer", "client")
PHARMACISTS = ("pharmacist", "assistant", "doctor", "clinician", "expert", "agent")
SPEAKER_ROLES: dict[str, Role] = {**dict.fromkeys(PATIENTS, "user"), **dict.fromkeys(PHARMACISTS, "assistant")}
TRANSCRIPT_COLUMNS = ("dialogue_id", "turn", "speaker", "text")
LABELS = {"user": "patient", "assistant": "pharmacist"}  # the gold sets' `context` speakers


class Message(BaseModel):
    role: Role
    content: str

    @field_validator("role", mode="before")
    @classmethod
    def _role(cls, value: Any) -> str:
        if value not in ("user", "assistant"):
            raise ValueError(f"role must be 'user' or 'assistant', got {value!r}")
        return value

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"content must be text, got {value!r}")
        if not value.strip():
            raise ValueError("content is empty")
        return value.strip()


class Session(BaseModel):
    session_id: str
    diagn: str | None = None
    messages: list[Message]

    @field_validator("session_id", mode="before")
    @classmethod
    def _session_id(cls, value: Any) -> str:
        if isinstance(value, bool) or not isinstance(value, str | int) or not str(value).strip():
            raise ValueError(f"session_id must be a non-empty string or integer, got {value!r}")
        return str(value).strip()

    @field_validator("messages")
    @classmethod
    def _messages(cls, value: list[Message]) -> list[Message]:
        if not value:
            raise ValueError("messages is empty: a session needs at least one message")
        return value


class Sample(BaseModel):
    """One decision point: given `context`, the expert did `future` (and asked on, or stopped)."""

    id: str
    session_id: str
    context: list[Message]
    future: list[Message]
    decision: Decision


@dataclass(frozen=True)
class LogProblem:
    file: str
    line: int | None
    message: str

    def __str__(self) -> str:
        return self.file + (f", line {self.line}" if self.line else "") + f": {self.message}"


@dataclass(frozen=True)
class LogRead:
    sessions: list[Session]
    problems: list[LogProblem]
    skipped: int  # sessions or dialogues left out because of a problem


class LogError(Exception):
    """The whole file cannot be read: nothing in it is usable."""


def _explain(error: ValidationError) -> str:
    """Pydantic's errors as one sentence that names the field and, for a message, its 1-based position."""
    parts = []
    for err in error.errors():
        loc = err["loc"]
        where = f"message {loc[1] + 1}: " if len(loc) > 1 and loc[0] == "messages" and isinstance(loc[1], int) else ""
        field = loc[-1] if loc and isinstance(loc[-1], str) else None
        if err["type"] == "missing":
            body = f"{field} is missing"
        elif err["type"] == "value_error" or field is None:
            body = str(err["msg"]).removeprefix("Value error, ")
        else:
            body = f"{field}: {err['msg']}"
        parts.append(where + body)
    return "; ".join(parts)


def _json_lines(text: str) -> list[tuple[int, dict | str]]:
    """(line number, object or what is wrong with the line) for each non-blank line."""
    out: list[tuple[int, dict | str]] = []
    # split on \n only: str.splitlines would also split on U+2028, which JSON allows unescaped in strings.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            out.append((number, f"not valid JSON ({e.msg} at column {e.colno})"))
            continue
        out.append((number, obj if isinstance(obj, dict) else f"expected a JSON object, got {type(obj).__name__}"))
    return out


def _csv_rows(file: str, text: str) -> list[tuple[int, dict | str]]:
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    missing = [c for c in TRANSCRIPT_COLUMNS if c not in header]
    if missing:
        raise LogError(
            f"{file}: not a transcript CSV: expected columns {', '.join(TRANSCRIPT_COLUMNS)} (extra columns are ignored); "
            f"missing {', '.join(missing)} in header {', '.join(header)!r}"
        )
    # Numbered like a spreadsheet (header = row 1); a quoted multi-line cell is one row.
    rows = ((n, dict(zip(header, values))) for n, values in enumerate(reader, start=2))
    return [(n, record) for n, record in rows if any(v.strip() for v in record.values())]


def _read_realmedconv(file: str, rows: list[tuple[int, dict | str]]) -> LogRead:
    sessions: list[Session] = []
    problems: list[LogProblem] = []
    seen: dict[str, int] = {}
    for number, obj in rows:
        try:
            if isinstance(obj, str):
                raise ValueError(obj)
            session = Session.model_validate(obj)
            if session.session_id in seen:
                raise ValueError(f"duplicate session_id {session.session_id!r} (first on line {seen[session.session_id]})")
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            reason = _explain(e) if isinstance(e, ValidationError) else str(e)
            problems.append(LogProblem(file, number, f"{reason}; session skipped"))
            continue
        seen[session.session_id] = number
        sessions.append(session)
    return LogRead(sessions, problems, skipped=len(problems))


def _turn(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _read_transcript(file: str, rows: list[tuple[int, dict | str]]) -> LogRead:
    """Group turn rows by dialogue; a bad row drops its whole dialogue, since a gap would change what follows."""
    dialogues: dict[str, dict[int, tuple[int, Message]]] = {}
    bad: set[str] = set()
    problems: list[LogProblem] = []
    for number, record in rows:
        if isinstance(record, str):
            problems.append(LogProblem(file, number, f"{record}; its dialogue is unknown, so the line is dropped"))
            continue
        cell = {str(k).strip().lower(): "" if v is None else str(v).strip() for k, v in record.items()}
        dialogue_id, turn, text = cell.get("dialogue_id", ""), _turn(cell.get("turn", "")), cell.get("text", "")
        role = SPEAKER_ROLES.get(cell.get("speaker", "").lower())
        issues = [] if dialogue_id else ["dialogue_id is empty"]
        if turn is None:
            issues.append(f"turn must be an integer, got {cell.get('turn', '')!r}")
        if role is None:
            issues.append(
                f"unknown speaker {cell.get('speaker', '')!r}: use a patient ({', '.join(PATIENTS)}) "
                f"or a pharmacist ({', '.join(PHARMACISTS)})"
            )
        if not text:
            issues.append("text is empty")
        turns = dialogues.setdefault(dialogue_id, {})
        if turn in turns:
            issues.append(f"turn {turn} repeats line {turns[turn][0]} of dialogue {dialogue_id!r}")
        if issues:
            skip = f"; dialogue {dialogue_id!r} skipped" if dialogue_id else "; its dialogue is unknown, so the row is dropped"
            problems.append(LogProblem(file, number, "; ".join(issues) + skip))
            bad.add(dialogue_id)
            continue
        turns[turn] = (number, Message(role=role, content=text))
    sessions = [
        Session(session_id=did, messages=[message for _, (_, message) in sorted(turns.items())])
        for did, turns in dialogues.items()
        if did not in bad
    ]
    return LogRead(sessions, problems, skipped=len(bad - {""}))


def _check_file(path: Path) -> str:
    file = str(path)
    if not path.is_file():
        raise LogError(f"{file}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".json", ".csv"):
        raise LogError(f"{file}: unsupported file type {suffix!r}: use .jsonl, .json or .csv")
    return suffix


def _decode(file: str, data: bytes, offset: int = 0) -> str:
    try:
        return data.decode("utf-8-sig" if offset == 0 else "utf-8")
    except UnicodeDecodeError as e:
        raise LogError(f"{file}: not UTF-8 text (byte {offset + e.start}); save it as UTF-8") from None


def read_text(path: Path) -> str:
    """A whole log or corpus file as text; LogError when it is missing or not UTF-8."""
    if not path.is_file():
        raise LogError(f"{path}: no such file")
    return _decode(str(path), path.read_bytes())


class LogStream:
    """A log's sessions, read lazily. RealMedConv JSONL (one session per line) streams line by line, so memory stays
    flat whatever the file's size; a transcript (a dialogue's turns may be anywhere in the file) is read whole.
    `problems` and `skipped` fill in as the sessions are read. The one thing that grows with the log is the
    duplicate-id check: an 8-byte digest per session (about 100 bytes with the dict's overhead, 20 MB a million)."""

    def __init__(self, path: Path) -> None:
        self.path, self.file = path, str(path)
        suffix = _check_file(path)
        with open(path, "rb") as f:
            first_line = next((line for line in f if line.strip(b" \t\r\n\xef\xbb\xbf")), b"")
        if not first_line:
            raise LogError(f"{self.file}: the file is empty")
        self.problems: list[LogProblem] = []
        self.skipped = 0
        self.streaming = False
        if suffix == ".csv":
            return
        rows = _json_lines(_decode(self.file, first_line).strip())
        first = next((obj for _, obj in rows if isinstance(obj, dict)), None)
        if first is None:  # the first line is not an object: the whole-file reader says what is wrong, line by line
            return
        if {"cid", "decision_truth", "info_truth"} & first.keys():
            raise LogError(
                f"{self.file}: processed samples in the Learn-to-Ask reference's shape (cid, messages, remaining_chat, "
                f"decision_truth, info_truth), not a log of whole sessions: train on them as they are with "
                f"`python -m train run --samples {self.file}` (or evaluate with `python -m train eval --samples`)"
            )
        if "messages" in first:
            self.streaming = True
        elif "dialogue_id" not in first:
            raise LogError(
                f"{self.file}: unrecognised format: expected one JSON object per line, either a RealMedConv session "
                f"(session_id, messages) or a transcript turn ({', '.join(TRANSCRIPT_COLUMNS)})"
            )

    def lines(self) -> int:
        """Non-blank lines in the file (a quick byte count): the progress bar's total for a streamed log."""
        with open(self.path, "rb") as f:
            return sum(1 for line in f if line.strip())

    def __iter__(self) -> Iterator[Session]:
        if not self.streaming:
            read = _read_whole(self.path)
            self.problems, self.skipped = read.problems, read.skipped
            yield from read.sessions
            return
        seen: dict[bytes, int] = {}
        offset = 0
        with open(self.path, "rb") as f:
            for number, raw in enumerate(f, start=1):  # binary lines split on \n only, as JSON Lines does
                try:
                    text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    text, obj = "", f"not UTF-8 text (byte {offset + e.start}); save the file as UTF-8"
                offset += len(raw)
                if text and not text.strip():
                    continue
                if text:
                    [(_, obj)] = _json_lines(text.rstrip("\r\n"))
                try:
                    if isinstance(obj, str):
                        raise ValueError(obj)
                    session = Session.model_validate(obj)
                    digest = hashlib.blake2b(session.session_id.encode(), digest_size=8).digest()
                    if digest in seen:
                        raise ValueError(f"duplicate session_id {session.session_id!r} (first on line {seen[digest]})")
                except ValueError as e:  # pydantic's ValidationError is a ValueError
                    reason = _explain(e) if isinstance(e, ValidationError) else str(e)
                    self.problems.append(LogProblem(self.file, number, f"{reason}; session skipped"))
                    self.skipped += 1
                    continue
                seen[digest] = number
                yield session


def _read_whole(path: Path) -> LogRead:
    file = str(path)
    suffix = _check_file(path)
    text = _decode(file, path.read_bytes())
    if not text.strip():
        raise LogError(f"{file}: the file is empty")
    if suffix == ".csv":
        return _read_transcript(file, _csv_rows(file, text))
    rows = _json_lines(text)
    first = next((obj for _, obj in rows if isinstance(obj, dict)), {})
    if "messages" in first:
        return _read_realmedconv(file, rows)
    if "dialogue_id" in first:
        return _read_transcript(file, rows)
    raise LogError(
        f"{file}: unrecognised format: expected one JSON object per line, either a RealMedConv session "
        f"(session_id, messages) or a transcript turn ({', '.join(TRANSCRIPT_COLUMNS)})"
    )


def read_logs(path: Path) -> LogRead:
    """Read a RealMedConv JSONL log or a plain transcript (JSONL or CSV) whole; raise LogError if the file is unusable."""
    stream = LogStream(path)
    sessions = list(stream)
    return LogRead(sessions, stream.problems, stream.skipped)


StopRule = Literal["end", "advice"]
STOP_RULES: dict[str, str] = {
    "end": "the expert's last run is the stop point (a pharmacy chat ends with the recommendation)",
    "advice": "the expert's first run after their last question (not counting checks such as 'Does that make sense?') "
              "is the stop point (the move from asking to advising or diagnosing; consultations go on after it with "
              "explanations, advice and thanks)",
}
ContextCut = Literal["history", "round"]
CONTEXT_CUTS: dict[str, str] = {
    "history": "the whole dialogue before the cut (the paper's definition; the default)",
    "round": "only the patient's last round of messages before the cut (one version of the reference code)",
}
TargetScope = Literal["next", "rest"]
TARGET_SCOPES: dict[str, str] = {
    "next": "what the expert's next run asked, with the patient's reply as value (ours: the sharpest signal of what to "
            "ask now)",
    "rest": "everything the patient reveals in the rest of the dialogue (the Learn-to-Ask reference's micro-goal: a "
            "question about any of it counts)",
}
QUESTION_SENTENCE = re.compile(r"[^.!?。！？]*[?？]")
PARTICLE_CLAUSE = re.compile(r"[吗呢么](?=[\s，。,.！!~…]*$|[\s，。,.！!~…]+)")
# Questions that close advice instead of seeking information: a tag (`…, OK?`, `All right?`), a check of
# understanding (`Does that make sense?`, `How's that sound?`), an invitation to ask (`Any questions for me?`) or a
# request to repeat (`Could you say that again?`).
# GPs end their advice with them, so counting them would put the stop point at the goodbye (PriMock57: 97% of the
# way through a consultation, median, before this was added).
TAG = r"(?:^|,\s*)(?:ok|okay|all right|alright|right|yeah|yes|good|great|fine|sure)"
CHECK = re.compile(TAG + r"\W*$|\bmake sense\b|\b(?:is|was|are) (?:that|this|it|everything|all that|the [\w ]+?) "
                   r"(?:clear|ok|okay|all right|alright|fine)\b|\bunderstand\b|\bany (?:other |more |further )?questions\b|"
                   r"\bquestions? (?:for|to ask) me\b|\b(?:like|want) to ask\b|\b(?:that|this)(?: all)? sounds?\b|"
                   r"\b(?:say|repeat) that\b|\bpardon\b")
FILLER = re.compile(r"^(?:[\W_]|\b(?:um+|uh+|er+|so|and|but|well)\b)+")


def asks(text: str) -> bool:
    """Whether an expert turn asks the patient something: a question (up to `?` or `？`) that is not a check closing
    the advice (CHECK), or a Chinese question particle ending a clause (ReMeDi's doctors often drop the mark:
    `你打了疫苗了吗`). Deliberately simple: it is measured against ReMeDi's human action labels in
    bench/remedi_actions.py, not tuned on them."""
    questions = (FILLER.sub("", q.group().strip().lower()) for q in QUESTION_SENTENCE.finditer(text))
    return any(not CHECK.search(q) for q in questions) or bool(PARTICLE_CLAUSE.search(text))


def segment(session: Session, stop: StopRule = "end", context_cut: ContextCut = "history") -> list[Sample]:
    """One sample per maximal expert run that follows a patient message (an opening greeting answers nobody).

    stop="end": every run but the last is `continue`, a last run with no patient message after it is `stop`.
    stop="advice": runs up to the last one that asks are `continue`; the run after it is `stop` and the runs after
    that are dropped (the expert is advising by then, so what they do is not a decision to ask). A session whose
    last run still asks has no stop sample; one with no asking run stops at its first run.
    context_cut="round" keeps only the patient's run right before each cut as its context (CONTEXT_CUTS)."""
    runs: list[tuple[int, int]] = []
    rounds: list[int] = []  # where the patient's run before each expert run starts
    messages, start = session.messages, 0
    for role, run in groupby(messages, key=lambda m: m.role):
        end = start + len(list(run))
        # Runs alternate roles, so an assistant run not at the start has a user message right before it.
        if role == "assistant" and start > 0:
            runs.append((start, end))
        elif role == "user":
            rounds.append(start)
        start = end
    if stop == "end":
        decisions = ["continue" if end < len(messages) else "stop" for _, end in runs]
    else:
        asking = [i for i, (a, b) in enumerate(runs) if any(asks(m.content) for m in messages[a:b])]
        last = asking[-1] if asking else -1
        decisions = ["continue"] * (last + 1) + ["stop"] * (last + 1 < len(runs))
    def first(a: int) -> int:
        return max(r for r in rounds if r < a) if context_cut == "round" else 0

    return [Sample(id=f"{session.session_id}_{i}", session_id=session.session_id, context=messages[first(a):a],
                   future=messages[a:], decision=decision) for i, ((a, _), decision) in enumerate(zip(runs, decisions))]


def segment_all(sessions: Iterable[Session], stop: StopRule = "end", context_cut: ContextCut = "history") -> list[Sample]:
    return [sample for session in sessions for sample in segment(session, stop, context_cut)]


def render(messages: list[Message]) -> str:
    """`patient: …` / `pharmacist: …`, one turn per line, as the gold sets write `context`."""
    return "\n".join(f"{LABELS[m.role]}: {' '.join(p.strip() for p in m.content.splitlines() if p.strip())}" for m in messages)
