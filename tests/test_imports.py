"""The package's import graph: every module imports on its own, and no two modules import each other, directly or
round a loop (a cycle hidden by an import inside a function is still a cycle: it is counted too)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from support import ROOT

PACKAGES = ("calibrator", "train")


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The project modules `name` imports anywhere in its file: `import a.b`, `from a.b import c` (a.b, or a.b.c when that is a
    module), relative imports resolved, and the packages whose `__init__` such an import runs (those above the target that
    are not above `name` itself: its own packages are already running)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        own = set(ancestors(name)) | ({name} if path.name == "__init__.py" else set())
        for t in targets:
            out |= {m for m in (t, *ancestors(t)) if m in known and m != name and m not in own}
    return out


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("import b\n")
    b.write_text("def f():\n    from a import x\n")
    known = {"a", "b", "a.x"} - {"a.x"}
    graph = {"a": imports("a", a, known), "b": imports("b", b, known)}
    assert find_cycle(graph) == ["a", "b", "a"]


def test_no_import_cycle_in_the_package():
    found = modules()
    graph = {name: imports(name, path, set(found)) for name, path in found.items()}
    assert sum(len(v) for v in graph.values()) > 50  # the graph was really read
    assert find_cycle(graph) is None


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """One fresh interpreter per module: a module that only works when another was imported first fails here."""
    failed = {}
    for name in modules():
        if name.endswith("__main__"):
            continue
        out = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        if out.returncode:
            failed[name] = out.stderr.strip().splitlines()[-1]
    assert failed == {}


# The CLI's examples in `--help` name components; the choices and the default come from the registry.
STILL_NAMING = {"cli/parser.py"}


def test_the_engine_report_and_review_name_no_component():
    """Everything outside components/ talks to the Component interface; only the modules listed above still name one."""
    named = {}
    for path in sorted((ROOT / "calibrator").rglob("*")):
        relative = path.relative_to(ROOT / "calibrator")
        if not path.is_file() or relative.parts[0] == "components" or str(relative) in STILL_NAMING or path.suffix not in (".py", ".html", ".js"):
            continue
        hits = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if "grader" in line.lower() or "extractor" in line.lower()]
        if hits:
            named[str(relative)] = hits
    assert named == {}
