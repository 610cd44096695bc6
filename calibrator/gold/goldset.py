"""Gold sets: human-labelled rows loaded from CSV or XLSX, validated row by row, split deterministically.

The columns are the user-facing contract (see goldsets/README.md). Every problem in a file is
collected before anything is reported, each with file, spreadsheet row and column, so a labeller
fixes the sheet in one pass.
"""

import datetime
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel, ValidationError, field_validator

from calibrator.gold.sheets import ErrorCell, Formula, GoldSetError, Problem, cell_value, read_records, text_cell
from calibrator.gold.splits import SPLITS, Split, SplitBalance, assign_splits, balance, dev_ids

__all__ = ["GoldRow", "GoldSet", "GoldSetError", "Problem", "cell_value", "load_goldset", "read_rows", "text_cell"]

SPEAKERS = ("patient:", "pharmacist:")


def parse_label(value: Any) -> float:
    """Accept ' 1 ', '0.50', '1.0', '0,5' and numbers; return 0.0, 0.5 or 1.0."""
    if isinstance(value, bool):
        raise ValueError(f"label must be 0, 0.5 or 1, got {value!r}")
    text = str(value).strip().replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"label must be 0, 0.5 or 1, got {str(value)!r}") from None
    for label in (0.0, 0.5, 1.0):
        if abs(number - label) < 1e-9:
            return label
    raise ValueError(f"label must be 0, 0.5 or 1, got {str(value).strip()!r}")


def dialogue_lines(value: Any, column: str) -> list[str]:
    """One `patient:` / `pharmacist:` turn per non-blank line, stripped."""
    lines = [line.strip() for line in str(value or "").replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines:
        raise ValueError(f"{column} is empty: give the dialogue, one `patient:` / `pharmacist:` turn per line")
    for n, line in enumerate(lines, 1):
        if not line.lower().startswith(SPEAKERS):
            raise ValueError(f"{column} line {n} must start with `patient:` or `pharmacist:`, got {line[:40]!r}")
    return lines


def patient_context(value: Any, why: str) -> str:
    """A `context` cell: dialogue lines with at least one `patient:` line (`why` says why one is needed)."""
    lines = dialogue_lines(value, "context")
    if not any(line.lower().startswith("patient:") for line in lines):
        raise ValueError(f"context has no `patient:` line: {why}")
    return "\n".join(lines)


def target_items(value: Any) -> list[str]:
    """`field: value` items separated by `;` (or already a list), normalised to `field: value`."""
    items = value if isinstance(value, list) else [item.strip() for item in str(value or "").split(";") if item.strip()]
    out = []
    for item in items:
        name, sep, val = str(item).partition(":")
        if not sep or not name.strip() or not val.strip():
            raise ValueError(f"target_info item {item!r} is not `field: value`")
        out.append(f"{name.strip()}: {val.strip()}")
    return out


class GoldRow(BaseModel):
    """What every gold row has: an id, a note, and a label the splits are stratified by."""

    required: ClassVar[tuple[str, ...]]
    optional: ClassVar[tuple[str, ...]]
    id_fields: ClassVar[tuple[str, ...]]  # a row without an id gets one hashed from these
    annotator_prefix: ClassVar[str | None] = None  # columns `<prefix><name>` hold one annotator's label each

    adjudicated: ClassVar[str]  # the column a review sheet's `adjudicated_label` replaces

    id: str
    note: str | None = None
    annotator: str | None = None  # who labelled the row
    labelled_at: str | None = None

    @field_validator("note", "annotator", "labelled_at", mode="before")
    @classmethod
    def _text(cls, value: Any) -> str | None:
        if isinstance(value, datetime.datetime) and value.time() == datetime.time():
            value = value.date()  # a date typed in a spreadsheet comes back as midnight
        if isinstance(value, datetime.date):
            return value.isoformat()
        return str(value).strip() or None if value is not None else None

    @property
    def label(self) -> Any:
        raise NotImplementedError

    def labels_text(self) -> str:
        """The row's labels in a line, for `goldset add`'s old → new report."""
        raise NotImplementedError

    def case_key(self) -> str:
        """What makes two rows the same case whatever their labels (near-duplicates in `goldset stats`)."""
        raise NotImplementedError


def _is_label(value: Any) -> bool:
    try:
        parse_label(value)
    except ValueError:
        return False
    return True


def stable_id(*values: Any) -> str:
    """An id from the content, so a row without one keeps the same id (and split) across edits of other rows."""
    text = "\x1f".join(str(v or "").strip() for v in values)
    return "g-" + hashlib.sha256(text.encode()).hexdigest()[:12]


# Columns added to the format after gold sets existed: left out of the hash when a row does not use them.
OPTIONAL_METADATA = ("annotations", "annotator", "labelled_at", "target_scope")


def canonical_row(row: GoldRow) -> dict[str, Any]:
    """The row as hashed: optional columns a row does not use are left out, so adding such columns to the
    format did not change the version of gold sets that never used them."""
    return row.model_dump(exclude={k for k in OPTIONAL_METADATA if not getattr(row, k, None)})


def content_hash(row: GoldRow) -> str:
    """Identity of a row's content and labels, whatever its id: how `goldset add` spots a row it already has."""
    data = {k: v for k, v in canonical_row(row).items() if k not in ("id", "note", "annotator", "labelled_at")}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()


def row_versions(rows: list[GoldRow]) -> dict[str, str]:
    """id -> short hash of the row's content and labels: what a calibration record keeps so a later run can
    name the rows that changed since."""
    return {r.id: content_hash(r)[:12] for r in rows}


class GoldSetChanges(BaseModel):
    """How a gold set differs from the version a prompt was calibrated on."""

    added: list[str] = []
    removed: list[str] = []
    changed: list[str] = []  # same id, other content or labels

    def describe(self, limit: int = 10) -> str:
        parts = []
        for name, ids in (("added", self.added), ("removed", self.removed), ("changed", self.changed)):
            if ids:
                parts.append(f"{len(ids)} {name} ({', '.join(ids[:limit])}{' …' if len(ids) > limit else ''})")
        return "; ".join(parts) or "no row differs (only metadata changed)"


def changed_rows(before: dict[str, str], rows: list[GoldRow]) -> GoldSetChanges:
    now = row_versions(rows)
    return GoldSetChanges(added=sorted(set(now) - set(before)), removed=sorted(set(before) - set(now)),
                          changed=sorted(i for i in set(now) & set(before) if now[i] != before[i]))


@dataclass(frozen=True)
class GoldSet:
    path: Path
    rows: list[GoldRow]
    splits: dict[str, Split]

    @property
    def sha256(self) -> str:
        """Version of the labels, independent of file format and row order."""
        canonical = sorted((canonical_row(r) for r in self.rows), key=lambda r: r["id"])
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()

    def human_agreement(self) -> tuple[float, int, list[str]] | None:
        """Mean pairwise qwk between annotator label columns over rows both labelled: the most any prompt
        can be expected to agree with 'the humans'. None with fewer than two annotators."""
        from calibrator.agreement.metrics import quadratic_weighted_kappa

        names = sorted({n for r in self.rows for n in getattr(r, "annotations", {})})
        if len(names) < 2:
            return None
        kappas, pairs = [], 0
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                both = [(r.annotations[a], r.annotations[b]) for r in self.rows if a in r.annotations and b in r.annotations]
                if len(both) >= 2:
                    kappas.append(quadratic_weighted_kappa([x for x, _ in both], [y for _, y in both]))
                    pairs = max(pairs, len(both))
        return (sum(kappas) / len(kappas), pairs, names) if kappas else None

    def split(self, name: Split) -> list[GoldRow]:
        return [r for r in self.rows if self.splits[r.id] == name]

    def fit_and_dev(self) -> tuple[list[GoldRow], list[GoldRow]]:
        """Train cut in two: rows an optimizer learns from, and the dev slice it selects its own candidates on."""
        train = self.split("train")
        dev = dev_ids([r.id for r in train])
        return [r for r in train if r.id not in dev], [r for r in train if r.id in dev]

    def split_ids(self) -> dict[str, list[str]]:
        """Every split's ids (dev is part of train), as a run records them."""
        fit, dev = self.fit_and_dev()
        return {**{s: sorted(r.id for r in self.split(s)) for s in SPLITS}, "dev": sorted(r.id for r in dev)}

    def balance(self) -> SplitBalance:
        return balance(self.rows, self.splits)

    def sizes(self) -> dict[str, int]:
        return {s: len(self.split(s)) for s in SPLITS}


@dataclass(frozen=True)
class Origin:
    sheet: str | None
    row: int


def read_rows(path: Path, row_model: type[GoldRow], *, sheet: str | None = None) -> list[tuple[GoldRow, Origin]]:
    """Validate every row of a file; raise GoldSetError listing all problems. A review sheet's filled-in
    `adjudicated_label` replaces the label it adjudicates (its note is kept beside the old one)."""
    problems: list[Problem] = []
    rows: list[tuple[GoldRow, Origin]] = []
    seen: dict[str, Origin] = {}
    file = str(path)
    checked: set[str | None] = set()
    for sheet_name, number, record in read_records(path, row_model.required, sheet):
        record = {str(k).strip().lower(): v for k, v in record.items() if k is not None}
        if sheet_name not in checked:
            missing = [c for c in row_model.required if c not in record]
            if missing:
                raise GoldSetError([Problem(file, 1, c, "required column is missing", sheet_name) for c in missing])
            checked.add(sheet_name)
        if all(v is None or str(v).strip() == "" for v in record.values()):
            continue  # blank spreadsheet line
        adjudicated = record.get("adjudicated_label")
        if adjudicated is not None and str(adjudicated).strip() != "":
            record[row_model.adjudicated] = adjudicated
            note = str(record.get("adjudication_note") or "").strip()
            if note:
                record["note"] = note
        fields = {k: record.get(k) for k in row_model.required + row_model.optional}
        prefix = row_model.annotator_prefix
        if prefix:
            fields["annotations"] = {k.removeprefix(prefix): v for k, v in record.items()
                                     if k.startswith(prefix) and k != prefix and v is not None and str(v).strip() != ""}
        flat = {k: v for k, v in fields.items() if k != "annotations"} | {prefix + k: v for k, v in fields.get("annotations", {}).items()}
        bad = [(k, v) for k, v in flat.items() if isinstance(v, (Formula, ErrorCell))]
        if bad:
            problems += [Problem(file, number, k, "formula cell: paste its value instead" if isinstance(v, Formula)
                                 else f"spreadsheet error {v.text}: fix or clear the cell", sheet_name) for k, v in bad]
            continue
        raw_id = str(fields.get("id") or "").strip()
        fields["id"] = raw_id or stable_id(*(fields[k] for k in row_model.id_fields))
        try:
            row = row_model.model_validate(fields)
        except ValidationError as e:
            for err in e.errors():
                column = str(err["loc"][0]) if err["loc"] else None
                if column == "annotations" and prefix:
                    wrong = [k for k, v in fields["annotations"].items() if not _is_label(v)]
                    column = ", ".join(prefix + k for k in wrong) or column
                problems.append(Problem(file, number, column, str(err["msg"]).removeprefix("Value error, "), sheet_name))
            continue
        if row.id in seen:
            first = seen[row.id]
            where = (f"sheet {first.sheet!r} " if first.sheet and first.sheet != sheet_name else "") + f"row {first.row}"
            problems.append(Problem(file, number, "id", f"duplicate id {row.id!r} (first used on {where})", sheet_name))
            continue
        seen[row.id] = Origin(sheet_name, number)
        rows.append((row, Origin(sheet_name, number)))
    if problems:
        raise GoldSetError(problems)
    return rows


def load_goldset(path: Path, row_model: type[GoldRow], *, sheet: str | None = None) -> GoldSet:
    """Load and validate every row; raise GoldSetError listing all problems, or return the split gold set."""
    rows = [row for row, _ in read_rows(path, row_model, sheet=sheet)]
    if not rows:
        raise GoldSetError([Problem(str(path), None, None, "no rows: expected a header and at least one labelled row")])
    return GoldSet(path=path, rows=rows, splits=assign_splits(rows))
