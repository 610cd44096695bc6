"""Fixtures every test file may ask for: the CLI runner, the schema-following stub server, the embedded model's
server and one headless Chromium, each started once per session. Helpers that are not fixtures live in
tests/support/."""

import os
import shutil

import pytest

from support import ROOT

# What `python -m calibrator` sets before DSPy or Hugging Face load, so in-process runs see the same environment.
os.environ.setdefault("DSPY_CACHEDIR", str(ROOT / ".cache" / "dspy"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture
def cli():
    """`cli.calibrator(*args)` and `cli.train(*args)`: the command run in this process, its exit code and output as a
    `support.cli.Result`."""
    from support import cli as runner

    return runner


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A user's working directory: copies of the shipped gold sets and prompts, and the test's cwd."""
    shutil.copytree(ROOT / "goldsets", tmp_path / "goldsets")
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def schema_server():
    from support.schema_server import SchemaServer

    with SchemaServer() as server:
        yield server


@pytest.fixture
def stub(schema_server):
    """The session's schema server, reset: no delay, nothing held, log-probabilities on, counters at zero."""
    schema_server.reset()
    yield schema_server
    schema_server.reset()


@pytest.fixture(scope="session")
def embedded():
    """The embedded SmolLM2 served by llama.cpp in this process, one slot, for the tests whose point is its answers."""
    from calibrator.lm.local import LocalServer, embedded_gguf

    server = LocalServer(embedded_gguf(), n_ctx=8192)
    yield server
    server.close()


@pytest.fixture(scope="session")
def chromium():
    from support.browser import chromium_available, launch

    if not chromium_available():
        pytest.skip("Debian's chromium (/usr/bin/chromium) or the playwright package is missing; .ci/run installs both")
    with launch() as browser:
        yield browser
