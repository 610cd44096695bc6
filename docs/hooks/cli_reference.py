"""MkDocs hook: the CLI reference pages, written from the argparse parsers of `python -m calibrator` and
`python -m train` before every build, so they never drift from the code (`tests/test_docs.py` checks every flag)."""

import argparse
import os
from pathlib import Path

PAGES = {"cli-calibrator.md": ("python -m calibrator", "calibrator.cli.parser", "build"),
         "cli-train.md": ("python -m train", "train.__main__", "_parser")}


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every parser under `parser`, depth first, with the words that reach it."""
    found = [(path, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += commands(sub, (*path, name))
    return found


def page(program: str, parser: argparse.ArgumentParser) -> str:
    lines = [f"# `{program}`", "", "Generated from the command's argparse parser at build time; `--help` prints the same.", ""]
    for path, sub in commands(parser):
        title = " ".join((program, *path))
        lines += [f"## `{title}`", "", "```text", sub.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def write(folder: Path) -> list[Path]:
    import importlib

    os.environ["COLUMNS"] = "110"  # argparse wraps help to the terminal; a fixed width keeps the pages stable
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, (program, module, factory) in PAGES.items():
        parser = getattr(importlib.import_module(module), factory)()
        parser.prog = program
        target = folder / name
        text = page(program, parser)
        if not target.is_file() or target.read_text() != text:
            target.write_text(text)
        written.append(target)
    return written


def on_pre_build(config, **_):
    write(Path(config["docs_dir"]) / "reference")
