"""The docs: the site builds strictly (every page in the nav, every link resolved), the CLI reference names every flag
of both parsers, the README stays short, and every `python -m calibrator|train` command the README and the docs show
is one the parsers accept (the quick ones are run)."""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

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


GENERATED = ("docs/index.md", "docs/reference/")  # written whole by docs/hooks at build time, from the README and the parsers


def pages() -> list:
    """The README and every docs page a person writes (a bench page's header is checked against its script below)."""
    return [ROOT / "README.md", *(p for p in sorted((ROOT / "docs").rglob("*.md"))
                                  if not p.relative_to(ROOT).as_posix().startswith(GENERATED))]


def command_lines(text: str) -> list[str]:
    """Every line of a code block (a trailing backslash joining the next) and every inline code span (wrapped lines
    joined), one string each."""
    lines = []
    for block, inline in CODE.findall(text):
        lines += block.replace("\\\n", " ").splitlines() if block else [" ".join(inline.split())]
    return lines


def shown_commands() -> list[tuple[str, str, list[str]]]:
    """(where, program, argv) for every `python -m calibrator|train` command the README and the docs' pages show;
    `[--flag VALUE]` as a synopsis writes an optional part. A bare `python -m train` names the program, not a command."""
    found = []
    for path in pages():
        for line in command_lines(path.read_text(encoding="utf-8")):
            for match in COMMAND.finditer(line):
                try:
                    argv = shlex.split(match.group(2).replace("[", " ").replace("]", " "))
                except ValueError:  # a quote left open: a JSON body or a shell fragment, not a command line
                    continue
                if argv and not any(a in ("...", "…") for a in argv):
                    found.append((path.relative_to(ROOT).as_posix(), match.group(1), argv))
    return found


def test_every_command_the_readme_and_docs_show_is_accepted_by_its_parser():
    import contextlib
    import io

    from calibrator.cli.parser import build
    from train.__main__ import _parser

    shown = shown_commands()
    assert len(shown) > 40 and any(w == "README.md" for w, _, _ in shown)
    assert any(w.startswith("docs/benchmarks/") for w, _, _ in shown)  # the bench pages are read too
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


# Programs a guide asks the reader to run where they are installed (a GPU machine, a laptop), not in this repository's
# environment: named here so that any other program a page shows must exist in .venv or in the repository.
ELSEWHERE = {"vllm": "vLLM, on the GPU machine", "ollama": "Ollama, on the machine that runs it"}
PROGRAMS = re.compile(r"^(?:\$\s+)?((?:\.venv/bin/)?(?:python3?|bash|accelerate|trl|vllm|ollama)\b.*)$")
SHELL_BLOCK = re.compile(r"```(?:bash|sh|shell|console)\n(.*?)```", re.S)


def script_flags(script) -> set[str]:
    """The options a bench script's argparse parser declares, read from its source (no import: some load torch)."""
    import ast

    calls = [n for n in ast.walk(ast.parse(script.read_text(encoding="utf-8")))
             if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "add_argument"]
    return {"-h", "--help"} | {a.value for c in calls for a in c.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}


def missing_program(command: str) -> str | None:
    """Why a shell command a page shows does not exist here, or None. `python -m calibrator|train` are the parsers'
    (the test above); a module must import, a script must exist and declare every --flag shown, `bash FILE` needs the
    file, accelerate and trl must be installed, and `accelerate launch ... -m MODULE` runs a module that exists."""
    try:
        argv = shlex.split(command.replace("[", " ").replace("]", " "), comments=True)
    except ValueError:
        return f"cannot be split into words: {command}"
    program = argv[0].removeprefix(".venv/bin/")
    if program in ELSEWHERE or len(argv) == 1:  # a program named in passing, not a command line
        return None
    if program in ("python", "python3"):
        if argv[1:2] == ["-m"]:
            return None if _module_exists(argv[2]) else f"no module {argv[2]}"
        script = ROOT / argv[1]
        if not script.is_file():
            return f"no file {argv[1]}"
        unknown = sorted({a.split("=")[0] for a in argv[2:] if a.startswith("-")} - script_flags(script))
        return f"{argv[1]} has no option {', '.join(unknown)}" if unknown else None
    if program == "bash":
        return None if (ROOT / argv[1]).is_file() else f"no file {argv[1]}"
    if not (Path(sys.prefix) / "bin" / program).exists():  # the environment the tests run in: .venv
        return f"{program} is not installed in .venv"
    if program == "accelerate" and "-m" in argv:
        module = argv[argv.index("-m") + 1]
        return None if _module_exists(module) else f"no module {module}"
    return None


def _module_exists(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # a parent package that does not exist
        return False


def shell_commands(text: str) -> list[str]:
    """The commands a page shows: each line of a bash/sh/console block that is not a comment (split at `&&`), and each
    line of another block or inline span that starts with a program this project runs."""
    found = []
    for block in SHELL_BLOCK.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip() and not line.strip().startswith("#"):
                found += [part.strip() for part in line.split("&&")]
    for line in command_lines(text):
        for part in line.split("&&"):
            match = PROGRAMS.match(part.strip())
            if match and match.group(1) not in found:
                found.append(match.group(1))
    return found


def test_every_shell_command_the_docs_show_is_one_that_exists():
    shown = [(path.relative_to(ROOT).as_posix(), c) for path in pages() for c in shell_commands(path.read_text(encoding="utf-8"))]
    assert len(shown) > 60 and any("bench/" in c for _, c in shown) and any(c.startswith("vllm") for _, c in shown)
    assert [f"{where}: {why}" for where, c in shown if (why := missing_program(c))] == []


def test_a_command_that_does_not_exist_is_caught():
    page = ("```bash\n.venv/bin/python -m calibrator run\nmake calibrate\n```\n"
            "`.venv/bin/python bench/judge_floor.py --budget 3` and `bash .ci/missing` and `.venv/bin/python bench/gone.py`"
            " and `python -m calibrator.reward.servce` and `accelerate launch -m trian run`")
    found = shell_commands(page)
    assert found == [".venv/bin/python -m calibrator run", "make calibrate", ".venv/bin/python bench/judge_floor.py --budget 3",
                     "bash .ci/missing", ".venv/bin/python bench/gone.py", "python -m calibrator.reward.servce",
                     "accelerate launch -m trian run"]
    assert [missing_program(c) for c in found] == [
        None, "make is not installed in .venv", "bench/judge_floor.py has no option --budget", "no file .ci/missing",
        "no file bench/gone.py", "no module calibrator.reward.servce", "no module trian"]


HELP_EACH = """
import contextlib, io, json, runpy, sys
answers = {}
for script in sys.argv[1:]:
    sys.argv, out = [script, "--help"], io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path(script, run_name="__main__")
        answers[script] = "ran instead of printing its usage"
    except SystemExit as e:
        answers[script] = None if e.code in (0, None) and "usage:" in out.getvalue() else f"exit {e.code}"
    except BaseException as e:
        answers[script] = f"{type(e).__name__}: {e}"
print(json.dumps(answers))
"""


@pytest.mark.slow
def test_every_bench_script_answers_help():
    """Each script run as `python bench/X.py --help`, all in one child process so torch and DSPy are imported once."""
    import json

    import bench_pages

    scripts = [str(s) for s in bench_pages.scripts(ROOT)]
    done = subprocess.run([sys.executable, "-c", HELP_EACH, *scripts], cwd=ROOT, capture_output=True, text=True, timeout=600)
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(answers) == len(scripts) >= 14
    assert {Path(s).name: why for s, why in answers.items() if why} == {}


def test_every_bench_script_has_its_page_in_step_with_its_docstring_with_dated_figures():
    import bench_pages

    scripts = bench_pages.scripts(ROOT)
    assert len(scripts) >= 14
    stale = [script.name for script in scripts  # render refuses a page without one, or with an undated section
             if bench_pages.page_of(ROOT, script).read_text(encoding="utf-8") != bench_pages.render(ROOT, script)]
    index = (ROOT / "docs/benchmarks/index.md").read_text(encoding="utf-8")
    assert stale == [] and bench_pages.orphans(ROOT) == [] and bench_pages.with_table(ROOT, index) == index


def test_a_bench_without_a_page_or_with_a_changed_docstring_is_caught(tmp_path):
    import shutil

    import bench_pages

    (tmp_path / "bench").mkdir()
    (tmp_path / "docs" / "benchmarks").mkdir(parents=True)
    shutil.copy(ROOT / "bench" / "judge_floor.py", tmp_path / "bench")
    shutil.copy(ROOT / "docs" / "benchmarks" / "index.md", tmp_path / "docs" / "benchmarks")
    with pytest.raises(ValueError, match="bench/judge_floor.py has no page docs/benchmarks/judge_floor.md"):
        bench_pages.write(tmp_path)
    page = tmp_path / "docs" / "benchmarks" / "judge_floor.md"
    page.write_text("# old title\n\n" + bench_pages.MARK + "\n## Recorded 2026-01-02, here\n\nfigures\n")
    script = tmp_path / "bench" / "judge_floor.py"
    script.write_text(script.read_text().replace("Is the judge above", "Is the judge still above", 1))
    bench_pages.write(tmp_path)
    text = page.read_text()
    assert "Is the judge still above" in text and "# old title" not in text and text.endswith("figures\n")
    assert "| [`judge_floor.py`](judge_floor.md) | Is the judge still above" in (tmp_path / "docs/benchmarks/index.md").read_text()
    assert (tmp_path / "docs/benchmarks/index.md").read_text().count("| 2026-01-02 |") == 1
    for heading, refused in (("## Results", "not: ## Results"), ("## Recorded 2026-13-02, here", "not: ## Recorded 2026-13-02")):
        page.write_text(text + f"\n{heading}\n\nmore figures\n")
        with pytest.raises(ValueError, match=refused):
            bench_pages.write(tmp_path)
    page.write_text(text)
    (tmp_path / "docs/benchmarks/renamed_away.md").write_text("# `bench/renamed_away.py`\n")
    with pytest.raises(ValueError, match="renamed_away.md in docs/benchmarks: no bench script of that name"):
        bench_pages.write(tmp_path)


LINK = re.compile(r"\[[^\]]*\]\(<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\)")  # inline links and images, a title allowed
FENCE = re.compile(r"^\s*```.*?^\s*```", re.S | re.M)


def broken_links(path) -> list[str]:
    """Links and images of a page that lead nowhere: a relative file that does not exist, an anchor no heading of the
    target makes (MkDocs' slugs; a `#` line in a code block is no heading), or an external link that is not https.
    Reference-style links are not used in these pages."""
    from markdown.extensions.toc import slugify

    broken = []
    for target in LINK.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        if target.startswith(("http://", "https://", "mailto:")):
            if not target.startswith("https://"):
                broken.append(f"{target}: not https")
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if resolved.is_relative_to(ROOT) and resolved.relative_to(ROOT).as_posix().startswith(GENERATED):
            continue  # written by the build (absent from a fresh clone); the strict build checks links to it
        if not resolved.is_file():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md":
            headings = re.findall(r"^#+\s+(.*?)\s*$", FENCE.sub("", resolved.read_text(encoding="utf-8")), re.M)
            if anchor not in {slugify(h, "-") for h in headings}:
                broken.append(f"{target}: no heading makes #{anchor}")
    return broken


def test_every_link_in_the_readme_and_the_docs_leads_somewhere(tmp_path):
    assert {p.relative_to(ROOT).as_posix(): b for p in pages() if (b := broken_links(p))} == {}
    page = tmp_path / "page.md"
    (tmp_path / "there.md").write_text("# A heading, here\n\n```bash\n# a comment\n```\n")
    page.write_text("[a](there.md#a-heading-here) [b](there.md#nowhere) [c](gone.md) [d](http://example.org) [e](https://x.org)"
                    ' ![f](missing.png) [g](there.md "a title") [h](there.md#a-comment)\n```\n[i](in-a-code-block.md)\n```\n')
    assert broken_links(page) == ["there.md#nowhere: no heading makes #nowhere", "gone.md: no such file",
                                  "http://example.org: not https", "missing.png: no such file",
                                  "there.md#a-comment: no heading makes #a-comment"]


def test_the_readme_is_at_most_200_lines_and_its_quick_commands_run(tmp_path, cli):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 200
    from calibrator.cli.parser import build
    from train.__main__ import _parser

    commands = {"calibrator": {()}, "train": {()}}  # each program's own --help, then every command the README shows
    for where, program, argv in shown_commands():
        known = {path for path, _ in cli_reference.commands(build() if program == "calibrator" else _parser())}
        if where == "README.md":
            commands[program].add(max((p for p in known if tuple(argv[:len(p)]) == p), key=len, default=()))
    assert len(commands["calibrator"]) >= 8 and ("goldset", "add") in commands["calibrator"] and ("eval",) in commands["train"]
    failed = [(program, path) for program, paths in commands.items() for path in sorted(paths)
              if (cli.calibrator if program == "calibrator" else cli.train)(*path, "--help").code != 0]
    assert failed == []
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
