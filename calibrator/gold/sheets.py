"""Spreadsheet cells in and out: CSV and XLSX records with the row each came from, problems located by file, row and
column, and cells written as text so nothing a labeller or a model wrote becomes a live formula. Gold sets, review
sheets and predictions.csv all go through here."""

import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Problem:
    file: str
    row: int | None
    column: str | None
    message: str
    sheet: str | None = None

    def __str__(self) -> str:
        where = (self.file + (f", sheet {self.sheet!r}" if self.sheet else "") + (f", row {self.row}" if self.row else "")
                 + (f", column {self.column!r}" if self.column else ""))
        return f"{where}: {self.message}"


class GoldSetError(Exception):
    """Every problem found in a gold-set file, one per line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


@dataclass(frozen=True)
class Formula:
    """An XLSX formula cell: its value depends on the spreadsheet app, so a label must be pasted as a value."""

    text: str


@dataclass(frozen=True)
class ErrorCell:
    """An XLSX error value such as #REF! or #N/A: what the cell meant is lost."""

    text: str


Records = Iterator[tuple[str | None, int, dict[str, Any]]]  # (sheet, spreadsheet row, column -> value)
FORMULA_START = ("=", "+", "-", "@")


def cell_value(value: Any) -> str:
    """A gold row's value as a spreadsheet cell shows it: `; `-joined items, `0.5` not `0.50`, empty for none."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "; ".join(value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def text_cell(text: str) -> str:
    """Spreadsheet apps run a cell that starts with = + - @ as a formula; a leading quote keeps it text."""
    return "'" + text if text[:1] in FORMULA_START else text


def uncell(text: str) -> str:
    """Undo the leading quote our CSV writers put before a cell that would start a formula."""
    return text[1:] if text[:1] == "'" and text[1:2] in FORMULA_START else text


def _read_csv(path: Path) -> Records:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise GoldSetError([Problem(str(path), None, None, f"not UTF-8 text (byte {e.start}); save it as CSV UTF-8")]) from None
    # newline="": only \n, \r, \r\n end a record (str.splitlines would also split on U+2028 etc. inside cells).
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if not header:
        raise GoldSetError([Problem(str(path), None, None, "the file is empty: expected a header row")])
    # Rows are numbered by record, as a spreadsheet shows them (header = 1), not by physical line:
    # a quoted multi-line cell is one row. Blank lines are rows too (empty, skipped by the loader).
    for number, values in enumerate(reader, start=2):
        yield None, number, {h: uncell(values[i]) if i < len(values) else None for i, h in enumerate(header)}


def _header(cells: Any) -> list[str]:
    return [str(c.value).strip().lower() if c.value is not None else "" for c in cells]


def _read_xlsx(path: Path, required: tuple[str, ...], sheet: str | None) -> Records:
    """Every sheet whose first row has the contract's columns (or just `sheet`)."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=False)
    except Exception as e:  # openpyxl raises many types for encrypted/corrupt files
        raise GoldSetError([Problem(str(path), None, None, f"cannot open as XLSX ({type(e).__name__}): is it encrypted or damaged?")]) from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise GoldSetError([Problem(str(path), None, None, f"no sheet {sheet!r}; sheets: {', '.join(book.sheetnames)}")])
        sheets = [book[sheet]] if sheet is not None else book.worksheets
        matching = []
        for ws in sheets:
            header = _header(next(ws.iter_rows(max_row=1), ()))
            if sheet is not None or all(c in header for c in required):
                matching.append((ws, header))
        if not matching:
            raise GoldSetError([Problem(str(path), 1, c, f"required column is missing (no sheet of {', '.join(book.sheetnames)} has it)")
                                for c in required])
        for ws, header in matching:
            for number, cells in enumerate(ws.iter_rows(min_row=2), start=2):
                # A formula's value depends on the app; a text cell that merely starts with `=` is just text.
                yield ws.title, number, {h: Formula(c.value) if c.data_type == "f" else ErrorCell(str(c.value)) if c.data_type == "e" else c.value
                                         for h, c in zip(header, cells)}
    finally:
        book.close()


def read_records(path: Path, required: tuple[str, ...], sheet: str | None = None) -> Records:
    if not path.is_file():
        raise GoldSetError([Problem(str(path), None, None, "no such file")])
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _read_csv(path)
    if suffix in (".xlsx", ".xlsm"):
        return _read_xlsx(path, required, sheet)
    raise GoldSetError([Problem(str(path), None, None, f"unsupported file type {suffix!r}: use .csv or .xlsx")])
