"""Files written as a user would: gold-set rows as CSV or a workbook, a template's data sheet typed into, a slice of a
shipped gold set."""

import csv
from pathlib import Path

import openpyxl

from support import ROOT

HEADER = ["id", "context", "target_info", "candidate", "content_score", "format_score", "note"]


def write_csv(path: Path, rows: list[dict], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_rows(path: Path, rows: list[list], header: list[str] | tuple[str, ...]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def write_xlsx(path: Path, rows: list[list], header: list[str] = HEADER) -> Path:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(header)
    for row in rows:
        sheet.append(row)
    book.save(path)
    return path


def fill(path: Path, rows: list[dict | None]) -> None:
    """Type rows under the header of a template's data sheet, as a user does in Excel; None leaves a blank line."""
    book = openpyxl.load_workbook(path)
    sheet = book["data"]
    header = [c.value for c in sheet[1]]
    for number, row in enumerate(rows, 2):
        for name, value in (row or {}).items():
            sheet.cell(row=number, column=header.index(name) + 1, value=value)
    book.save(path)


def gold_slice(component: str, path: Path, rows: int, *, spread: bool = False) -> Path:
    """The shipped gold set's header and `rows` of its rows: the first ones, or (spread) every k-th, so every label is in."""
    with open(ROOT / "goldsets" / f"{component}.csv", newline="", encoding="utf-8") as f:
        header, *body = list(csv.reader(f))
    picked = body[:: max(1, round(len(body) / rows))][:rows] if spread else body[:rows]
    return write_rows(path, picked, header)


def tiny_gguf(path, template: str | None):
    """A GGUF with metadata only (no tensors): enough for what is read before llama.cpp loads a file."""
    import gguf

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    if template is not None:
        writer.add_chat_template(template)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
