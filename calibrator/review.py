"""`review`: a run's disagreements as a spreadsheet for adjudication, ready to go back through the gold-set
workflow (columns follow the gold-set contract, plus the prediction and two empty columns to fill).

The adjudicated label is a content score (0 / 0.5 / 1) for the grader, and the corrected `target_info`
(`field: value; ...`) for the extractor, whose decision follows from the dialogue itself.
Every cell is written as text: a value that starts with = + - or @ stays the literal text a labeller
typed or a model produced, never a formula a spreadsheet app would run.
"""

from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.worksheet.datavalidation import DataValidation

from calibrator.prompt import write_atomic
from calibrator.report import view

ADJUDICATION = ("adjudicated_label", "adjudication_note")


def review_rows(run_dir: Path) -> tuple[list[str], list[list[str]]]:
    import json

    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    rows = view.read_predictions(run_dir / "predictions.csv")
    side, component = view.predicted_side(record), record["component"]
    wanted = {d.id: d for d in view.disagreements(record, rows)}
    if component == "grader":
        header = ["id", "split", "context", "target_info", "candidate", "content_score", "format_score",
                  f"{side}_content_score", f"{side}_format_score", "error", *ADJUDICATION]
        pick = lambda r: [r["id"], r["split"], r["context"], r["target_info"], r["candidate"], r["gold"], r.get("gold_format", ""),  # noqa: E731
                          r[side], r.get(f"{side}_format", ""), f"{wanted[r['id']].error:g}", "", ""]
    else:
        header = ["id", "split", "context", "future", "target_info", "decision",
                  f"{side}_target_info", f"{side}_decision", "error", *ADJUDICATION]
        pick = lambda r: [r["id"], r["split"], r["context"], r["future"], r["gold_items"], r["gold_decision"],  # noqa: E731
                          r[f"{side}_items"], r[f"{side}_decision"], f"{wanted[r['id']].error:g}", "", ""]
    ordered = sorted((r for r in view.focus_rows(record, rows) if r["id"] in wanted), key=lambda r: -wanted[r["id"]].error)
    return header, [pick(r) for r in ordered]


def write_review(run_dir: Path, out: Path) -> int:
    """Write the disagreements of `run_dir` to `out` (.xlsx or .csv); returns how many rows."""
    header, rows = review_rows(run_dir)
    if out.suffix.lower() == ".csv":
        import csv
        import io

        from calibrator.goldset import text_cell

        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(header)
        writer.writerows([[text_cell(v) for v in row] for row in rows])
        write_atomic(out, buffer.getvalue())
        return len(rows)
    book = Workbook()
    sheet = book.active
    sheet.title = "review"
    sheet.append(header)
    for cell in sheet[1]:
        cell.font = Font(bold=True)
    for row in rows:
        sheet.append(row)
    for line in sheet.iter_rows(min_row=2):
        for cell in line:
            cell.data_type = "s"  # openpyxl would store '=…' as a formula
    sheet.freeze_panes = "A2"
    if "content_score" in header:
        rule = DataValidation(type="list", formula1='"0,0.5,1"', allow_blank=True)
        sheet.add_data_validation(rule)
        column = header.index("adjudicated_label") + 1
        rule.add(f"{sheet.cell(row=2, column=column).coordinate}:{sheet.cell(row=max(2, len(rows) + 1), column=column).coordinate}")
    for index, name in enumerate(header, 1):
        sheet.column_dimensions[sheet.cell(row=1, column=index).column_letter].width = 60 if name in ("context", "future") else 18
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    book.save(tmp)
    tmp.replace(out)
    return len(rows)
