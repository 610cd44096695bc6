"""The docs: the site builds strictly (every page in the nav, every link resolved), the CLI reference names every flag
of both parsers, the README stays short, and every `python -m calibrator|train` command the README and the docs show
is one the parsers accept (the quick ones are run)."""

import argparse
import os
import re
import shlex
import subprocess
import sys

import pytest

from support import ROOT

sys.path.insert(0, str(ROOT / "docs" / "hooks"))
import cli_reference  # noqa: E402

COMMAND = re.compile(r"(?:\.venv/bin/)?python -m (calibrator|train)\b([^`|#]*)")
CODE = re.compile(r"```[^\n]*\n(.*?)```|`([^`]+)`", re.S)


def flags(parser: argparse.ArgumentParser) -> set[str]:
    return {option for _, sub in cli_reference.commands(parser) for action in sub._actions for option in action.option_strings}


def missing(parser: argparse.ArgumentParser, text: str) -> list[str]:
    """The parser's flags and commands that a reference page does not name."""
    gone = [f for f in flags(parser) if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    gone += [" ".join(path) for path, _ in cli_reference.commands(parser)
             if f"## `{' '.join((parser.prog, *path))}`" not in text]
    return sorted(gone)


def test_the_cli_reference_names_every_flag_of_every_command(tmp_path):
    from calibrator.cli.parser import build
    from train.__main__ import _parser

    pages = dict(zip(cli_reference.PAGES, cli_reference.write(tmp_path)))
    for name, parser in (("cli-calibrator.md", build()), ("cli-train.md", _parser())):
        assert len(flags(parser)) > 20 and missing(parser, pages[name].read_text()) == [], name


def test_a_flag_or_command_left_out_of_the_reference_is_caught():
    from calibrator.cli.parser import build

    parser = build()
    page = cli_reference.page("python -m calibrator", parser)
    assert missing(parser, page.replace("--policy-goldset", "--omitted")) == ["--policy-goldset"]
    assert missing(parser, page.replace("## `python -m calibrator suggest`", "## suggest")) == ["suggest"]


GENERATED = ("docs/index.md", "docs/reference/", "docs/benchmarks/")  # written by docs/hooks at build time


def shown_commands(extra: list | None = None) -> list[tuple[str, str, list[str]]]:
    """(where, program, argv) for every command the README and the docs' pages show, in code blocks (a line each, a
    trailing backslash joining the next) and inline code (wrapped lines joined); `[--flag VALUE]` as a synopsis writes
    an optional part. A bare `python -m train` names the program, not a command."""
    found = []
    pages = [p for p in sorted((ROOT / "docs").rglob("*.md"))
             if p == ROOT / "docs/benchmarks/index.md" or not p.relative_to(ROOT).as_posix().startswith(GENERATED)]
    for path in [ROOT / "README.md", *pages, *(extra or [])]:
        for block, inline in CODE.findall(path.read_text(encoding="utf-8")):
            lines = block.replace("\\\n", " ").splitlines() if block else [" ".join(inline.split())]
            for line in lines:
                for match in COMMAND.finditer(line):
                    try:
                        argv = shlex.split(match.group(2).replace("[", " ").replace("]", " "))
                    except ValueError:  # a quote left open: a JSON body or a shell fragment, not a command line
                        continue
                    if argv and not any(a in ("...", "…") for a in argv):
                        found.append((path.name if extra and path in extra else path.relative_to(ROOT).as_posix(),
                                      match.group(1), argv))
    return found


def test_every_command_the_readme_and_docs_show_is_accepted_by_its_parser(tmp_path):
    import contextlib
    import io

    import bench_pages
    from calibrator.cli.parser import build
    from train.__main__ import _parser

    shown = shown_commands(bench_pages.write(ROOT, tmp_path))  # the bench pages as the build writes them
    assert len(shown) > 40 and any(w == "README.md" for w, _, _ in shown)
    refused = []
    for where, program, argv in shown:
        parser = build() if program == "calibrator" else _parser()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                parser.parse_args(argv)
        except SystemExit as e:
            if e.code:
                refused.append(f"{where}: python -m {program} {' '.join(argv)}")
    assert refused == []


def test_the_readme_is_at_most_200_lines_and_its_quick_commands_run(tmp_path, cli):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    for argv in (["--help"], ["serve", "--help"], ["suggest", "--help"], ["review", "--help"]):
        assert cli.calibrator(*argv).code == 0
    assert cli.train("--help").code == 0
    made = cli.calibrator("goldset", "template", "--component", "grader", "-o", tmp_path / "new.xlsx")
    assert made.code == 0 and (tmp_path / "new.xlsx").is_file()


def test_the_public_import_paths_the_docs_name_resolve():
    import importlib

    text = "\n".join(p.read_text(encoding="utf-8") for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
    named = set(re.findall(r"`((?:calibrator|train)(?:\.\w+)+)", text))
    assert {"calibrator.reward.load_reward", "calibrator.reward"} <= named
    unresolved = []
    for name in sorted(named):
        module, _, attr = name.rpartition(".")
        try:
            importlib.import_module(name)
        except ImportError:
            try:
                getattr(importlib.import_module(module), attr)
            except (ImportError, AttributeError):
                unresolved.append(name)
    assert unresolved == []


@pytest.mark.slow
def test_the_site_builds_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cli-calibrator" / "index.html").is_file()
    assert "--policy-goldset" in (tmp_path / "site" / "reference" / "cli-calibrator" / "index.html").read_text()
