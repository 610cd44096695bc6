"""Gold-set template: an empty gold-set workbook a pharmacist fills in Excel or LibreOffice.

Sheet `data` (first, so the loader reads it) has the contract's columns, label dropdowns and no rows;
sheet `instructions` explains each column, the rubric, the field vocabulary and one worked example per
label. Every cell is written as text, so nothing the template says can become a formula.
"""

import os
import tempfile
from pathlib import Path
from typing import Literal

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from calibrator.components.extractor import DEFAULT_FIELDS

Component = Literal["grader", "extractor"]
LAST_ROW = 1001  # dropdowns cover rows 2..1001
HEADERS = {
    "grader": ("id", "context", "target_info", "candidate", "content_score", "format_score", "note", "annotator", "labelled_at"),
    "extractor": ("id", "context", "future", "target_info", "decision", "note", "annotator", "labelled_at"),
}
WIDTHS = {"id": 10, "context": 60, "future": 60, "candidate": 50, "target_info": 45, "content_score": 14,
          "format_score": 14, "decision": 12, "note": 35, "annotator": 14, "labelled_at": 14}
WRAPPED = ("context", "future", "candidate", "target_info", "note")
CHOICES = {"content_score": "0,0.5,1", "format_score": "0,0.5,1", "decision": "continue,stop"}

NEWLINE = ("one turn per line inside the cell (Alt+Enter in Excel, Ctrl+Enter in LibreOffice); "
           "every line starts with `patient: ` or `pharmacist: `")
ITEMS = "`field: value` items separated by `;`, e.g. `duration: three days; allergies: none`"
COMMON_COLUMNS = {
    "id": "Optional. A short unique name such as r101. Leave it empty and a stable id is made from the row's text.",
    "note": "Optional. A short reason for your label: it helps whoever checks or compares labels later.",
    "annotator": "Who labelled the row (name or initials).",
    "labelled_at": "The date you labelled it, e.g. 2024-05-17.",
}
COLUMNS = {
    "grader": {
        "context": f"The consultation so far, {NEWLINE}.",
        "target_info": f"What the expert pharmacist actually asked for next, with the patient's answer: {ITEMS}. "
                       "At least one item.",
        "candidate": "The proposed next pharmacist turn that you are scoring.",
        "content_score": "0, 0.5 or 1 (pick from the dropdown): how well the candidate asks for the target information.",
        "format_score": "Optional. 0, 0.5 or 1: how many questions the candidate asks.",
    },
    "extractor": {
        "context": f"The dialogue before the pharmacist's run, {NEWLINE}. It needs at least one `patient:` line.",
        "future": "The run (one or more `pharmacist:` lines in a row) first, then whatever followed it, "
                  "in the same one-turn-per-line format.",
        "target_info": f"What the run asked, with the patient's answer as value: {ITEMS}. "
                       "Leave it empty for `stop`; at least one item for `continue`.",
        "decision": "`continue` or `stop` (pick from the dropdown).",
    },
}
RUBRIC = {
    "grader": [
        ("content_score 1", "The candidate asks directly for at least one target item (its field). "
                            "Target `duration: 3 days`, candidate \"How long have you had the cough?\"."),
        ("content_score 0.5", "Close to a target item but not asking for it directly: a neighbouring aspect of the "
                              "same topic, too vague to draw the item out, or a yes/no question that covers it only in part."),
        ("content_score 0", "Nothing to do with any target item: asks about something else, asks again for something "
                            "the context already answered, gives advice or recommends a product instead, or is small talk."),
        ("format_score", "1 = exactly one question; 0.5 = exactly two; 0 = three or more, or none at all."),
    ],
    "extractor": [
        ("stop", "No `patient:` line follows the run: the pharmacist stopped asking (recommended something, referred "
                 "the patient on, or handed off with the message `<med_search>`). target_info stays empty."),
        ("continue", "At least one `patient:` line follows the run. "
                     "target_info has one `field: value` item per thing the run asked."),
        ("value", "The patient's answer in a few words, close to their own wording (values are matched by word overlap)."),
        ("what counts", "Only what this run asked. Not what the patient volunteered unasked, not questions already "
                        "answered in context, not questions of later runs further down future."),
        ("one or two items", "Two questions about the same thing make one item; "
                             "two different things (in one message or two) make two items."),
    ],
}
FIELD_HINTS = {"symptom": "other or red-flag symptoms, present or absent", "nature": "what it looks or feels like",
               "location": "where it is", "severity": "how bad it is", "trigger": "what brings it on or caused it",
               "duration": "how long, or when it started", "allergies": "allergies to medicines or anything else",
               "current medication": "medicines the patient takes now", "pregnancy/breastfeeding": "pregnant or breastfeeding",
               "age group": "who it is for and how old", "chronic conditions": "long-term illnesses",
               "previous treatment": "what has been tried already"}
EXAMPLES = {  # a header, then one row per label
    "grader": [
        ("context", "target_info", "candidate", "content_score", "format_score", "why"),
        ("\n".join(["patient: I've got an itchy rash on my arm, I think it's the new washing powder.",
                    "pharmacist: How long has it been there?", "patient: Since Saturday."]),
         "previous treatment: nothing yet", "Have you put anything on it so far?", "1", "1",
         "Asks directly for the target field (previous treatment); one question."),
        ("patient: My little boy's teething and really grumpy, can I get some gel for him?",
         "age group: 5 months", "Is he under two? Has he got a temperature with it?", "0.5", "0.5",
         "The yes/no question covers his age only in part; two questions."),
        ("\n".join(["patient: I've had heartburn on and off for a couple of weeks, mostly at night.",
                    "pharmacist: Are you taking any other medicines?", "patient: Just my blood pressure tablets."]),
         "symptom: no trouble swallowing, no weight loss",
         "Gaviscon Advance after meals and at bedtime should settle it.", "0", "0",
         "Recommends a product instead of asking about the red-flag symptoms; no question at all."),
    ],
    "extractor": [
        ("context", "future", "target_info", "decision", "why"),
        ("pharmacist: Hello, how can I help?\npatient: I've got a sore throat, it's really painful to swallow.",
         "\n".join(["pharmacist: Oh dear. How long has it been like that?",
                    "pharmacist: And have you had a temperature with it?", "patient: Since Monday, so three days.",
                    "patient: I felt shivery last night but didn't check.",
                    "pharmacist: Okay. Are you taking any other medicines?", "patient: No, nothing."]),
         "duration: since Monday, three days; symptom: felt shivery last night", "continue",
         "The run is the two pharmacist messages before the reply: two different questions, two items, in the "
         "patient's words. The medicines question is a later run: not labelled."),
        ("\n".join(["patient: Can I have something for athlete's foot?", "pharmacist: Is it for yourself?",
                    "patient: Yes, it's between my little toes, itchy and peeling.",
                    "pharmacist: Do you have diabetes or any circulation problems?", "patient: No, nothing like that."]),
         "pharmacist: Then a terbinafine cream is a good choice. Apply it once or twice a day for a week "
         "and keep between your toes dry.",
         "(leave empty)", "stop",
         "No patient line follows the run: the pharmacist recommended a product and stopped asking. "
         "target_info stays empty."),
    ],
}
AGREEMENT = ["To measure how far two labellers agree, each scores the rows without seeing the other's scores,",
             "in a column of their own named content_score_<name>, e.g. content_score_anna and content_score_ben.",
             "The agreed score still goes in content_score. "
             "Reports then show the labellers' agreement: the most any prompt can reach."]
ADDING = ["Save the workbook (keep `data` as the first sheet), then run:",
          "python -m calibrator goldset add FILE --component {c}"]


def _put(sheet: Worksheet, row: int, column: int, value: str, bold: bool = False, wrap: bool = True) -> None:
    cell = sheet.cell(row=row, column=column, value=value)
    cell.data_type = "s"  # openpyxl would store '=…' as a formula
    cell.alignment = Alignment(wrap_text=wrap, vertical="top")
    cell.font = Font(bold=bold)


def _data_sheet(sheet: Worksheet, component: Component) -> None:
    sheet.title = "data"
    for index, name in enumerate(HEADERS[component], 1):
        _put(sheet, 1, index, name, bold=True)
        letter = get_column_letter(index)
        dimension = sheet.column_dimensions[letter]
        dimension.width = WIDTHS[name]
        if name in WRAPPED:
            dimension.alignment = Alignment(wrap_text=True, vertical="top")
        if name not in CHOICES:
            dimension.number_format = "@"  # typed text stays text, even if it starts with '='
        else:
            values = CHOICES[name].replace(",", ", ")
            rule = DataValidation(type="list", formula1=f'"{CHOICES[name]}"', allow_blank=True, showErrorMessage=True,
                                  errorTitle=f"Invalid {name}", error=f"{name} must be one of: {values}. Pick it from the list.")
            sheet.add_data_validation(rule)
            rule.add(f"{letter}2:{letter}{LAST_ROW}")
    sheet.freeze_panes = "A2"


def _instructions_sheet(sheet: Worksheet, component: Component) -> None:
    row = 1

    def section(title: str, lines: list[tuple[str, ...]], header: tuple[str, ...] | None = None) -> None:
        """A bold title, then a table (bold header, or bold first column when there is none); one-cell lines are
        sentences left unwrapped, so they run on across the empty cells to their right."""
        nonlocal row
        _put(sheet, row, 1, title, bold=True, wrap=False)
        row += 1
        for line in ([header] if header else []) + lines:
            for column, text in enumerate(line, 1):
                bold = line is header or (header is None and column == 1 and len(line) > 1)
                _put(sheet, row, column, text, bold=bold, wrap=len(line) > 1)
            row += 1
        row += 1

    _put(sheet, row, 1, f"How to fill the {component} gold set", wrap=False)
    sheet.cell(row=1, column=1).font = Font(bold=True, size=14)
    row += 2
    help_text = COLUMNS[component] | COMMON_COLUMNS
    section("Columns of the `data` sheet (one row per example; blank lines are skipped)",
            [(name, help_text[name]) for name in HEADERS[component]])
    section("Rubric", RUBRIC[component])
    fields = [(f, FIELD_HINTS.get(f, "")) for f in DEFAULT_FIELDS]
    section("Field names for target_info" + (" (use these where they fit)" if component == "grader" else ""), fields)
    header, *examples = EXAMPLES[component]
    section("Worked examples, one per label", examples, header)
    if component == "grader":
        section("Two labellers", [(line,) for line in AGREEMENT])
    section("Adding the filled sheet to the gold set", [(line.format(c=component),) for line in ADDING])
    widths = (30, 45, 45, 14, 14, 50) if component == "grader" else (30, 50, 45, 12, 50)
    for index, width in enumerate(widths, 1):
        sheet.column_dimensions[get_column_letter(index)].width = width


def write_template(component: Component, path: Path) -> None:
    """Write an empty, fillable gold-set workbook for `component` to `path` (.xlsx), atomically."""
    if component not in HEADERS:
        raise ValueError(f"unknown component {component!r}: use one of {', '.join(HEADERS)}")
    book = Workbook()
    _data_sheet(book.active, component)
    _instructions_sheet(book.create_sheet("instructions"), component)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        book.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
