"""MkDocs hook: every bench script has its page, `docs/benchmarks/<script>.md`. The part above MARK (what it
measures and its command) is rewritten before every build from the script's own docstring, so it never drifts; the part
below holds the recorded figures, each section dated, with what they do and do not show, and is written by hand."""

import ast
import datetime
import re
from pathlib import Path

HELPERS = {"corpus.py", "replay_server.py"}  # imported by the benches, not benches themselves
MARK = "<!-- above: from the script's docstring (docs/hooks/bench_pages.py); below: written by hand -->"
RECORDED = re.compile(r"^## Recorded (\d{4}-\d{2}-\d{2})\b.*$", re.M)


def scripts(root: Path) -> list[Path]:
    return sorted(p for p in (root / "bench").glob("*.py") if p.name not in HELPERS)


def header(script: Path) -> str:
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    title, _, body = doc.partition("\n")
    return f"# `bench/{script.name}`\n\n{title}\n\n```text\n{body.strip()}\n```\n\n{MARK}\n"


def page_of(root: Path, script: Path) -> Path:
    return root / "docs" / "benchmarks" / f"{script.stem}.md"


def figures(page: Path) -> str:
    """The hand-written part of a bench page: everything below MARK."""
    text = page.read_text(encoding="utf-8")
    if MARK not in text:
        raise ValueError(f"{page}: no line {MARK!r}; the recorded figures go below it")
    return text.split(MARK, 1)[1].lstrip("\n")


def undated(text: str) -> list[str]:
    """The section headings of a page's figures that do not say when they were measured (`## Recorded YYYY-MM-DD, ...`,
    a real date); a page with no section at all is one problem too."""
    headings = re.findall(r"^## .*$", text, re.M)
    wrong = [h for h in headings if not RECORDED.match(h)]
    for h in headings:
        if (m := RECORDED.match(h)):
            try:
                datetime.date.fromisoformat(m.group(1))
            except ValueError:
                wrong.append(h)
    return wrong if headings else ["(no `## Recorded YYYY-MM-DD, machine` section)"]


def render(root: Path, script: Path) -> str:
    page = page_of(root, script)
    if not page.is_file():
        raise ValueError(f"bench/{script.name} has no page {page.relative_to(root)}: write its recorded figures there, "
                         f"below the line {MARK!r}")
    if (wrong := undated(figures(page))):
        raise ValueError(f"{page.relative_to(root)}: every section of figures is headed `## Recorded YYYY-MM-DD, machine`; "
                         f"not: {'; '.join(wrong)}")
    return header(script) + "\n" + figures(page)


def orphans(root: Path) -> list[Path]:
    """Bench pages whose script is gone."""
    kept = {page_of(root, s) for s in scripts(root)} | {root / "docs" / "benchmarks" / "index.md"}
    return sorted(set((root / "docs" / "benchmarks").glob("*.md")) - kept)


TABLE = ("<!-- table: written by docs/hooks/bench_pages.py from the scripts and their pages -->", "<!-- /table -->")


def summary(script: Path) -> str:
    """The docstring's first paragraph, on one line."""
    doc = ast.get_docstring(ast.parse(script.read_text(encoding="utf-8"))) or ""
    return " ".join(doc.split("\n\n", 1)[0].split()).replace("|", "\\|")


def table(root: Path) -> str:
    rows = ["| script | what it measures | recorded |", "|---|---|---|"]
    for script in scripts(root):
        dates = sorted(set(RECORDED.findall(figures(page_of(root, script)))), reverse=True)
        rows.append(f"| [`{script.name}`]({script.stem}.md) | {summary(script)} | {', '.join(dates) or 'never'} |")
    return "\n".join(rows)


def with_table(root: Path, index: str) -> str:
    start, end = TABLE
    if start not in index or end not in index:
        raise ValueError(f"docs/benchmarks/index.md: the lines {start!r} and {end!r} mark where the table goes")
    head, rest = index.split(start, 1)
    return f"{head}{start}\n{table(root)}\n{end}{rest.split(end, 1)[1]}"


def write(root: Path) -> list[Path]:
    """Bring every bench page's header, and the index's table, up to date with the scripts; the figures below the
    mark are kept as they are."""
    if (gone := orphans(root)):
        raise ValueError(f"{', '.join(p.name for p in gone)} in docs/benchmarks: no bench script of that name any more; "
                         "delete the page or restore the script")
    written = []
    for script in scripts(root):
        page, text = page_of(root, script), render(root, script)
        if page.read_text(encoding="utf-8") != text:
            page.write_text(text, encoding="utf-8")
        written.append(page)
    index = root / "docs" / "benchmarks" / "index.md"
    text = with_table(root, index.read_text(encoding="utf-8"))
    if index.read_text(encoding="utf-8") != text:
        index.write_text(text, encoding="utf-8")
    return [index, *written]


def on_pre_build(config, **_):
    write(Path(config["config_file_path"]).parent)
