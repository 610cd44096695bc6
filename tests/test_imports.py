"""The package's import graph: every module imports on its own, and no two modules import each other, directly or
round a loop (a cycle hidden by an import inside a function is still a cycle: it is counted too)."""

import ast
import json
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


# The package's groups, lowest first: a module imports from its own group or one below, never above, so data flows one
# way (gold set -> component -> metric -> optimizer -> calibrated prompt -> report; the reward and the CLI on top).
LAYERS = ["agreement", "gold", "expert_logs", "lm", "embedder", "parallel", "prompt", "corpora", "components",
          "calibration", "report", "curation", "reward", "cli", "__main__"]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """`module -> target` for every import of a group above the importer's (the package itself, `calibrator`, is no group)."""
    def rank(name: str) -> int | None:
        parts = name.split(".")
        return LAYERS.index(parts[1]) if len(parts) > 1 and parts[0] == "calibrator" else None

    return sorted(f"{name} -> {target}" for name, targets in graph.items() for target in targets
                  if rank(name) is not None and rank(target) is not None and rank(target) > rank(name))


def test_no_module_imports_from_a_group_above_its_own():
    found = {name: path for name, path in modules().items() if name.startswith("calibrator.")}
    groups = {name.split(".")[1] for name in found}
    assert groups == set(LAYERS)  # every group has its place, and no place names a group that is gone
    graph = {name: imports(name, path, set(found)) for name, path in found.items()}
    assert upward_imports(graph) == []
    planted = graph | {"calibrator.gold.goldset": graph["calibrator.gold.goldset"] | {"calibrator.calibration.runs"}}
    assert upward_imports(planted) == ["calibrator.gold.goldset -> calibrator.calibration.runs"]


ISOLATE = """
import importlib, json, os, sys, traceback
names = json.loads(sys.argv[1])
for lib in json.loads(sys.argv[2]):  # the heavy libraries once, before any project module: each child inherits them
    importlib.import_module(lib)
assert not [m for m in sys.modules if m.split(".")[0] in ("calibrator", "train")], "a library imported the project"
import threading
assert threading.active_count() == 1, threading.enumerate()  # a fork copies one thread: no other may hold a lock
failed, running = {}, {}


def reap():
    pid, status = os.wait()
    name, read = running.pop(pid)
    with os.fdopen(read) as pipe:  # one short line at most: it fits the pipe, so the child never blocks on it
        said = pipe.read()
    if status:
        failed[name] = said or "the child died"


for name in names:
    if len(running) >= os.cpu_count():  # one child per core at a time
        reap()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child with no project module loaded yet
        os.close(read)
        try:
            importlib.import_module(name)
            code = 0
        except BaseException:
            os.write(write, traceback.format_exc().strip().splitlines()[-1].encode())
            code = 1
        os._exit(code)
    os.close(write)
    running[pid] = (name, read)
while running:
    reap()
print(json.dumps(failed))
"""


def module_level(body: list[ast.stmt]):
    """Statements that run when the module is imported: the body, and what `if`/`try` blocks hold (not functions)."""
    for node in body:
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for field in ("body", "orelse", "finalbody"):
                yield from module_level(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                yield from module_level(handler.body)


def third_party(found: dict[str, Path]) -> list[str]:
    """The top-level packages the project imports at module level, outside itself and the standard library."""
    roots = set()
    for path in found.values():
        for node in module_level(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                roots.add(node.module.split(".")[0])
    return sorted(roots - set(sys.stdlib_module_names) - set(PACKAGES) - {"__future__"})


def isolated_imports(names: list[str], libraries: list[str]) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", ISOLATE, json.dumps(names), json.dumps(libraries)], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """Each module imported first in a forked child of one interpreter that holds only third-party libraries: a module
    that only works when another project module was imported first fails here; torch and DSPy load once, not per module."""
    names = [name for name in modules() if not name.endswith("__main__")]
    libraries = third_party(modules())
    assert {"dspy", "pydantic", "yaml"} <= set(libraries)
    assert isolated_imports(names, libraries) == {}


def test_the_isolation_check_finds_a_module_that_needs_another_imported_first(tmp_path, monkeypatch):
    """The same check on a made-up package whose `b` works only after `a` was imported (and `c` not at all)."""
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("import sys\nsys.modules['pkg'].shared = 1\n")
    (package / "b.py").write_text("import pkg\nvalue = pkg.shared\n")
    (package / "c.py").write_text("raise ImportError('c is broken')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    failed = isolated_imports(["pkg.a", "pkg.b", "pkg.c"], ["json"])
    assert set(failed) == {"pkg.b", "pkg.c"}
    assert "AttributeError" in failed["pkg.b"] and "c is broken" in failed["pkg.c"]


# The CLI's examples in `--help` name components; the choices and the default come from the registry. The reward is the
# grader's by definition (Learn-to-Ask's judge): reward/ and the commands that front it (serve, suggest, review --graded)
# name it; the calibration engine, the report and a run's review do not.
STILL_NAMING = {"cli/parser.py", "cli/serve.py", "cli/suggest.py", "cli/review.py"}
NAMING_PACKAGES = {"components", "reward"}


def test_the_engine_report_and_review_name_no_component():
    """Everything outside components/ talks to the Component interface; only the modules listed above still name one."""
    named = {}
    for path in sorted((ROOT / "calibrator").rglob("*")):
        relative = path.relative_to(ROOT / "calibrator")
        if not path.is_file() or relative.parts[0] in NAMING_PACKAGES or str(relative) in STILL_NAMING or path.suffix not in (".py", ".html", ".js"):
            continue
        hits = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                if "grader" in line.lower() or "extractor" in line.lower()]
        if hits:
            named[str(relative)] = hits
    assert named == {}
