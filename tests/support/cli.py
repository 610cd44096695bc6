"""The two ways a test runs a command: in-process (`main(argv)`, output captured, the exit code argparse or the
command gave) for everything but the process boundary, and as a child process where the boundary is the point
(signals, a fresh interpreter, the environment). A started child writes to files, never to a pipe, so nothing
blocks while a test polls for the moment to kill it."""

import contextlib
import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from support import ROOT


@dataclass
class Result:
    code: int
    out: str
    err: str


def exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def in_process(main: Callable[[list[str]], int], argv: Sequence[object]) -> Result:
    """`main(argv)` in this interpreter, with sys.stdout and sys.stderr read into buffers while it runs."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exit_code(exc)
    return Result(code, out.getvalue(), err.getvalue())


def calibrator(*args: object) -> Result:
    """`python -m calibrator args`, in this process."""
    from calibrator.cli import main

    return in_process(main, args)


def train(*args: object) -> Result:
    """`python -m train args`, in this process."""
    from train.__main__ import main

    return in_process(main, args)


def command(module: str, *args: object) -> list[str]:
    return [sys.executable, "-m", module, *map(str, args)]


def run_process(module: str, *args: object, env: dict[str, str] | None = None, timeout: float = 1200) -> Result:
    """`python -m module args` in a fresh interpreter, run to its end."""
    done = subprocess.run(command(module, *args), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    return Result(done.returncode, done.stdout, done.stderr)


def _as_from_a_terminal() -> None:
    """In the child before exec: SIGINT's default action, as a terminal gives it. A shell that starts a job in the
    background (CI may) sets SIGINT to ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Started:
    """A child `python -m module args` whose output goes to two files beside `logs`."""

    def __init__(self, module: str, *args: object, logs: Path, env: dict[str, str] | None = None) -> None:
        stamp = time.monotonic_ns()
        self.stdout, self.stderr = logs / f"{module}.{stamp}.out", logs / f"{module}.{stamp}.err"
        logs.mkdir(parents=True, exist_ok=True)
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.proc = subprocess.Popen(command(module, *args), cwd=ROOT, stdout=out, stderr=err, text=True,
                                         env=(env or os.environ) | {"PYTHONUNBUFFERED": "1"}, preexec_fn=_as_from_a_terminal)

    def result(self) -> Result:
        return Result(self.proc.returncode, self.stdout.read_text(), self.stderr.read_text())

    def kill_when(self, ready: Callable[[], bool], sig: int = signal.SIGKILL, timeout: float = 600) -> Result:
        """Send `sig` once `ready()` holds, wait for the child to end and return what it printed. Fails if the child
        ends first or `ready()` never holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None and not ready():
            time.sleep(0.05)
        if self.proc.poll() is not None:
            raise AssertionError(f"the child ended (exit {self.proc.returncode}) before it could be stopped:\n"
                                 f"{self.stderr.read_text()[-3000:]}")
        if not ready():
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the child never reached its stop point in {timeout} s")
        os.kill(self.proc.pid, sig)
        self.proc.wait(timeout=300)
        return self.result()
