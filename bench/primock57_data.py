"""Reader for PriMock57 (Papadopoulos Korfiatis et al., ACL 2022; CC BY 4.0): transcripts + clinicians' fact checklists.

    .venv/bin/python bench/primock57_data.py [ROOT]

Used by bench/primock57_extractor.py to measure extractor recall of the clinician-listed facts on dialogue nobody
here tuned by hand. The data stays in ../shared/data; nothing is copied into the repo.

Layout found in the data (all 57 consultations, 27 checklist files covering 20 of them):
  transcripts/dayD_consultationNN_{doctor,patient}.TextGrid   Praat long text format, ASCII, CRLF, one IntervalTier;
                                                               tags <UNSURE>..</UNSURE>, <UNIN/>, <INAUDIBLE_SPEECH/>
  consultation_checklists/Clinician_{1,2}/Day D [Cc]onsultation N - Checklist.xlsx
      first sheet ("Checklist" or "Sheet1"): header row "CHECKLIST" | "Critical / Non Critical / Irrelevant", then fact
      text in that column and c / nc / i beside it; unmarked rows are section headers (HPC, PMH, ...); leading '*'s nest
      a fact under the previous less-starred one. The "Note N" sheets are note-evaluation copies with #REF! holes.
"""

import re
import sys
from collections import Counter
from pathlib import Path
from typing import Literal

import openpyxl
from openpyxl.cell.cell import ERROR_CODES
from pydantic import BaseModel

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "primock57"
SECTIONS = {"pc", "hpc", "pc/hpc", "pmh", "dh", "sh", "fh", "o/e", "introduction", "doctor intro", "systems review",
            "examination", "allergies"}  # unmarked rows that head a section rather than state a fact
MARKS = {"c": True, "critical": True, "nc": False, "non critical": False, "non-critical": False}
INTERVAL = re.compile(r'intervals\s*\[\d+\]\s*:\s*xmin\s*=\s*([-+.\deE]+)\s*xmax\s*=\s*[-+.\deE]+\s*'
                      r'text\s*=\s*"((?:[^"]|"")*)"')


class Turn(BaseModel):
    """One transcribed utterance; the unit the extractor reads."""
    speaker: Literal["doctor", "patient"]
    start: float  # seconds from the start of the recording
    text: str  # transcriber tags and noise annotations removed, whitespace collapsed


class Fact(BaseModel):
    """One checklist line: a fact a clinician expects a good note (or extractor) to capture."""
    text: str  # leading '*' nesting marks stripped
    critical: bool  # 'c' (True) vs 'nc' (False); 'i' (irrelevant) lines are not kept
    clinician: str  # "Clinician_1" / "Clinician_2": the two lists overlap but are written independently
    context: str = ""  # section and parent lines, e.g. "PC/HPC > Diarrhoea" for "3days": sub-items are unreadable alone


class Consultation(BaseModel):
    """A whole consultation: the dialogue to extract from and the facts it should yield."""
    id: str  # e.g. "day1_consultation01"
    turns: list[Turn]  # both speakers merged by start time
    facts: list[Fact]  # empty when no clinician wrote a checklist (37 of 57)


def clean(text: str) -> str:
    """Drop transcriber markup (keep the words inside <UNSURE>), unescape Praat quotes, collapse whitespace."""
    text = re.sub(r"</?UNSURE>|<[^<>]*/>|\[[^\[\]]*\]", " ", text.replace('""', '"'))
    return re.sub(r"\s+([,.?!])", r"\1", " ".join(text.split())).strip()


def read_textgrid(path: Path, speaker: Literal["doctor", "patient"], warnings: list[str]) -> list[Turn]:
    """Intervals of a long-format TextGrid as turns; empty, tag-only and punctuation-only intervals are dropped."""
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
        warnings.append(f"{path.name}: parsed {len(found)} intervals but the file declares {declared} (not long format?)")
    turns = [Turn(speaker=speaker, start=float(start), text=clean(text)) for start, text in found]
    return [t for t in turns if any(ch.isalnum() for ch in t.text)]  # 15 intervals are just "."


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
        warnings.append(f"{clinician}/{path.name}: ignored {len(cols) - 1} extra CHECKLIST column(s) (a copy of another clinician's list)")
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


def load_consultations(root: Path = DEFAULT_ROOT, limit: int | None = None) -> tuple[list[Consultation], list[str]]:
    """Returns consultations (sorted by id) and a list of human-readable warnings (file + what was skipped)."""
    if not (root / "transcripts").is_dir():
        raise FileNotFoundError(f"no PriMock57 transcripts under {root}")  # a wrong root is not messy data: say so
    warnings: list[str] = []
    grids = {p.name.rsplit("_", 1)[0] for p in (root / "transcripts").glob("*_*.TextGrid")}
    ids = sorted(grids)[:limit]
    consultations: dict[str, Consultation] = {}
    for cid in ids:
        turns: list[Turn] = []
        for speaker in ("doctor", "patient"):
            path = root / "transcripts" / f"{cid}_{speaker}.TextGrid"
            if path.exists():
                turns += read_textgrid(path, speaker, warnings)
            else:
                warnings.append(f"{path.name}: missing; consultation has only one speaker")
        consultations[cid] = Consultation(id=cid, turns=sorted(turns, key=lambda t: t.start), facts=[])
    for path in sorted((root / "consultation_checklists").rglob("*.xlsx")):
        cid = consultation_id(path.name)
        if path.name.startswith("~$") or cid not in consultations:
            if cid not in grids:
                warnings.append(f"{path.parent.name}/{path.name}: matches no transcript; skipped")
            continue
        consultations[cid].facts += read_checklist(path, path.parent.name, warnings)
    warnings += [f"{c.id}: no checklist; facts=[]" for c in consultations.values() if not c.facts]
    return list(consultations.values()), warnings


if __name__ == "__main__":
    consultations, warnings = load_consultations(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_ROOT)
    facts = [f for c in consultations for f in c.facts]
    print(f"root: {DEFAULT_ROOT if len(sys.argv) < 2 else sys.argv[1]}")
    print(f"consultations: {len(consultations)}  turns: {sum(len(c.turns) for c in consultations)}  "
          f"with checklist: {sum(bool(c.facts) for c in consultations)}")
    print(f"facts per clinician: {dict(sorted(Counter(f.clinician for f in facts).items()))}")
    print(f"critical: {sum(f.critical for f in facts)}  non-critical: {sum(not f.critical for f in facts)}")
    print(f"warnings: {len(warnings)}")
    for w in warnings[:12]:
        print(f"  {w}")
    example = next(c for c in consultations if c.facts)
    print(f"\n{example.id}: {len(example.turns)} turns, {len(example.facts)} facts")
    for t in example.turns[:6]:
        print(f"  [{t.start:7.2f}] {t.speaker:7} {t.text}")
    for f in example.facts[:5]:
        print(f"  {'c ' if f.critical else 'nc'} {f.clinician}  {f.text!r}  (context: {f.context or '-'})")
