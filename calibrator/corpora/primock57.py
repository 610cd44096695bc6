"""PriMock57 (Papadopoulos Korfiatis et al., ACL 2022; CC BY 4.0): mock primary-care consultations as expert logs,
and the clinicians' fact checklists to measure recall against on dialogue nobody here tuned by hand.
The data stays in ../shared/data; nothing is copied into the repo.

Layout found in the data (all 57 consultations, 27 checklist files covering 20 of them):
  transcripts/dayD_consultationNN_{doctor,patient}.TextGrid   Praat long text format, ASCII, CRLF, one IntervalTier;
                                                               tags <UNSURE>..</UNSURE>, <UNIN/>, <INAUDIBLE_SPEECH/>
  consultation_checklists/Clinician_{1,2}/Day D [Cc]onsultation N - Checklist.xlsx
      first sheet ("Checklist" or "Sheet1"): header row "CHECKLIST" | "Critical / Non Critical / Irrelevant", then fact
      text in that column and c / nc / i beside it; unmarked rows are section headers (HPC, PMH, ...); leading '*'s nest
      a fact under the previous less-starred one. The "Note N" sheets are note-evaluation copies with #REF! holes.

`read` gives the consultations as sessions (doctor = assistant, patient = user) without opening the checklists (slow).
"""

import re
from pathlib import Path
from typing import Literal

import openpyxl
from openpyxl.cell.cell import ERROR_CODES
from pydantic import BaseModel

from calibrator.expert_logs.logs import LogError, LogProblem, LogRead, Message, Session

DEFAULT_ROOT = Path(__file__).resolve().parents[3] / "shared" / "data" / "primock57"
SPEAKERS: dict[str, Literal["user", "assistant"]] = {"doctor": "assistant", "patient": "user"}
SECTIONS = {"pc", "hpc", "pc/hpc", "pmh", "dh", "sh", "fh", "o/e", "introduction", "doctor intro", "systems review",
            "examination", "allergies"}  # unmarked rows that head a section rather than state a fact
MARKS = {"c": True, "critical": True, "nc": False, "non critical": False, "non-critical": False}
INTERVAL = re.compile(r'intervals\s*\[\d+\]\s*:\s*xmin\s*=\s*([-+.\deE]+)\s*xmax\s*=\s*[-+.\deE]+\s*'
                      r'text\s*=\s*"((?:[^"]|"")*)"')


class Turn(BaseModel):
    """One transcribed utterance: what a session message is made of."""
    speaker: Literal["doctor", "patient"]
    start: float  # seconds from the start of the recording
    text: str  # transcriber tags and noise annotations removed, whitespace collapsed


class Fact(BaseModel):
    """One checklist line: a fact a clinician expects a good note to capture."""
    text: str  # leading '*' nesting marks stripped
    critical: bool  # 'c' (True) vs 'nc' (False); 'i' (irrelevant) lines are not kept
    clinician: str  # "Clinician_1" / "Clinician_2": the two lists overlap but are written independently
    context: str = ""  # section and parent lines, e.g. "PC/HPC > Diarrhoea" for "3days": sub-items are unreadable alone


class Consultation(BaseModel):
    """A whole consultation: the dialogue and the facts it should yield."""
    id: str  # e.g. "day1_consultation01"
    turns: list[Turn]  # both speakers merged by start time
    facts: list[Fact]  # empty when no clinician wrote a checklist (37 of 57)


def clean(text: str) -> str:
    """Drop transcriber markup (keep the words inside <UNSURE>), unescape Praat quotes, collapse whitespace."""
    text = re.sub(r"</?UNSURE>|<[^<>]*/>|\[[^\[\]]*\]", " ", text.replace('""', '"'))
    return re.sub(r"\s+([,.?!])", r"\1", " ".join(text.split())).strip()


def read_textgrid(path: Path, speaker: Literal["doctor", "patient"], warnings: list[str]) -> list[Turn]:
    """Intervals of a long-format TextGrid as turns; empty, tag-only and punctuation-only intervals are dropped.
    What looks wrong with the file goes to `warnings` (the caller knows which file it is)."""
    raw = path.read_bytes()
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in raw[:200]:
        content = raw.decode("utf-16")
    else:
        try:
            content = raw.decode("utf-8-sig")
        except UnicodeDecodeError:
            content = raw.decode("latin-1")
    found = INTERVAL.findall(content)
    declared = sum(int(n) for n in re.findall(r"intervals:\s*size\s*=\s*(\d+)", content))
    if len(found) != declared or not found:
        warnings.append(f"parsed {len(found)} intervals but the file declares {declared} (not long format?)")
    turns = [Turn(speaker=speaker, start=float(start), text=clean(text)) for start, text in found]
    return [t for t in turns if any(ch.isalnum() for ch in t.text)]  # 15 intervals are just "."


def consultation_turns(transcripts: Path, cid: str) -> tuple[list[Turn], list[tuple[Path, str]]]:
    """Both speakers' turns merged by start time, and what was wrong with which file."""
    turns: list[Turn] = []
    issues: list[tuple[Path, str]] = []
    for speaker in SPEAKERS:
        path = transcripts / f"{cid}_{speaker}.TextGrid"
        if not path.exists():
            issues.append((path, "missing; consultation has only one speaker"))
            continue
        warnings: list[str] = []
        turns += read_textgrid(path, speaker, warnings)
        issues += [(path, w) for w in warnings]
    return sorted(turns, key=lambda t: t.start), issues


def consultation_id(name: str) -> str | None:
    """'Day 1 consultation 10 - Checklist.xlsx' -> 'day1_consultation10' (capitalisation varies between files)."""
    m = re.search(r"day\s*(\d+)\D*?consultation\s*(\d+)", name, re.IGNORECASE)
    return f"day{int(m[1])}_consultation{int(m[2]):02d}" if m else None


def cell_text(value: object) -> str:
    """Cell as stripped text; Excel error values (#REF! ...) count as empty."""
    text = "" if value is None else str(value).strip()
    return "" if text in ERROR_CODES else text


def read_checklist(path: Path, clinician: str, warnings: list[str]) -> list[Fact]:
    """Facts from the checklist sheet: the first 'CHECKLIST' column and the c/nc/i column beside it."""
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # a corrupt workbook must not stop the benchmark
        warnings.append(f"{clinician}/{path.name}: unreadable ({e})")
        return []
    sheets = [ws for ws in wb.worksheets if not ws.title.lower().startswith("note")] or wb.worksheets[:1]
    sheets.sort(key=lambda ws: ws.title.strip().lower() != "checklist")
    rows = [[cell_text(v) for v in row] for row in sheets[0].iter_rows(values_only=True)]
    wb.close()
    header = next(((i, [j for j, v in enumerate(r) if v.upper() == "CHECKLIST"]) for i, r in enumerate(rows[:20])
                   if "CHECKLIST" in (v.upper() for v in r)), None)
    if header is None:
        warnings.append(f"{clinician}/{path.name}: no 'CHECKLIST' header in sheet {sheets[0].title!r}; file skipped")
        return []
    (top, cols), col = header, header[1][0]
    if len(cols) > 1:
        warnings.append(
            f"{clinician}/{path.name}: ignored {len(cols) - 1} extra CHECKLIST column(s) (a copy of another clinician's list)"
        )
    facts: list[Fact] = []
    stack: list[tuple[int, str]] = []  # (stars, text) of the open parent lines
    section, irrelevant = "", 0
    for n, row in enumerate(rows[top + 1:], top + 2):
        text, mark = (row + ["", ""])[col:col + 2]
        stars = len(text) - len(text.lstrip("*"))
        text = " ".join(text.lstrip("*").split())
        if not text:
            if mark:
                warnings.append(f"{clinician}/{path.name} row {n}: marker {mark!r} with no fact text; skipped")
            continue
        if not mark and not stars and (text.lower() in SECTIONS or text.isupper()):
            section, stack = text, []
            continue
        while stack and stack[-1][0] >= stars:
            stack.pop()
        context = " > ".join([section] * bool(section) + [t for _, t in stack])
        stack.append((stars, text))
        if mark.lower() in MARKS:
            facts.append(Fact(text=text, critical=MARKS[mark.lower()], clinician=clinician, context=context))
        elif mark.lower() in ("i", "irrelevant"):
            irrelevant += 1
        else:
            why = f"marker {mark!r} is not c/nc/i" if mark else "no c/nc marker and not a section heading"
            warnings.append(f"{clinician}/{path.name} row {n}: {text!r}: {why}; skipped")
    if irrelevant:
        warnings.append(f"{clinician}/{path.name}: skipped {irrelevant} line(s) marked 'i' (irrelevant)")
    return facts


def consultation_ids(transcripts: Path) -> list[str]:
    return sorted({p.name.rsplit("_", 1)[0] for p in transcripts.glob("*_*.TextGrid")})


def load_consultations(root: Path = DEFAULT_ROOT, limit: int | None = None) -> tuple[list[Consultation], list[str]]:
    """Returns consultations (sorted by id) and a list of human-readable warnings (file + what was skipped)."""
    if not (root / "transcripts").is_dir():
        raise FileNotFoundError(f"no PriMock57 transcripts under {root}")  # a wrong root is not messy data: say so
    warnings: list[str] = []
    grids = consultation_ids(root / "transcripts")
    consultations: dict[str, Consultation] = {}
    for cid in grids[:limit]:
        turns, issues = consultation_turns(root / "transcripts", cid)
        warnings += [f"{path.name}: {issue}" for path, issue in issues]
        consultations[cid] = Consultation(id=cid, turns=turns, facts=[])
    for path in sorted((root / "consultation_checklists").rglob("*.xlsx")):
        cid = consultation_id(path.name)
        if path.name.startswith("~$") or cid not in consultations:
            if cid not in grids:
                warnings.append(f"{path.parent.name}/{path.name}: matches no transcript; skipped")
            continue
        consultations[cid].facts += read_checklist(path, path.parent.name, warnings)
    warnings += [f"{c.id}: no checklist; facts=[]" for c in consultations.values() if not c.facts]
    return list(consultations.values()), warnings


def transcripts_of(path: Path) -> Path | None:
    """The folder of per-speaker TextGrids: `path` itself or its `transcripts/`, or None if neither holds any."""
    for folder in (path / "transcripts", path):
        if folder.is_dir() and any(next(folder.glob(f"*_{speaker}.TextGrid"), None) for speaker in SPEAKERS):
            return folder
    return None


def detect(path: Path) -> bool:
    return transcripts_of(path) is not None


def read(path: Path) -> LogRead:
    """One session per consultation, turns in time order. A file with a problem (missing speaker, intervals lost in
    parsing) skips its consultation: a gap in the dialogue would change what each turn answers."""
    transcripts = transcripts_of(path)
    if transcripts is None:
        raise LogError(f"{path}: not a PriMock57 folder: expected transcripts/*_doctor.TextGrid and *_patient.TextGrid")
    sessions: list[Session] = []
    problems: list[LogProblem] = []
    skipped = 0
    for cid in consultation_ids(transcripts):
        turns, issues = consultation_turns(transcripts, cid)
        if not issues and not turns:
            issues = [(transcripts / f"{cid}_doctor.TextGrid", "no speech in either speaker's transcript")]
        if issues:
            problems += [LogProblem(str(file), None, f"{issue}; consultation {cid} skipped") for file, issue in issues]
            skipped += 1
            continue
        messages = [Message(role=SPEAKERS[t.speaker], content=t.text) for t in turns]
        sessions.append(Session(session_id=cid, messages=messages))
    return LogRead(sessions, problems, skipped)
