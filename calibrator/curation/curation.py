"""Gold sets by spreadsheet: add and update rows, describe a gold set, flag labels worth a second look.

The gold set on disk (goldsets/<component>.csv) only changes through `add_rows`, which validates the
whole incoming file first and writes nothing if any row is bad; otherwise it keeps the previous file
as `<name>.csv.bak` and replaces it in one rename. Rows are matched by id (an update when the labels
changed) or, without an id match, by content (already present: skipped).
"""

import csv
import io
import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from calibrator.gold.goldset import SPLITS, GoldRow, GoldSet, GoldSetError, content_hash, read_rows
from calibrator.gold.sheets import cell_value, text_cell
from calibrator.prompt import write_atomic
from calibrator.components import COMPONENTS
from calibrator.calibration.disagreements import disagreements, read_predictions
from calibrator.gold.splits import SplitBalance


class Change(BaseModel):
    id: str
    before: str
    after: str


class AddResult(BaseModel):
    added: list[str] = []
    updated: list[Change] = []
    unchanged: int = 0
    rejected: int = 0
    written: bool = False
    backup: str | None = None


def goldset_csv(rows: list[GoldRow], row_model: type[GoldRow]) -> str:
    """The canonical CSV of a gold set: contract columns, then annotator columns; never a live formula."""
    annotators = sorted({n for r in rows for n in getattr(r, "annotations", {})})
    columns = ["id", *row_model.required, *(c for c in row_model.optional if c != "id")]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns + [f"{row_model.annotator_prefix}{n}" for n in annotators])
    for row in rows:
        values = [cell_value(getattr(row, c)) for c in columns] + [cell_value(row.annotations.get(n)) for n in annotators]
        writer.writerow([text_cell(v) for v in values])
    return out.getvalue()


def add_rows(store: Path, incoming: Path, row_model: type[GoldRow], *, sheet: str | None = None, dry_run: bool = False) -> AddResult:
    """Merge `incoming` into `store`. Raises GoldSetError (nothing written) if any incoming row is invalid."""
    try:
        new_rows = read_rows(incoming, row_model, sheet=sheet)
    except GoldSetError as e:
        e.rejected = len({(p.sheet, p.row) for p in e.problems})
        raise
    existing = [r for r, _ in read_rows(store, row_model)] if store.exists() else []
    by_id = {r.id: i for i, r in enumerate(existing)}
    hashes = {content_hash(r) for r in existing}
    merged, result = list(existing), AddResult()
    for row, _ in new_rows:
        if row.id in by_id:
            old = merged[by_id[row.id]]
            if content_hash(old) == content_hash(row) and old.note == row.note:
                result.unchanged += 1
                continue
            merged[by_id[row.id]] = row
            result.updated.append(Change(id=row.id, before=old.labels_text(), after=row.labels_text()))
        elif content_hash(row) in hashes:
            result.unchanged += 1
        else:
            by_id[row.id] = len(merged)
            hashes.add(content_hash(row))
            merged.append(row)
            result.added.append(row.id)
    if (result.added or result.updated) and not dry_run:
        if store.exists():
            backup = store.with_name(store.name + ".bak")
            shutil.copy2(store, backup)
            result.backup = str(backup)
        write_atomic(store, goldset_csv(merged, row_model))
        result.written = True
    return result


class Stats(BaseModel):
    rows: int
    labels: dict[str, int]
    splits: dict[str, int]
    balance: SplitBalance
    duplicates: list[list[str]]  # same content and labels under different ids
    near_duplicates: list[list[str]]  # the same case (GoldRow.case_key), any labels
    annotator_disagreements: list[str]
    annotators: list[str]
    human_qwk: float | None
    human_n: int | None


def stats(goldset: GoldSet) -> Stats:
    by_hash: dict[str, list[str]] = {}
    by_case: dict[str, list[str]] = {}
    for row in goldset.rows:
        by_hash.setdefault(content_hash(row), []).append(row.id)
        by_case.setdefault(row.case_key(), []).append(row.id)
    disagree = [r.id for r in goldset.rows if len({*getattr(r, "annotations", {}).values()}) > 1]
    human = goldset.human_agreement()
    return Stats(
        rows=len(goldset.rows), labels=dict(sorted(Counter(cell_value(r.label) for r in goldset.rows).items())), splits=goldset.sizes(),
        balance=goldset.balance(),
        duplicates=[ids for ids in by_hash.values() if len(ids) > 1], near_duplicates=[ids for ids in by_case.values() if len(ids) > 1],
        annotator_disagreements=disagree, annotators=human[2] if human else [], human_qwk=human[0] if human else None,
        human_n=human[1] if human else None)


def describe_stats(s: Stats) -> str:
    lines = [f"{s.rows} rows; labels: " + ", ".join(f"{k}: {v}" for k, v in s.labels.items()),
             "splits (by a hash of each id, so a row never moves): " + ", ".join(f"{k} {s.splits[k]}" for k in SPLITS)]
    lines += [f"  label {b.label}: " + ", ".join(f"{k} {b.counts[k]}" for k in SPLITS) for b in s.balance.labels]
    lines += [f"warning: {w}" for w in s.balance.warnings]
    lines.append(f"exact duplicates: {len(s.duplicates)}" + "".join(f"\n  {' = '.join(ids)}" for ids in s.duplicates))
    lines.append(f"near-duplicates (same case, maybe different labels): {len(s.near_duplicates)}"
                 + "".join(f"\n  {' ~ '.join(ids)}" for ids in s.near_duplicates))
    if s.annotators:
        lines.append(f"annotators: {', '.join(s.annotators)}; human-human qwk {s.human_qwk:.2f} over {s.human_n} rows")
        lines.append(f"rows where annotators disagree: {len(s.annotator_disagreements)}"
                     + (f" ({', '.join(s.annotator_disagreements[:20])}{' …' if len(s.annotator_disagreements) > 20 else ''})"
                        if s.annotator_disagreements else ""))
    return "\n".join(lines)


class Suspect(BaseModel):
    id: str
    gold: str
    runs: int  # runs that scored this row
    both_wrong: int  # runs where the baseline and the calibrated prompt both disagreed with gold
    mean_error: float
    predictions: list[str]  # "baseline/calibrated" per run


def audit(component: str, run_dirs: list[Path]) -> list[Suspect]:
    """Gold rows that the baseline and the calibrated prompt both contradict, in as many runs (seeds) as
    possible: candidates for a human re-check, ranked by how consistently and how far they were missed."""
    seen: dict[str, dict[str, Any]] = {}
    for run_dir in run_dirs:
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        if record["component"] != component:
            raise ValueError(f"{run_dir} is a {record['component']} run, not {component}")
        if not record.get("calibrated"):
            raise ValueError(f"{run_dir} is an eval; audit needs `run` folders (baseline and calibrated)")
        rows = read_predictions(run_dir / "predictions.csv")
        wrong = {side: {d.id: d for d in disagreements(COMPONENTS[component], rows, side)} for side in ("baseline", "calibrated")}
        for row in rows:
            entry = seen.setdefault(row["id"], {"gold": "", "runs": 0, "both": 0, "errors": [], "predictions": []})
            entry["runs"] += 1
            base, cal = wrong["baseline"].get(row["id"]), wrong["calibrated"].get(row["id"])
            entry["gold"] = (base or cal).gold if (base or cal) else entry["gold"]
            entry["predictions"].append(f"{base.predicted if base else 'agrees'}/{cal.predicted if cal else 'agrees'}")
            if base and cal:
                entry["both"] += 1
                entry["errors"].append((base.error + cal.error) / 2)
    suspects = [Suspect(id=i, gold=e["gold"], runs=e["runs"], both_wrong=e["both"], mean_error=sum(e["errors"]) / len(e["errors"]),
                        predictions=e["predictions"]) for i, e in seen.items() if e["both"]]
    return sorted(suspects, key=lambda s: (-s.both_wrong / s.runs, -s.mean_error, -s.both_wrong, s.id))


