"""Gold-set rows written as a user would: the grader contract's header and a CSV writer."""

import csv
from pathlib import Path

HEADER = ["id", "context", "target_info", "candidate", "content_score", "format_score", "note"]


def write_csv(path: Path, rows: list[dict], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path
