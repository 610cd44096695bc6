"""`python -m train`'s paths the other train tests do not reach: eval's refusals and --base, legacy run records, what
a resume may change, `launch` running accelerate, unreadable logs, and the TRL hook the trainer overrides. Nothing
trains and no model loads: where a path would load one, the loader is replaced by one that raises `Reached`, and the
test expects `Reached`, which proves the path got that far."""

import ast
import importlib.util
import json
import re
import shlex
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from support import ROOT
from support.training import copy_config, small_samples
from train.config import TrainConfig

CONTENT_FREE = {"content": False, "fusion": "stop"}  # no grader, so no gate and no LM


class Reached(Exception):
    """Raised by a stubbed loader: the command got as far as loading this."""


def finished_run(tmp_path: Path, **recorded) -> Path:
    """A folder as a finished `train run` leaves it (the model files aside): config.json, run.json, final/, heldout.jsonl."""
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(TrainConfig(out=run, **CONTENT_FREE).model_dump(mode="json") | recorded))
    (run / "run.json").write_text("{}")
    small_samples(run / "heldout.jsonl")
    return run


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under folder with its bytes (None for a folder): equal before and after means nothing was written."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


@pytest.fixture(autouse=True)
def loads(monkeypatch) -> list:
    """No test here loads a model: train.model.ensure_model and train.evaluate.generate raise Reached, so a refusal
    that lets the command go on fails fast. The list: the model names ensure_model was asked for."""
    from train import evaluate, model

    asked = []

    def ensure_model(name, cache_dir):
        asked.append(name)
        raise Reached(f"ensure_model({name!r})")

    def generate(model_dir, *args, **kwargs):
        raise Reached(f"generate({model_dir})")
    monkeypatch.setattr(model, "ensure_model", ensure_model)
    monkeypatch.setattr(evaluate, "generate", generate)
    return asked


# --- eval's refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["config.json", "run.json", "final"])
def test_eval_refuses_a_folder_that_is_not_a_finished_run_and_writes_nothing(missing, tmp_path, cli):
    run = finished_run(tmp_path)
    target = run / missing
    target.rmdir() if target.is_dir() else target.unlink()
    before = tree(run)
    result = cli.train("eval", "--model", run)
    assert result.code == 2 and not result.out
    assert result.err == f"error: {run} is not a finished `train run` folder (needs config.json, run.json and final/)\n"
    assert tree(run) == before


@pytest.mark.parametrize("record, args, expected", [
    ({"modle": "x"}, [], "modle"),  # a key no TrainConfig has
    ({}, ["--concurrency", "0"], "concurrency"),  # the command line's override is checked like the record
    ({"fusion": "sum"}, [], "content: false grades no question"),  # a record the model validator refuses
])
def test_eval_refuses_an_invalid_run_record_naming_its_file(record, args, expected, tmp_path, cli):
    run = finished_run(tmp_path, **record)
    before = tree(run)
    result = cli.train("eval", "--model", run, *args)
    assert result.code == 2 and not result.out
    assert result.err.startswith(f"error: {run / 'config.json'}: ") and expected in result.err
    assert tree(run) == before


def test_eval_refuses_a_truncated_run_record_without_a_traceback(tmp_path, cli):
    run = finished_run(tmp_path)
    (run / "config.json").write_text('{"model": "smollm2", "fus')  # cut short by hand or a full disk
    before = tree(run)
    result = cli.train("eval", "--model", run)
    assert result.code == 2 and result.err.startswith(f"error: {run / 'config.json'}: ")
    assert tree(run) == before


def test_eval_refuses_an_empty_sample_file_and_samples_with_logs(tmp_path, cli):
    run = finished_run(tmp_path)
    (run / "heldout.jsonl").write_text("\n")
    before = tree(run)
    result = cli.train("eval", "--model", run)
    assert result.code == 2 and result.err == f"error: {run / 'heldout.jsonl'} has no samples to evaluate\n"
    both = cli.train("eval", "--model", run, "--samples", run / "heldout.jsonl", "--logs", "x.csv")
    assert both.code == 2 and "argument --logs: not allowed with argument --samples" in both.err
    assert tree(run) == before


# --- eval --base ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("other_base", [True, False])
def test_eval_base_compares_with_the_given_model_instead_of_the_runs_base(other_base, tmp_path, cli, monkeypatch):
    """Generation is where a model loads: the first model asked to generate is the base side's."""
    from train import evaluate

    monkeypatch.chdir(ROOT)  # the recorded policy prompt is relative to the repository
    run = finished_run(tmp_path)
    asked = []

    def ensure_model(name, cache_dir):
        asked.append(name)
        return tmp_path / "runs-base-model"

    def generate(model_dir, samples, instructions, max_new_tokens, cache=None, context_turns=None):
        raise Reached(model_dir, cache)
    monkeypatch.setattr("train.model.ensure_model", ensure_model)
    monkeypatch.setattr(evaluate, "generate", generate)
    base = tmp_path / "warm_start" / "final"
    with pytest.raises(Reached) as reached:
        cli.train("eval", "--model", run, *(["--base", base] if other_base else []))
    model_dir, cache = reached.value.args
    if other_base:
        assert model_dir == base and asked == []  # the run's base model is not even converted
        assert cache.parent == run and re.fullmatch(r"eval\.base-[0-9a-f]{8}\.jsonl", cache.name)  # not the run's base cache
    else:
        assert model_dir == tmp_path / "runs-base-model" and asked == ["smollm2"] and cache == run / "eval.base.jsonl"


# --- legacy run records: grader_threads, renamed concurrency ---------------------------------------------------------


def legacy(run: Path, threads: int) -> None:
    """config.json as a run recorded it before `grader_threads` became `concurrency`."""
    recorded = json.loads((run / "config.json").read_text())
    del recorded["concurrency"]
    (run / "config.json").write_text(json.dumps(recorded | {"grader_threads": threads}))


@pytest.mark.parametrize("args, concurrency", [([], 3), (["--concurrency", "5"], 5)])
def test_eval_reads_a_legacy_grader_threads_record_as_concurrency(args, concurrency, tmp_path, cli, monkeypatch):
    import train.__main__ as main

    run = finished_run(tmp_path)
    legacy(run, 3)
    seen = []
    monkeypatch.setattr(main, "evaluate_run", lambda run_dir, config, samples, out, max_new_tokens, **_: seen.append(config))
    result = cli.train("eval", "--model", run, *args)
    assert result.code == 0, result.err
    assert [c.concurrency for c in seen] == [concurrency]


# --- what a resume may change ----------------------------------------------------------------------------------------


def run_config(tmp_path: Path) -> tuple[Path, Path]:
    """A content-free run config (no gate, no grader) with its out in tmp_path, and a samples file for it."""
    config = tmp_path / "c.yaml"
    config.write_text(json.dumps(CONTENT_FREE | {"out": str(tmp_path / "out"), "grpo": {"use_cpu": True, "bf16": False}}))
    return config, small_samples(tmp_path / "samples.jsonl")


def start_run(cli, config: Path, samples: Path, *args) -> None:
    """`train run` up to the model load, where it stops: config.json and heldout.jsonl are written by then."""
    with pytest.raises(Reached):
        cli.train("run", "--config", config, "--samples", samples, *args)


@pytest.mark.parametrize("changed", [["--concurrency", "4"], ["--no-eval"], ["--allow-uncalibrated"], ["--accept-newer-goldset"]])
def test_a_resume_may_change_how_the_run_is_run(changed, tmp_path, cli, monkeypatch, loads):
    monkeypatch.delenv("RANK", raising=False)
    config, samples = run_config(tmp_path)
    start_run(cli, config, samples, "--concurrency", "2")
    start_run(cli, config, samples, *changed)  # not refused: it goes on to load the model
    assert loads == ["smollm2", "smollm2"]
    recorded = json.loads((tmp_path / "out" / "config.json").read_text())
    assert recorded["concurrency"] == (4 if "--concurrency" in changed else None)  # the resume's own settings recorded


def test_a_resume_that_changes_what_the_run_computes_is_refused_and_writes_nothing(tmp_path, cli, monkeypatch, loads):
    monkeypatch.delenv("RANK", raising=False)
    config, samples = run_config(tmp_path)
    out = tmp_path / "out"
    start_run(cli, config, samples)
    before = tree(out)
    result = cli.train("run", "--config", config, "--samples", samples, "--max-steps", "3", "--limit", "5", "--concurrency", "4")
    assert result.code == 2 and loads == ["smollm2"]
    assert result.err.startswith(f"error: {out} holds a run made with another config (grpo, limit differ), and its samples, ")
    assert tree(out) == before


def test_a_legacy_grader_threads_record_resumes_like_any_other(tmp_path, cli, monkeypatch, loads):
    """A run recorded before the rename: its --out resumes (concurrency is a how-to-run key), and a changed key is still
    refused by name, not with a traceback about grader_threads."""
    monkeypatch.delenv("RANK", raising=False)
    config, samples = run_config(tmp_path)
    out = tmp_path / "out"
    start_run(cli, config, samples)
    legacy(out, 4)
    before = tree(out)
    refused = cli.train("run", "--config", config, "--samples", samples, "--max-steps", "3")
    assert refused.code == 2 and "(grpo differ)" in refused.err and tree(out) == before
    start_run(cli, config, samples)
    assert loads == ["smollm2", "smollm2"]


def test_a_resume_over_a_truncated_run_record_is_refused_without_a_traceback(tmp_path, cli, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    config, samples = run_config(tmp_path)
    out = tmp_path / "out"
    start_run(cli, config, samples)
    (out / "config.json").write_text('{"model": "smollm2", "fus')
    before = tree(out)
    result = cli.train("run", "--config", config, "--samples", samples)
    assert result.code == 2 and result.err.startswith(f"error: {out / 'config.json'}: ")
    assert tree(out) == before


# --- launch --------------------------------------------------------------------------------------------------------


@pytest.fixture
def launched(monkeypatch) -> list:
    """subprocess.run as `train launch` calls it: the argv is kept, the child 'exits' 3."""
    import train.__main__ as main

    calls = []

    def run(argv, *args, **kwargs):
        calls.append(argv)
        return SimpleNamespace(args=argv, returncode=3)
    monkeypatch.setattr(main, "subprocess", SimpleNamespace(run=run))  # this module's subprocess only
    return calls


@pytest.mark.parametrize("which", ["/opt/venv/bin/accelerate", None])
def test_launch_runs_accelerate_and_passes_its_exit_code_through(which, tmp_path, cli, monkeypatch, launched):
    import train.__main__ as main

    monkeypatch.setattr(main, "shutil", SimpleNamespace(which=lambda name: which if name == "accelerate" else None))
    path = copy_config("multi-gpu.yaml", tmp_path)
    written = tmp_path / "out" / "accelerate.yaml"
    result = cli.train("launch", "--config", path)
    assert result.code == 3, result.err
    rest = ["launch", "--config_file", str(written), "-m", "train", "run", "--config", str(path)]
    program = [which] if which else [sys.executable, "-m", "accelerate.commands.accelerate_cli"]
    assert launched == [program + rest]
    assert result.out == shlex.join(["accelerate", *rest]) + "\n" and written.is_file()


def test_launch_without_accelerate_here_prints_the_command_instead_of_running_it(tmp_path, cli, monkeypatch, launched):
    monkeypatch.setattr("train.config.check_accelerate_config", lambda launcher, source: False)
    path = copy_config("multi-gpu.yaml", tmp_path)
    result = cli.train("launch", "--config", path)
    assert result.code == 0 and launched == []
    assert result.err == "accelerate is not installed here: run this command where it is\n"
    assert result.out == f"accelerate launch --config_file {tmp_path / 'out' / 'accelerate.yaml'} -m train run --config {path}\n"


@pytest.mark.parametrize("launcher", [None, {}])
def test_launch_refuses_a_config_without_a_launcher_block_and_runs_nothing(launcher, tmp_path, cli, launched):
    path = copy_config("cpu-smoke.yaml", tmp_path, **({} if launcher is None else {"launcher": launcher}))
    result = cli.train("launch", "--config", path)
    assert result.code == 2 and not result.out and launched == []
    assert f"error: {path} has no launcher block, so there is nothing to launch" in result.err
    assert not (tmp_path / "out").exists()


# --- logs that cannot be read ----------------------------------------------------------------------------------------


def bad_logs(tmp_path: Path, kind: str) -> tuple[Path, list[str], str]:
    """A log file, the warnings it gives on stdout (file and line) and the error (after `error: `) on stderr."""
    if kind == "missing":
        path = tmp_path / "nowhere.jsonl"
        return path, [], f"{path}: no such file or folder; supported: "
    if kind == "not utf-8":
        path = tmp_path / "latin1.jsonl"
        path.write_bytes(b'{"session_id": "caf\xe9", "messages": []}\n')
        return path, [], f"{path}: not UTF-8 text (byte 19); save it as UTF-8"
    path = tmp_path / "bad.jsonl"
    path.write_text('{"session_id": "a", "messages": [{"role": "doctor", "content": "Hi"}]}\n{"session_id": "b", \n')
    return path, [f"warning: {path}, line 1: message 1: role must be 'user' or 'assistant', got 'doctor'; session skipped",
                  f"warning: {path}, line 2: not valid JSON (Expecting property name enclosed in double quotes at column 21); "
                  f"session skipped"], f"{path}: no usable sample in 0 sessions (2 skipped)"


@pytest.mark.parametrize("kind", ["missing", "not utf-8", "every line bad"])
def test_eval_logs_that_cannot_be_read_are_an_error_naming_file_and_line(kind, tmp_path, cli):
    run = finished_run(tmp_path)
    logs, warnings, error = bad_logs(tmp_path, kind)
    before = tree(run)
    result = cli.train("eval", "--model", run, "--logs", logs)
    assert result.code == 2
    assert result.out.splitlines() == warnings and result.err.startswith(f"error: {error}")
    assert tree(run) == before  # no eval-logs-*.jsonl


@pytest.mark.parametrize("kind", ["missing", "not utf-8", "every line bad"])
def test_run_logs_that_cannot_be_read_are_an_error_naming_file_and_line(kind, tmp_path, cli, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    config, _ = run_config(tmp_path)
    logs, warnings, error = bad_logs(tmp_path, kind)
    result = cli.train("run", "--config", config, "--logs", logs)
    assert result.code == 2
    assert result.out.splitlines() == warnings and result.err.startswith(f"error: {error}")
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"config.json"}  # no samples.jsonl


# --- the TRL hook the trainer overrides ------------------------------------------------------------------------------


def test_trl_still_has_the_private_generate_hook_the_trainer_overrides():
    """TimedGRPOTrainer times GRPOTrainer._generate, a private method: a TRL release that renames it, changes its
    parameters or calls it with more would silently drop the timing or break training; this fails first. Read from
    the installed TRL's source, not imported, so the fast suite does not pay for TRL."""
    [trl_dir] = importlib.util.find_spec("trl").submodule_search_locations
    theirs_source = (Path(trl_dir) / "trainer" / "grpo_trainer.py").read_text(encoding="utf-8")
    theirs, theirs_class = defined_method(theirs_source, "GRPOTrainer", "_generate")
    ours, _ = defined_method((ROOT / "train" / "trainer.py").read_text(encoding="utf-8"), "TimedGRPOTrainer", "_generate")
    assert theirs is not None  # defined in GRPOTrainer's own body, not inherited
    assert parameters(theirs) == parameters(ours)
    assert re.search(r"\bself\._generate\(\s*prompts\s*\)", ast.get_source_segment(theirs_source, theirs_class))


def defined_method(source: str, class_name: str, name: str) -> tuple[ast.FunctionDef | None, ast.ClassDef]:
    klass = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ClassDef) and n.name == class_name)
    method = next((n for n in klass.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef) and n.name == name), None)
    return method, klass


def parameters(function: ast.FunctionDef) -> list[tuple[str, str]]:
    """Each parameter's kind and name, as inspect.signature would list them."""
    a = function.args
    return ([("positional-only", p.arg) for p in a.posonlyargs] + [("positional", p.arg) for p in a.args]
            + [("*", p.arg) for p in [a.vararg] if p] + [("keyword-only", p.arg) for p in a.kwonlyargs]
            + [("**", p.arg) for p in [a.kwarg] if p])


# --- another judge than the reward's ---------------------------------------------------------------------------------


def test_eval_judge_reaches_the_eval_and_writes_beside_the_rewards_eval(tmp_path, cli, monkeypatch):
    import train.__main__ as main

    run = finished_run(tmp_path, content=True, fusion="default")
    seen = []
    monkeypatch.setattr(main, "evaluate_run", lambda run_dir, config, samples, out, max_new_tokens, **kw: seen.append((out, kw)))
    assert cli.train("eval", "--model", run, "--judge", "neighbours").code == 0
    assert cli.train("eval", "--model", run).code == 0
    assert [(out.name, kw["judge"]) for out, kw in seen] == [("eval.judge-neighbours.json", "neighbours"), ("eval.json", None)]


def test_a_review_sheet_that_exists_is_never_overwritten(tmp_path, cli, monkeypatch):
    """It may hold a reviewer's labels not yet added: the export is refused before anything is generated."""
    import train.__main__ as main

    run = finished_run(tmp_path, content=True, fusion="default")
    (run / "review.xlsx").write_bytes(b"labels")
    monkeypatch.setattr(main, "evaluate_run", lambda *a, **k: pytest.fail("evaluated although the export is refused"))
    refused = cli.train("eval", "--model", run, "--review", "10")
    assert refused.code == 2 and "review.xlsx exists and may hold labels" in refused.err
    assert (run / "review.xlsx").read_bytes() == b"labels"


def test_the_reward_judge_is_the_one_the_run_recorded(tmp_path):
    """A grader prompt calibrated again after training may choose another judge: the eval names the one the reward used."""
    import train.__main__ as main

    run = finished_run(tmp_path)
    recorded = {"source": "neighbours", "reason": "recorded at training"}
    (run / "run.json").write_text(json.dumps({"gate": {"content_source": recorded}}))
    assert main._reward_judge(run, None).source == "neighbours"
    (run / "run.json").write_text(json.dumps({"gate": {"grader_prompt": None, "not_needed": "content: false"}}))
    assert main._reward_judge(run, None).source == "lm"  # nothing recorded: chosen from the (absent) calibration
