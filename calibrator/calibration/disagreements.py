"""A run's disagreements with gold, computed once from its predictions.csv: the report shows them, `review` exports
them, `goldset audit` ranks them. What counts as a disagreement and how large it is belongs to the component
(`Component.disagreement`); this module only reads the file and orders the result."""

import csv
from pathlib import Path

from calibrator.components import Component, Disagreement
from calibrator.gold.sheets import uncell


def read_predictions(path: Path) -> list[dict[str, str]]:
    """predictions.csv as written, with the quote that guards formula-looking cells taken off again."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{k: uncell(v or "") for k, v in row.items()} for row in csv.DictReader(f)]


def disagreements(component: Component, rows: list[dict[str, str]], side: str, splits: tuple[str, ...] | None = None) -> list[Disagreement]:
    """Rows (of `splits`, default all) where `side`'s prediction differs from gold, largest error first."""
    found = [component.disagreement(row, side) for row in rows if splits is None or row["split"] in splits]
    return sorted((d for d in found if d is not None), key=lambda d: -d.error)
