"""`python -m calibrator` refuses what it cannot do, up front: exit 2, the reason on stderr in words a user can act
on, nothing written (no report, no cache, no output file, no prompt or gold set touched) and no Traceback.

Everything runs in this process (tests/support/cli.py). Commands that take --lm are pointed at the stub, so a check
that let a run through would run against it, never the embedded model. Covered elsewhere, not repeated here: a bad gold
set and a bogus --lm (test_cli_goldset_errors.py), `eval --component extractor` given the grader's prompt
(test_extractor.py), `review` of a folder that is not a run, --agreements -1, a gold set without the run's rows and a
missing recorded gold set (test_report.py, test_review.py), --shard 0/2 (test_scale_out.py), --rpm 0 (test_engine_flow.py)."""

import hashlib
import json
import shutil
from pathlib import Path

import openpyxl
import pytest

from support import ROOT
from support.cli import Result
from support.files import HEADER, write_csv
from support.synthetic_run import make_run

GOLD = {"grader": ROOT / "goldsets" / "grader.csv", "extractor": ROOT / "goldsets" / "extractor.csv"}
PROMPT = {"grader": ROOT / "prompts" / "grader.yaml", "extractor": ROOT / "prompts" / "extractor.yaml"}


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with a digest of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(result: Result, *words: str) -> None:
    """Exit 2, each of `words` on stderr, nothing on stdout, no Traceback."""
    assert result.code == 2, (result.code, result.err)
    for w in words:
        assert w in result.err, (w, result.err)
    assert "Traceback" not in result.err
    assert result.out == ""


@pytest.fixture
def shipped():
    """The repository's prompts and gold sets are not touched by any of these commands."""
    before = snapshot(ROOT / "prompts") | {f"goldsets/{k}": v for k, v in snapshot(ROOT / "goldsets").items()}
    yield
    assert snapshot(ROOT / "prompts") | {f"goldsets/{k}": v for k, v in snapshot(ROOT / "goldsets").items()} == before


def calibrate(cli, stub, tmp_path: Path, command: str, *args: object, component: str = "grader") -> Result:
    return cli.calibrator(command, "--component", component, "--goldset", GOLD[component], "--out", tmp_path / "reports",
                          "--cache-dir", tmp_path / "cache", "--lm", f"openai-compatible:stub@{stub.url}", "--no-progress",
                          *(("--budget", "smoke") if command == "run" else ()), *args)


def log_file(tmp_path: Path) -> Path:
    messages = [{"role": "user", "content": "I have a cough"}, {"role": "assistant", "content": "How long?"},
                {"role": "user", "content": "Three days"}, {"role": "assistant", "content": "Try honey and lemon."}]
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"session_id": "s1", "messages": messages}) + "\n")
    return path


def extract(cli, stub, tmp_path: Path, *args: object) -> Result:
    return cli.calibrator("extract", "--cache-dir", tmp_path / "cache", "--lm", f"openai-compatible:stub@{stub.url}",
                          "--no-progress", *args)


# ---- run / eval: where the calibrated prompt goes, prices, the prompt file ------------------------------------------

def test_run_refuses_a_save_prompt_path_that_is_its_baseline(tmp_path, cli, stub):
    prompt = tmp_path / "prompts" / "mine.yaml"
    prompt.parent.mkdir()
    shutil.copy(PROMPT["grader"], prompt)
    before = snapshot(tmp_path)
    # the same file under another spelling: the paths are compared resolved
    result = calibrate(cli, stub, tmp_path, "run", "--prompt", prompt, "--save-prompt", tmp_path / "prompts" / ".." / "prompts" / "mine.yaml")
    refused(result, "error: --save-prompt would overwrite the baseline prompt; choose another path")
    assert snapshot(tmp_path) == before and stub.requests == 0


def test_run_refuses_to_calibrate_the_calibrated_prompt_onto_itself(tmp_path, cli, stub, monkeypatch):
    """Given the default calibrated prompt as its baseline and no --save-prompt, the winner would land on it."""
    shutil.copytree(ROOT / "prompts", tmp_path / "prompts")
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    result = calibrate(cli, stub, tmp_path, "run", "--prompt", "prompts/grader.calibrated.yaml")
    refused(result, "error: --save-prompt would overwrite the baseline prompt")
    assert snapshot(tmp_path) == before and stub.requests == 0


@pytest.mark.parametrize("content, words", [
    pytest.param(None, ["No such file or directory", "prices.yaml"], id="missing"),
    pytest.param("openai:gpt-4o: {input: 1, output: 2\n", ["prices.yaml: the YAML does not parse", "line 2"], id="not YAML"),
    pytest.param("- openai:gpt-4o\n- 2.5\n", ["prices.yaml: expected a mapping of model -> {input, output} USD per 1M tokens"],
                 id="not a mapping"),
    pytest.param("openai:gpt-4o: {input: cheap, output: 2}\n", ["prices.yaml: openai:gpt-4o: expected {input: .., output: ..} "
                                                               "USD per 1M tokens", "input: Input should be a valid number"],
                 id="bad price"),
    pytest.param("openai:gpt-4o: {input: 1}\n", ["prices.yaml: openai:gpt-4o:", "output: Field required"], id="missing price"),
    pytest.param("gpt-4o: {input: 1, output: 2}\n", ["prices.yaml: gpt-4o: name the model as --lm spells it (openai:gpt-4o"],
                 id="a key that would never match"),
])
@pytest.mark.parametrize("command", ["run", "eval"])
def test_a_bad_prices_file_is_refused_in_one_line(tmp_path, cli, stub, shipped, command, content, words):
    prices = tmp_path / "prices.yaml"
    if content is not None:
        prices.write_text(content)
    before = snapshot(tmp_path)
    result = calibrate(cli, stub, tmp_path, command, "--prompt", PROMPT["grader"], "--prices", prices,
                       *(("--save-prompt", tmp_path / "saved.yaml") if command == "run" else ()))
    refused(result, *words)
    assert len(result.err.strip().splitlines()) == 1 and result.err.startswith("error: ")
    assert snapshot(tmp_path) == before and stub.requests == 0


@pytest.mark.parametrize("command", ["run", "eval", "extract"])
def test_a_missing_prompt_file_is_refused(tmp_path, cli, stub, shipped, command):
    missing = tmp_path / "no-such-prompt.yaml"
    if command == "extract":
        result = extract(cli, stub, tmp_path, "--logs", log_file(tmp_path), "--out", tmp_path / "out.jsonl", "--prompt", missing)
    else:
        result = calibrate(cli, stub, tmp_path, command, "--prompt", missing,
                           *(("--save-prompt", tmp_path / "saved.yaml") if command == "run" else ()))
    refused(result, "error: ", "No such file or directory", str(missing))
    assert sorted(p.name for p in tmp_path.iterdir()) == (["log.jsonl"] if command == "extract" else [])
    assert stub.requests == 0


@pytest.mark.parametrize("command", ["eval", "extract"])
def test_a_prompt_file_that_is_not_yaml_is_refused_in_one_line(tmp_path, cli, stub, shipped, command):
    broken = tmp_path / "broken.yaml"
    broken.write_text("component: grader\ninstructions: [unclosed\n")
    if command == "extract":
        result = extract(cli, stub, tmp_path, "--logs", log_file(tmp_path), "--out", tmp_path / "out.jsonl", "--prompt", broken)
    else:
        result = calibrate(cli, stub, tmp_path, command, "--prompt", broken)
    refused(result, f"error: {broken}: not a prompt file, the YAML does not parse")
    assert len(result.err.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "cache").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize("command", ["run", "eval"])
def test_the_extractors_prompt_is_refused_for_the_grader(tmp_path, cli, stub, shipped, command):
    result = calibrate(cli, stub, tmp_path, command, "--prompt", PROMPT["extractor"],
                       *(("--save-prompt", tmp_path / "saved.yaml") if command == "run" else ()))
    refused(result, f"error: {PROMPT['extractor']} is a extractor prompt, not a grader prompt")
    assert list(tmp_path.iterdir()) == [] and stub.requests == 0


# ---- extract ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("given", ["neither", "only --logs", "only --out"])
def test_extract_needs_logs_and_out(tmp_path, cli, stub, given):
    args = {"neither": [], "only --logs": ["--logs", log_file(tmp_path)], "only --out": ["--out", tmp_path / "out.jsonl"]}[given]
    before = snapshot(tmp_path)
    result = extract(cli, stub, tmp_path, *args)
    refused(result, "error: extract needs --logs and --out (or: extract merge SHARD... --out FILE)")
    assert snapshot(tmp_path) == before and stub.requests == 0


@pytest.mark.parametrize("limit", ["0", "-3"])
def test_extract_refuses_a_limit_below_one(tmp_path, cli, stub, limit):
    logs, out = log_file(tmp_path), tmp_path / "out.jsonl"
    result = extract(cli, stub, tmp_path, "--logs", logs, "--out", out, "--prompt", PROMPT["extractor"], "--limit", limit)
    refused(result, f"error: --limit {limit}: must be at least 1")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"] and stub.requests == 0  # no output, partial, manifest, cache


def test_extract_refuses_the_graders_prompt(tmp_path, cli, stub, shipped):
    logs, out = log_file(tmp_path), tmp_path / "out.jsonl"
    result = extract(cli, stub, tmp_path, "--logs", logs, "--out", out, "--prompt", PROMPT["grader"])
    refused(result, f"error: {PROMPT['grader']} is a grader prompt, not an extractor prompt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["log.jsonl"] and stub.requests == 0


# ---- review ------------------------------------------------------------------------------------------------------------

@pytest.fixture
def run_folder(tmp_path):
    return make_run(tmp_path / "reports", seed=2, goldset=tmp_path / "gold.csv")


@pytest.mark.parametrize("name", ["review.txt", "review.xls", "review", "review.xlsx.bak"])
def test_review_refuses_an_output_that_is_not_xlsx_or_csv(tmp_path, cli, run_folder, name):
    before = snapshot(tmp_path)
    result = cli.calibrator("review", run_folder, "-o", tmp_path / name)
    refused(result, "error: --output must end in .xlsx or .csv")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("name", ["REVIEW.XLSX", "review.CSV"])
def test_review_takes_the_suffix_in_any_case(tmp_path, cli, run_folder, name):
    result = cli.calibrator("review", run_folder, "-o", tmp_path / name, "--goldset", tmp_path / "gold.csv")
    assert result.code == 0, result.err
    assert f"to {tmp_path / name}" in result.out
    if name.lower().endswith(".xlsx"):
        header = [c.value for c in openpyxl.load_workbook(tmp_path / name)["review"][1]]
    else:
        header = (tmp_path / name).read_text(encoding="utf-8").splitlines()[0].split(",")
    assert header[0] == "id" and "adjudicated_label" in header


def test_review_refuses_a_goldset_that_does_not_exist(tmp_path, cli, run_folder):
    before = snapshot(tmp_path)
    result = cli.calibrator("review", run_folder, "-o", tmp_path / "review.xlsx", "--goldset", tmp_path / "moved.csv")
    refused(result, f"error: --goldset {tmp_path / 'moved.csv'}: no such file")
    assert snapshot(tmp_path) == before


# ---- goldset --sheet ---------------------------------------------------------------------------------------------------

ROW = {"context": "patient: I have a cough.", "target_info": "duration: three days", "candidate": "How long have you had it?",
       "content_score": 1, "format_score": 1, "note": ""}


def workbook(path: Path, sheets: dict[str, list[list]]) -> Path:
    book = openpyxl.Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
    book.save(path)
    return path


def rows(*ids: str, **changes) -> list[list]:
    """Rows under the grader contract's header, each its own case (the same case twice is a duplicate)."""
    return [HEADER] + [[(ROW | {"id": i, "context": f"patient: I have had a cough ({i})."} | changes).get(h, "") for h in HEADER]
                       for i in ids]


@pytest.fixture
def two_sheets(tmp_path):
    """A workbook whose `good` sheet is valid and whose `bad` sheet has a score of 2, both with the contract's header,
    and a `notes` sheet without it."""
    return workbook(tmp_path / "filled.xlsx", {"good": rows("g1", "g2", "g3"), "bad": rows("b1", content_score=2),
                                               "notes": [["just", "notes"], ["call back", "Friday"]]})


def test_goldset_validate_reads_only_the_named_sheet(tmp_path, cli, two_sheets):
    everything = cli.calibrator("goldset", "validate", two_sheets)
    refused(everything, "sheet 'bad', row 2, column 'content_score'")
    good = cli.calibrator("goldset", "validate", two_sheets, "--sheet", "good")
    assert good.code == 0, good.err
    assert f"{two_sheets}: valid grader gold set" in good.out and "3 rows;" in good.out
    refused(cli.calibrator("goldset", "validate", two_sheets, "--sheet", "bad"), "1 problem(s)", "sheet 'bad', row 2")


def test_goldset_add_takes_only_the_named_sheet(tmp_path, cli, two_sheets):
    store = write_csv(tmp_path / "gold.csv", [ROW | {"id": "old"}])
    before = store.read_bytes()
    result = cli.calibrator("goldset", "add", two_sheets, "--sheet", "good", "--goldset", store)
    assert result.code == 0, result.err
    assert "added 3, updated 0, unchanged 0, rejected 0" in result.out
    with open(store, newline="") as f:
        assert [line.split(",")[0] for line in f.read().splitlines()[1:]] == ["old", "g1", "g2", "g3"]
    assert (tmp_path / "gold.csv.bak").read_bytes() == before


@pytest.mark.parametrize("task", ["validate", "add"])
def test_goldset_refuses_a_sheet_that_is_not_there(tmp_path, cli, two_sheets, task):
    store = write_csv(tmp_path / "gold.csv", [ROW | {"id": "old"}])
    before = snapshot(tmp_path)
    result = cli.calibrator("goldset", task, two_sheets, "--sheet", "Data", *(("--goldset", store) if task == "add" else ()))
    refused(result, f"error: {two_sheets} has 1 problem(s); nothing was written", "no sheet 'Data'; sheets: good, bad, notes")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("task", ["validate", "add"])
def test_goldset_refuses_a_named_sheet_without_the_contracts_columns(tmp_path, cli, two_sheets, task):
    store = write_csv(tmp_path / "gold.csv", [ROW | {"id": "old"}])
    before = snapshot(tmp_path)
    result = cli.calibrator("goldset", task, two_sheets, "--sheet", "notes", *(("--goldset", store) if task == "add" else ()))
    refused(result, "4 problem(s); nothing was written", "sheet 'notes', row 1, column 'context': required column is missing",
            "sheet 'notes', row 1, column 'content_score': required column is missing")
    assert snapshot(tmp_path) == before


# ---- goldset audit --top -----------------------------------------------------------------------------------------------

@pytest.fixture
def runs(tmp_path):
    return [make_run(tmp_path / "reports", seed=s, run_id=f"run-{s}") for s in (1, 2)]


def listed(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("  ")]


def audit(cli, runs: list[Path], *args: object) -> Result:
    return cli.calibrator("goldset", "audit", *[a for r in runs for a in ("--run", r)], *args)


def test_audit_top_lists_that_many_of_the_ranked_rows(cli, runs):
    whole = audit(cli, runs)
    assert whole.code == 0, whole.err
    ranked = listed(whole.out)
    assert len(ranked) >= 3
    for top in (0, 1, len(ranked) - 1, len(ranked) + 5):
        result = audit(cli, runs, "--top", top)
        assert result.code == 0, result.err
        assert listed(result.out) == ranked[:top]
        assert result.out.splitlines()[0] == whole.out.splitlines()[0]  # the count is of every suspect, whatever --top


@pytest.mark.parametrize("top, words", [
    ("-1", ["error: --top must be 0 or more, got -1"]),
    ("three", ["argument --top: invalid int value: 'three'"]),
])
def test_audit_refuses_a_top_that_is_not_a_count(cli, runs, top, words):
    refused(audit(cli, runs, "--top", top), *words)


def test_audit_refuses_folders_it_cannot_read(tmp_path, cli, runs):
    refused(audit(cli, [runs[0], tmp_path / "nowhere"]), "error: ", "No such file or directory", "run.json")
    refused(cli.calibrator("goldset", "audit", "--component", "extractor", "--run", runs[0]),
            f"error: {runs[0]} is a grader run, not extractor")
    record = json.loads((runs[1] / "run.json").read_text())
    (runs[1] / "run.json").write_text(json.dumps(record | {"calibrated": None, "kind": "eval"}))
    refused(audit(cli, runs), f"error: {runs[1]} is an eval; audit needs `run` folders (baseline and calibrated)")
