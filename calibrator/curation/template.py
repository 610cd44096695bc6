"""Gold-set template: an empty gold-set workbook a labeller fills in Excel or LibreOffice.

Sheet `data` (first, so the loader reads it) has the contract's columns, label dropdowns and no rows;
sheet `instructions` explains each column, the rubric, the field vocabulary and one worked example per
label. What a component's sheet says is its own (`Component.template`); this module lays it out. Every cell is
written as text, so nothing the template says can become a formula.
"""

import os
import tempfile
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from calibrator.components import COMPONENTS, Component
from calibrator.components.base import TemplateColumn

LAST_ROW = 1001  # dropdowns cover rows 2..1001
COMMON_COLUMNS = [
    TemplateColumn(name="note", width=35, wrapped=True,
                   help="Optional. A short reason for your label: it helps whoever checks or compares labels later."),
    TemplateColumn(name="annotator", width=14, help="Who labelled the row (name or initials)."),
    TemplateColumn(name="labelled_at", width=14, help="The date you labelled it, e.g. 2024-05-17."),
]
ID_COLUMN = TemplateColumn(name="id", width=10,
                           help="Optional. A short unique name such as r101. Leave it empty and a stable id is made from the row's text.")
ADDING = ["Save the workbook (keep `data` as the first sheet), then run:",
          "python -m calibrator goldset add FILE --component {c}"]


def columns(component: Component) -> list[TemplateColumn]:
    return [ID_COLUMN, *component.template.columns, *COMMON_COLUMNS]


def _put(sheet: Worksheet, row: int, column: int, value: str, bold: bool = False, wrap: bool = True) -> None:
    cell = sheet.cell(row=row, column=column, value=value)
    cell.data_type = "s"  # openpyxl would store '=…' as a formula
    cell.alignment = Alignment(wrap_text=wrap, vertical="top")
    cell.font = Font(bold=bold)


def _data_sheet(sheet: Worksheet, component: Component) -> None:
    sheet.title = "data"
    for index, column in enumerate(columns(component), 1):
        _put(sheet, 1, index, column.name, bold=True)
        letter = get_column_letter(index)
        dimension = sheet.column_dimensions[letter]
        dimension.width = column.width
        if column.wrapped:
            dimension.alignment = Alignment(wrap_text=True, vertical="top")
        if not column.choices:
            dimension.number_format = "@"  # typed text stays text, even if it starts with '='
        else:
            listed = ",".join(column.choices)
            rule = DataValidation(type="list", formula1=f'"{listed}"', allow_blank=True, showErrorMessage=True,
                                  errorTitle=f"Invalid {column.name}",
                                  error=f"{column.name} must be one of: {', '.join(column.choices)}. Pick it from the list.")
            sheet.add_data_validation(rule)
            rule.add(f"{letter}2:{letter}{LAST_ROW}")
    sheet.freeze_panes = "A2"


def _instructions_sheet(sheet: Worksheet, component: Component) -> None:
    row = 1
    spec = component.template

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

    _put(sheet, row, 1, f"How to fill the {component.name} gold set", wrap=False)
    sheet.cell(row=1, column=1).font = Font(bold=True, size=14)
    row += 2
    section("Columns of the `data` sheet (one row per example; blank lines are skipped)", [(c.name, c.help) for c in columns(component)])
    section("Rubric", list(spec.rubric))
    if spec.fields_title:
        section(spec.fields_title, list(spec.fields))
    header, *examples = spec.examples
    section("Worked examples, one per label", examples, header)
    for title, lines in spec.sections:
        section(title, [(line,) for line in lines])
    section("Adding the filled sheet to the gold set", [(line.format(c=component.name),) for line in ADDING])
    for index, width in enumerate(spec.widths, 1):
        sheet.column_dimensions[get_column_letter(index)].width = width


def write_template(component: str, path: Path) -> None:
    """Write an empty, fillable gold-set workbook for `component` to `path` (.xlsx), atomically."""
    if component not in COMPONENTS:
        raise ValueError(f"unknown component {component!r}: use one of {', '.join(COMPONENTS)}")
    book = Workbook()
    _data_sheet(book.active, COMPONENTS[component])
    _instructions_sheet(book.create_sheet("instructions"), COMPONENTS[component])
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        book.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
