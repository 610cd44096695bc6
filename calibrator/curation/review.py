"""`review`: a run's disagreements mixed with a random sample of its agreements, shuffled, as a spreadsheet
to adjudicate blind and bring back through `goldset add`.

Blind, because a reviewer who sees the model's answer, or knows that every row is one the model got wrong,
drifts towards the model. The visible columns are the gold-set contract only, filled from the gold set as it
is now (note and annotator columns included), so a row left alone comes back through `goldset add` as
unchanged and keeps its id, hence its split. The run's side (split, prediction, error) is last: a column
group collapsed by default in the XLSX, plain last columns in a CSV.

What an adjudicated label is, and which columns carry the run's labels, the component says (`review_columns`,
`adjudication_choices`, `adjudication_hint`).
Every cell is written as text: a value that starts with = + - or @ stays the literal text a labeller
typed or a model produced, never a formula a spreadsheet app would run.
"""

import csv
import io
import json
import random
from collections import Counter
from pathlib import Path

from openpyxl import Workbook
from openpyxl.styles import Font
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.properties import Outline
from pydantic import BaseModel

from calibrator.components import COMPONENTS
from calibrator.calibration.disagreements import disagreements, read_predictions
from calibrator.gold.goldset import GoldRow, read_rows
from calibrator.gold.sheets import GoldSetError, Problem, cell_value, text_cell
from calibrator.prompt import write_atomic
from calibrator.calibration.record import judged_side

ADJUDICATION = ("adjudicated_label", "adjudication_note")


class Review(BaseModel):
    header: list[str]
    hidden: list[str]  # the run's columns, last in `header`: what a reviewer must not see while labelling
    rows: list[list[str]]
    component: str
    disagreements: int
    agreements: int
    agreements_available: int
    splits: dict[str, int]  # exported rows per split
    goldset: str  # the gold set the visible columns come from (the path tried, when not found)
    goldset_found: bool  # False: the visible columns come from predictions.csv, without note or annotator columns
    relabelled: list[str]  # ids whose gold label changed since the run: exported with the label they have now
    dropped: list[str]  # ids no longer in the gold set: left out, so a review cannot bring a deleted row back
    instructions: list[str] | None = None  # the "how to review" sheet's lines, when not a run's review


def _column(prefix: str, suffix: str) -> str:
    return f"{prefix}_{suffix}" if suffix else prefix


def sample_by_split(pool: list[dict[str, str]], n: int, rng: random.Random) -> list[dict[str, str]]:
    """Up to `n` rows of `pool`, every split getting one before any gets a second, then in proportion to
    its share of the pool."""
    by_split: dict[str, list[dict[str, str]]] = {}
    for row in pool:
        by_split.setdefault(row["split"], []).append(row)
    quota = dict.fromkeys(by_split, 0)
    for _ in range(min(n, len(pool))):
        split = min((s for s in by_split if quota[s] < len(by_split[s])),
                    key=lambda s: (quota[s] / len(by_split[s]), -len(by_split[s]), s))
        quota[split] += 1
    return [row for split in sorted(by_split) for row in rng.sample(by_split[split], quota[split])]


def build_review(run_dir: Path, *, agreements: int | None = None, seed: int = 0, goldset: Path | None = None) -> Review:
    """Every disagreement of every split in the run's predictions.csv, plus `agreements` agreeing rows (default:
    as many as the disagreements) sampled by split, all shuffled with `seed`. Rows are read from `goldset`
    (default: the gold set recorded in run.json) when it exists."""
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    component = COMPONENTS[record["component"]]
    labels = component.review_columns
    side = judged_side(record)
    predictions = read_predictions(run_dir / "predictions.csv")
    source = goldset or Path(record["goldset"]["path"])
    current = {r.id: r for r, _ in read_rows(source, component.row_model)} if source.is_file() else None
    dropped = [r["id"] for r in predictions if current is not None and r["id"] not in current]
    if predictions and len(dropped) == len(predictions):
        raise GoldSetError([Problem(str(source), None, None, f"holds none of the {len(predictions)} rows of {run_dir}: "
                                    "not the gold set this run was scored on; pass --goldset PATH")])
    predictions = [r for r in predictions if current is None or r["id"] in current]

    errors = {d.id: d.error for d in disagreements(component, predictions, side)}
    rng = random.Random(seed)
    agreeing = [r for r in predictions if r["id"] not in errors]
    picked = [r for r in predictions if r["id"] in errors]
    picked += sample_by_split(agreeing, len(errors) if agreements is None else agreements, rng)
    rng.shuffle(picked)

    def gold_row(r: dict[str, str]) -> GoldRow:
        if current is not None:
            return current[r["id"]]
        return component.row_model.model_validate({"id": r["id"], **{k: r[k] for k in component.inputs},
                                                   **{c: r[_column("gold", s)] for c, s in labels.items()}})

    gold = {r["id"]: gold_row(r) for r in picked}
    relabelled = [r["id"] for r in picked if any(cell_value(getattr(gold[r["id"]], c)) != r[_column("gold", s)] for c, s in labels.items())]
    model = component.row_model
    prefix = model.annotator_prefix
    annotators = sorted({n for row in gold.values() for n in getattr(row, "annotations", {})})
    visible = ["id", *model.required, *(c for c in model.optional if c != "id")]
    hidden = ["split", *(f"{side}_{c}" for c in labels), "error"]
    rows = [[*(cell_value(getattr(gold[r["id"]], c)) for c in visible), *(cell_value(gold[r["id"]].annotations.get(n)) for n in annotators),
             "", "", r["split"], *(r[_column(side, s)] for s in labels.values()), f"{errors.get(r['id'], 0.0):g}"]
            for r in picked]
    return Review(header=[*visible, *(f"{prefix}{n}" for n in annotators), *ADJUDICATION, *hidden], hidden=hidden, rows=rows,
                  component=component.name, disagreements=len(errors), agreements=len(picked) - len(errors),
                  agreements_available=len(agreeing), splits=dict(sorted(Counter(r["split"] for r in picked).items())),
                  goldset=str(source), goldset_found=current is not None, relabelled=relabelled, dropped=dropped)


def hidden_columns(review: Review) -> str:
    """The spreadsheet letters of the run's columns, e.g. `M:P`."""
    first = len(review.header) - len(review.hidden) + 1
    return f"{get_column_letter(first)}:{get_column_letter(len(review.header))}"


def write_review(review: Review, out: Path) -> None:
    """Write `review` to `out` (.xlsx or .csv) via a temporary file renamed into place."""
    if out.suffix.lower() == ".csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(review.header)
        writer.writerows([[text_cell(v) for v in row] for row in review.rows])
        write_atomic(out, buffer.getvalue())
        return
    header, rows = review.header, review.rows
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
    label_column = header.index("adjudicated_label") + 1
    choices = COMPONENTS[review.component].adjudication_choices
    if choices:
        rule = DataValidation(type="list", formula1='"' + ",".join(choices) + '"', allow_blank=True)
        sheet.add_data_validation(rule)
        rule.add(f"{sheet.cell(row=2, column=label_column).coordinate}:{sheet.cell(row=max(2, len(rows) + 1), column=label_column).coordinate}")
    first_hidden = len(header) - len(review.hidden) + 1
    for index, name in enumerate(header, 1):
        dimension = sheet.column_dimensions[get_column_letter(index)]
        dimension.width = 60 if name in ("context", "future") else 18
        if index >= first_hidden:
            dimension.outline_level, dimension.hidden = 1, True
    sheet.column_dimensions[get_column_letter(first_hidden - 1)].collapsed = True
    sheet.sheet_properties.outlinePr = Outline(summaryBelow=True, summaryRight=False)  # the + sits by the last visible column
    sheet.column_dimensions.max_outline = 1  # openpyxl writes <sheetFormatPr outlineLevelCol> before computing it; Excel needs it
    notes = book.create_sheet("how to review")
    for line in review.instructions or _instructions(review):
        notes.append([line])
    notes.column_dimensions["A"].width = 120
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    book.save(tmp)
    tmp.replace(out)


def _instructions(review: Review) -> list[str]:
    label = COMPONENTS[review.component].adjudication_hint
    return [
        "Each row of the `review` sheet is a gold label to check. Some are rows the model got wrong, some rows it got right,",
        "in random order: judge each on its own.",
        f"If the label is wrong, put the right one in adjudicated_label ({label}) and say why in adjudication_note.",
        "If it is right, leave both empty: the row then comes back unchanged.",
        f"Columns {hidden_columns(review)} ({', '.join(review.hidden)}) are grouped and hidden so you label blind;",
        "expand them with the + above the column letters once you have decided.",
        f"Then: python -m calibrator goldset add <this file> --component {review.component}",
        "Rows keep their ids, so their split never moves.",
    ]
