"""ReMeDi (Yan et al., SIGIR 2022; MIT): Chinese online consultations with each doctor turn's actions annotated by hand.

One line per doctor turn:
  <|endoftext|> <|context|> <|user|> … <|system|> … <|endofcontext|> <|currentuser|> … <|endofcurrentuser|>
  <|intent|> … <|endofintent|> <|knowledge|> … <|endofknowledge|> <|action|> … <|endofaction|>
  <|response|> … <|endofresponse|> <|endoftext|>
The context is the consultation so far (<|user|> = patient, <|system|> = doctor), the current user message the
patient's, the response the doctor's. A line with an empty context starts a consultation (a blank line also separates
them in the dev file, but the context is what says so). Each later line's context must be the previous line's context
plus its patient message and response; when it is not, that is reported and a new session starts at the line (with
the turns from its patient message on: the earlier ones are not this file's lines, so they carry no actions).

Actions are separated by <|continue|>, each `Act slot value…` (`Inquire symptom 大便干燥`, `Inform time 康复时间 几个月`)
or a bare act (`Chitchat`, `QuestionAnswering`, `Other`, `Inquire symptom`); only Inquire, Recommend, Inform and
Diagnosis take a slot. Found in the dev file and handled: an empty action (`<|action|>  <|endofaction|>`, or empty
between separators) is no action; a known act inside an action starts another one (`Chitchat   Recommend precaution
注意卫生`: a lost separator); an action that repeats the one before it (`Chitchat   Chitchat`) is kept once; a second
word that is not a slot name (`Recommend 布洛芬 退热治疗`) is part of the value.

The labels mapped onto the project's (bench/remedi_actions.py checks the hindsight split and the micro-goal labeller against
them): a doctor turn with an Inquire action is `continue` (still asking, even if it also advises); else one that
diagnoses, recommends, informs or answers a question is `stop` (moved to advising); a turn with only Chitchat/Other or
no action has no label. An Inquire slot maps to a field of the micro-goal vocabulary (INQUIRY_FIELDS); `other`,
`precaution` and a bare Inquire map to none. The gold stop point is the "advice" stop rule (calibrator.expert_logs.logs.STOP_RULES)
applied to these labels instead of to question marks: the first `stop` turn after the last `continue` turn, unlabelled
turns skipped; none when the last labelled turn still asks.
"""

import re
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, model_validator

from calibrator.expert_logs.logs import Decision, LogError, LogProblem, LogRead, Message, Session, read_text

FIELDS = ("context", "currentuser", "action", "response")
ACTS = ("Inquire", "Recommend", "Inform", "Diagnosis", "QuestionAnswering", "Chitchat", "Other")
SLOTTED = ("Inquire", "Recommend", "Inform", "Diagnosis")
SLOT = re.compile(r"[a-z_]+")
CONTEXT_TURN = re.compile(r"<\|(user|system)\|>")
EMPTY_CONTEXT = re.compile(r"<\|context\|>\s*<\|endofcontext\|>")
ROLES = {"user": "user", "system": "assistant"}
ADVISING = ("Diagnosis", "Recommend", "Inform", "QuestionAnswering")
INQUIRY_FIELDS: dict[str, str] = {  # Inquire slot -> field of the primary-care prompt's `fields:`
    "symptom": "symptom", "temperature": "symptom", "time": "duration", "medicine": "current medication",
    "dose": "current medication", "check_item": "test results", "frequency": "frequency", "treatment": "previous treatment",
    "effect": "previous treatment", "disease_history": "medical history", "disease": "medical history",
    "range_body": "location", "degree": "severity", "pathogeny": "trigger",
}


class Action(BaseModel):
    """What a doctor turn does: the micro-goal (Inquire symptom) and what it is about (大便干燥)."""
    act: str
    slot: str = ""
    value: str = ""


class AnnotatedSession(BaseModel):
    """A consultation and, for each doctor message in order, the actions the annotators gave it."""
    session: Session
    actions: list[list[Action]]

    @model_validator(mode="after")
    def _one_list_per_doctor_turn(self) -> "AnnotatedSession":
        doctor_turns = sum(m.role == "assistant" for m in self.session.messages)
        if len(self.actions) != doctor_turns:
            raise ValueError(f"{len(self.actions)} action lists for {doctor_turns} doctor messages")
        return self


def parse_actions(text: str) -> list[Action]:
    """A doctor turn's action field as actions, the dev file's quirks mended (see above)."""
    actions: list[Action] = []
    for part in text.split("<|continue|>"):
        words = part.split()
        cuts = [i for i, word in enumerate(words) if i == 0 or word in ACTS] + [len(words)]  # a lost separator
        for act, *rest in (words[a:b] for a, b in zip(cuts, cuts[1:])):
            slot = rest.pop(0) if act in SLOTTED and rest and SLOT.fullmatch(rest[0]) else ""
            action = Action(act=act, slot=slot, value=" ".join(rest))
            if not actions or action != actions[-1]:
                actions.append(action)
    return actions


def turn_decision(actions: list[Action]) -> Decision | None:
    """The human label of a doctor turn as a split decision; None (no label) for chit-chat or nothing."""
    acts = {a.act for a in actions}
    if "Inquire" in acts:
        return "continue"
    return "stop" if acts & set(ADVISING) else None


def turn_fields(actions: list[Action]) -> set[str]:
    """The vocabulary fields a doctor turn asks about; slots with no field (`other`, `precaution`, none) are left out."""
    return {INQUIRY_FIELDS[a.slot] for a in actions if a.act == "Inquire" and a.slot in INQUIRY_FIELDS}


def gold_stop_turn(decisions: list[Decision | None]) -> int | None:
    """Index of the first `stop` turn after the last `continue` one (the "advice" rule on human labels), or None."""
    last = max((i for i, d in enumerate(decisions) if d == "continue"), default=-1)
    return next((i for i, d in enumerate(decisions) if i > last and d == "stop"), None)


def fields(line: str) -> dict[str, str] | str:
    """The tagged fields the reader needs, or what is wrong with the line."""
    found: dict[str, str] = {}
    for tag in FIELDS:
        m = re.search(rf"<\|{tag}\|>(.*?)<\|endof{tag}\|>", line, re.DOTALL)
        if m is None:
            return f"no <|{tag}|> … <|endof{tag}|>"
        found[tag] = m[1]
    if not found["response"].strip():
        return "the response (the doctor's turn) is empty"
    return found


def context_turns(context: str) -> list[tuple[str, str]]:
    """(role, text) of the earlier turns; text before the first tag has no role, so it never matches a session."""
    parts = CONTEXT_TURN.split(context)
    turns = [("", " ".join(parts[0].split()))] if parts[0].strip() else []
    turns += [(ROLES[parts[i]], " ".join(parts[i + 1].split())) for i in range(1, len(parts), 2)]
    return [(role, text) for role, text in turns if text]


@dataclass
class _Open:
    """The consultation being rebuilt: its messages so far, and the context its next line must carry."""

    first: int  # its first line: the session's id
    last: int = 0
    bad: bool = False
    messages: list[Message] = field(default_factory=list)
    actions: list[list[Action]] = field(default_factory=list)
    expected: list[tuple[str, str]] = field(default_factory=list)


def looks_like(first_line: str) -> bool:
    return "<|context|>" in first_line and "<|response|>" in first_line


def detect(path: Path) -> bool:
    """Only the first non-blank line is read: a corpus may be large."""
    if not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8-sig") as f:
            return looks_like(next((line for line in f if line.strip()), ""))
    except (OSError, UnicodeDecodeError):
        return False


def _read(path: Path) -> tuple[list[AnnotatedSession], list[LogProblem], int]:
    file, text = str(path), read_text(path)
    if not text.strip():
        raise LogError(f"{file}: the file is empty")
    if not looks_like(next(line for line in text.split("\n") if line.strip())):
        raise LogError(f"{file}: not a ReMeDi file: expected one doctor turn per line, <|context|> … <|response|> …")
    done: list[_Open] = []
    problems: list[LogProblem] = []
    current: _Open | None = None
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        found = fields(line)
        if isinstance(found, str):
            problems.append(LogProblem(file, number, f"{found}; session skipped"))
            if current is None or EMPTY_CONTEXT.search(line):  # else it belongs to the open session, as far as we know
                done.append(current := _Open(number))
            current.bad = True
            continue
        turns = context_turns(found["context"])
        if current is not None and current.bad and turns:
            continue  # the rest of a skipped session: its context cannot be checked against the bad line
        if current is None or not turns or turns != current.expected:
            if turns:
                where = f"line {current.last}" if current else "any earlier line"
                problems.append(LogProblem(file, number, f"its context does not continue {where}; a new session starts here"))
            done.append(current := _Open(number))
        patient, doctor = " ".join(found["currentuser"].split()), " ".join(found["response"].split())
        current.messages += [Message(role="user", content=patient)] if patient else []
        current.messages.append(Message(role="assistant", content=doctor))
        current.actions.append(parse_actions(found["action"]))
        current.expected = turns + [("user", patient)] * bool(patient) + [("assistant", doctor)]
        current.last = number
    sessions = [
        AnnotatedSession(session=Session(session_id=f"remedi-{s.first}", messages=s.messages), actions=s.actions)
        for s in done
        if not s.bad
    ]
    return sessions, problems, sum(s.bad for s in done)


def read_annotated(path: Path) -> tuple[list[AnnotatedSession], list[LogProblem]]:
    """Sessions with each doctor turn's annotated actions; a malformed line skips its session."""
    sessions, problems, _ = _read(path)
    return sessions, problems


def read(path: Path) -> LogRead:
    sessions, problems, skipped = _read(path)
    return LogRead([s.session for s in sessions], problems, skipped)
