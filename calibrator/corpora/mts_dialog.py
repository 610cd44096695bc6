"""MTS-Dialog (Ben Abacha et al., EACL 2023; CC BY 4.0): doctor-patient dialogues, one per CSV row, as expert logs.

Columns `ID, section_header, section_text, dialogue`; only `ID` and `dialogue` are read. The dialogue cell holds one
utterance per line, `Speaker: text`. Speaker labels found in the four files, and their roles:

  Doctor, Doctor_2 (a second doctor), Docotr_2 (typo)            assistant  the clinicians, the experts here
  Guest_clinician, Guest_clinican (typo)                         assistant  another clinician (a nurse, an assistant)
  Patient                                                        user
  Guest_family, Guest_family_1, Guest_family_2, Guest_family2,   user       family speaking with or for the patient
  Gest_family (typo)

Labels are matched ignoring case, a leading space or stray quote (`"Doctor:` once) and a trailing number, so
Doctor_3 or Guest_family_3 would be read too; any other `Word:` opening a line is an unknown speaker. Also found:
  - two utterances on one line (`Patient: No. Doctor: Any hallucinations?`, 3 lines): a known label after a sentence's
    end (. ? !) starts a new utterance;
  - `Guest_family. Hello. I'm his wife.`: a known label followed by a full stop instead of a colon;
  - `Yes, I am, Doctor:` (a label after a comma) is not a new utterance;
  - a line with no label (`Sp 3`, once) continues the previous utterance; a line of punctuation only (`.`, once) is
    dropped; blank lines are ignored;
  - the training set writes its cells' line breaks as CRLF, the others as LF.
A row with an empty dialogue, an unknown speaker, text before the first speaker, or no clinician (doctor or guest
clinician) is reported with its row number (header = row 1) and skipped.
"""

import csv
import io
import re
from pathlib import Path

from calibrator.expert_logs.logs import LogError, LogProblem, LogRead, Message, Session, read_text

ROLES = {
    "doctor": "assistant",
    "docotr": "assistant",
    "guest_clinician": "assistant",
    "guest_clinican": "assistant",
    "patient": "user",
    "guest_family": "user",
    "gest_family": "user",
}
KNOWN = "|".join(ROLES)
# A known label opening a line: `Doctor:`, ` Patient:`, `"Doctor:`, `Guest_family_2:`, `Guest_family.`
LABELLED = re.compile(rf'\s*"?(?P<label>(?:{KNOWN})(?:_?\d+)?)\s*[:.]\s*(?P<text>.*)', re.IGNORECASE | re.DOTALL)
UNKNOWN = re.compile(r'\s*"?(?P<label>[A-Za-z][A-Za-z0-9_]{0,29})\s*:')
INLINE = re.compile(rf"(?<=[.?!])\s+(?=(?:{KNOWN})(?:_?\d+)?\s*:)", re.IGNORECASE)
COLUMNS = ("id", "dialogue")


def role_of(label: str) -> str:
    return ROLES[re.sub(r"_?\d+$", "", label.lower())]


def utterances(dialogue: str) -> tuple[list[Message], list[str]]:
    """The cell's messages in order, and what is wrong with it (any issue skips the row)."""
    turns: list[tuple[str, list[str]]] = []
    issues: list[str] = []
    for line in (part for raw in re.split(r"\r\n|\r|\n", dialogue) for part in INLINE.split(raw)):
        if not any(ch.isalnum() for ch in line):
            continue
        if m := LABELLED.fullmatch(line):
            turns.append((role_of(m["label"]), [m["text"]]))
        elif m := UNKNOWN.match(line):
            issues.append(f"unknown speaker {m['label']!r}: known are Doctor, Patient, Guest_family, Guest_clinician")
        elif turns:
            turns[-1][1].append(line)
        else:
            issues.append(f"text before the first speaker label: {' '.join(line.split())[:60]!r}")
    messages = [Message(role=role, content=text) for role, parts in turns if (text := " ".join(" ".join(parts).split()))]
    if not dialogue.strip():
        issues.append("dialogue is empty")
    elif not issues and not any(m.role == "assistant" for m in messages):
        issues.append("no doctor or clinician speaks")
    return messages, issues


def header_of(path: Path) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [h.strip().lower() for h in next(csv.reader(f), [])]


def detect(path: Path) -> bool:
    if path.suffix.lower() != ".csv" or not path.is_file():
        return False
    try:
        return all(c in header_of(path) for c in COLUMNS)
    except (OSError, UnicodeDecodeError, csv.Error):
        return False


def read(path: Path) -> LogRead:
    """One session per row, session_id = the row's ID; a bad row skips only itself."""
    file, text = str(path), read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""))
    header = [h.strip().lower() for h in next(reader, [])]
    if missing := [c for c in COLUMNS if c not in header]:
        raise LogError(
            f"{file}: not an MTS-Dialog CSV: expected columns ID and dialogue (others are ignored); "
            f"missing {', '.join(missing)} in header {', '.join(header)!r}"
        )
    sessions: list[Session] = []
    problems: list[LogProblem] = []
    seen: dict[str, int] = {}
    # Numbered like a spreadsheet (header = row 1); a quoted multi-line cell is one row.
    for number, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue
        cell = dict(zip(header, values))
        row_id, dialogue = cell.get("id", "").strip(), cell.get("dialogue", "")
        messages, issues = utterances(dialogue)
        if not row_id:
            issues.insert(0, "ID is empty")
        elif row_id in seen:
            issues.insert(0, f"duplicate ID {row_id!r} (first on row {seen[row_id]})")
        if issues:
            problems.append(LogProblem(file, number, "; ".join(issues) + "; row skipped"))
            continue
        seen[row_id] = number
        sessions.append(Session(session_id=row_id, messages=messages))
    return LogRead(sessions, problems, skipped=len(problems))
