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


def pytest_configure(config):
    """The quick loop (-m "not slow") runs each property on fewer Hypothesis examples; the full suite on all of them."""
    import support

    support.QUICK_LOOP = " ".join(config.getoption("markexpr").split()) == "not slow"


@pytest.fixture(scope="session", autouse=True)
def at_root():
    """Every test starts in the repository, as the README's command does: in-process runs read prompts/ and goldsets/."""
    os.chdir(ROOT)


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
def policy_cache(tmp_path_factory):
    """A cache_dir holding the embedded SmolLM2 converted once to a Hugging Face folder (half a minute): a run whose
    config keeps `model: smollm2` and names this cache_dir finds it there."""
    from train.model import EMBEDDED, ensure_model

    cache = tmp_path_factory.mktemp("policy")
    ensure_model(EMBEDDED, cache)
    return cache


@pytest.fixture(scope="session")
def policy_model(policy_cache):
    """That converted folder, for configs and calls that name a model folder."""
    from train.model import EMBEDDED, ensure_model

    return ensure_model(EMBEDDED, policy_cache)


@pytest.fixture(scope="session")
def tiny_policy(policy_model, tmp_path_factory):
    """A two-layer model with random weights behind the embedded model's tokenizer and chat template, for tests whose
    point is the machinery around a policy (kill and resume, caches, TRL's and the eval's call shapes), not its answers:
    each forward pass costs a small fraction of the 135M model's."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(policy_model)
    config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
                   "num_key_value_heads": 2, "head_dim": 16})
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-policy")
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(policy_model).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def grader_smoke_run(tmp_path_factory):
    """`run --component grader --budget smoke` on the embedded model (the default LM), once, with a fresh cache, on 24
    rows spread over the shipped gold set (every label in; a third of the model's calls of the whole set): its folder
    holds grader.csv, reports/, cache/ and grader.calibrated.yaml. A run asking the same questions starts from a copy of
    its cache."""
    from support.cli import calibrator
    from support.files import gold_slice

    tmp = tmp_path_factory.mktemp("grader-smoke")
    goldset = gold_slice("grader", tmp / "grader.csv", 24, spread=True)
    done = calibrator("run", "--component", "grader", "--goldset", goldset, "--budget", "smoke", "--save-prompt", tmp / "grader.calibrated.yaml",
                      "--out", tmp / "reports", "--cache-dir", tmp / "cache", "--no-progress")
    assert done.code == 0, done.err
    return tmp


@pytest.fixture(scope="session")
def chromium():
    from support.browser import chromium_available, launch

    if not chromium_available():
        pytest.skip("Debian's chromium (/usr/bin/chromium) or the playwright package is missing; .ci/run installs both")
    with launch() as browser:
        yield browser
