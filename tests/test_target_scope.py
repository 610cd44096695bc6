"""Targets on the reference's terms: `target_scope: rest` (what the patient reveals in the whole rest of the dialogue)
beside ours (`next`: what the expert's next run asked), in the extractor, the grader's rubric and the trainer's
checks; and the reference's other context cut (only the patient's last round) beside the paper's whole history."""

import json

import pytest

from calibrator.components.extract import default_prompt
from calibrator.components.extractor import EXTRACTOR, MAX_ITEMS, REST_FUTURE_LINES, REST_MAX_ITEMS, observed_future
from calibrator.components.grader import GRADER
from calibrator.gold.goldset import load_goldset
from calibrator.expert_logs.logs import Message, Session, segment
from calibrator.prompt import load_prompt
from calibrator.expert_logs.samples_file import read_samples
from support import ROOT
from support.extraction import extract_args, records, write_log
from support.training import sample
from calibrator.expert_logs.samples_file import SamplesFileError
from calibrator.expert_logs.shards import Manifest, manifest_path
from train.config import CONFIGS, TrainConfig
from train.data import check_target_scope, samples_file_notes, segment_logs

FUTURE = "\n".join(["pharmacist: Do you have a fever?", "patient: A mild one", "pharmacist: Any allergies?",
                    "patient: Penicillin", "pharmacist: Take paracetamol."])


class Row:
    def __init__(self, scope=None):
        self.context, self.future, self.target_scope = "patient: I have a headache", FUTURE, scope


def test_next_shows_the_run_and_the_reply_and_rest_shows_the_whole_remaining_dialogue():
    assert EXTRACTOR.inputs_of(Row())["future"] == observed_future(FUTURE) == "\n".join(FUTURE.split("\n")[:2])
    assert EXTRACTOR.inputs_of(Row("rest"))["future"] == FUTURE
    long = Row("rest")
    long.future = "\n".join(f"{'pharmacist' if i % 2 else 'patient'}: turn {i}" for i in range(1, 71))
    assert EXTRACTOR.inputs_of(long)["future"].split("\n") == long.future.split("\n")[:REST_FUTURE_LINES] and REST_FUTURE_LINES < 70


def test_a_gold_row_labelled_from_the_rest_is_shown_the_rest_and_a_prompt_of_the_other_scope_is_refused(tmp_path, cli):
    header = "context,future,target_info,decision,target_scope\n"
    line = '"patient: I have a headache","{}","fever: mild; allergy: penicillin",continue,{}\n'.format(FUTURE.replace('"', '""'), "{}")
    rest = tmp_path / "rest.csv"
    rest.write_text(header + line.format("rest") + line.format("REST").replace("headache", "migraine"))
    rows = load_goldset(rest, EXTRACTOR.row_model).rows
    assert [r.target_scope for r in rows] == ["rest", "rest"] and EXTRACTOR.inputs_of(rows[0])["future"] == FUTURE
    plain = tmp_path / "next.csv"
    plain.write_text(header + line.format("next") + line.format("").replace("headache", "migraine"))
    next_rows = load_goldset(plain, EXTRACTOR.row_model).rows
    assert [r.target_scope for r in next_rows] == [None, None]
    assert EXTRACTOR.inputs_of(next_rows[0])["future"] == observed_future(FUTURE)
    # the shipped gold set, loaded with the new column in the format, keeps the version its calibration recorded
    shipped = load_goldset(ROOT / "goldsets" / "extractor.csv", EXTRACTOR.row_model).sha256
    assert shipped == load_prompt(ROOT / "prompts" / "extractor.calibrated.yaml").calibration.goldset_sha256
    done = cli.calibrator("run", "--component", "extractor", "--goldset", plain, "--prompt", ROOT / "prompts" / "extractor.rest.yaml",
               "--lm", "openai:m", "--out", tmp_path / "runs")
    assert done.code == 2 and "target_scope is rest, but 2 of 2 gold rows are labelled for another scope" in done.err
    assert not (tmp_path / "runs").exists()
    done = cli.calibrator("run", "--component", "extractor", "--goldset", rest, "--prompt", ROOT / "prompts" / "extractor.yaml",
               "--lm", "openai:m", "--out", tmp_path / "runs")
    assert done.code == 2 and "target_scope is next, but 2 of 2" in done.err
    assert EXTRACTOR.prompt_mismatch(load_prompt(ROOT / "prompts" / "extractor.rest.yaml"), rows) is None


def test_the_rest_prompts_ask_for_what_the_patient_reveals_and_grade_any_item():
    rest = load_prompt(ROOT / "prompts" / "extractor.rest.yaml")
    signature = EXTRACTOR.signature_for(rest)
    items = signature.output_fields["target_info"]
    assert rest.target_scope == "rest" and "reveals in that rest" in items.json_schema_extra["desc"]
    schema = items.annotation.__get_pydantic_json_schema__(None, None)
    assert schema["maxItems"] == REST_MAX_ITEMS
    plain = EXTRACTOR.signature_for(load_prompt(ROOT / "prompts" / "extractor.yaml")).output_fields["target_info"]
    assert plain.annotation.__get_pydantic_json_schema__(None, None)["maxItems"] == MAX_ITEMS
    grader = GRADER.signature_for(load_prompt(ROOT / "prompts" / "grader.rest.yaml"))
    assert "any target item" in grader.output_fields["content_score"].json_schema_extra["desc"]
    assert "any target item" not in GRADER.signature_for(load_prompt(ROOT / "prompts" / "grader.yaml")).output_fields[
        "content_score"].json_schema_extra["desc"]


def test_the_default_extractor_prompt_follows_the_scope(tmp_path):
    (tmp_path / "prompts").mkdir()
    assert default_prompt(tmp_path, "rest") == tmp_path / "prompts" / "extractor.rest.yaml"
    (tmp_path / "prompts" / "extractor.rest.calibrated.yaml").write_text("x")
    assert default_prompt(tmp_path, "rest") == tmp_path / "prompts" / "extractor.rest.calibrated.yaml"
    assert default_prompt(tmp_path) == tmp_path / "prompts" / "extractor.yaml"


def test_extract_with_the_rest_prompt_sends_the_rest_and_stamps_the_scope(tmp_path, stub, cli):
    """The expert's last run (`Take paracetamol and rest.`) is in no continue sample's next run and reply, only in the
    rest of the dialogue: the next prompt never sends it, the rest prompt does."""
    logs, out = write_log(tmp_path / "sessions.jsonl", 2), tmp_path / "samples.jsonl"
    nxt = cli.calibrator(*extract_args(logs, tmp_path / "next.jsonl", stub.url, tmp_path / "cache2"))
    assert nxt.code == 0, nxt.err
    assert {r["target_scope"] for r in records(tmp_path / "next.jsonl")} == {"next"}
    assert "Take paracetamol and rest." not in "\n".join(stub._asked)
    args = extract_args(logs, out, stub.url, tmp_path / "cache")
    rest = [*args[:args.index("--prompt") + 1], str(ROOT / "prompts" / "extractor.rest.yaml"), *args[args.index("--prompt") + 2:]]
    done = cli.calibrator(*rest)
    assert done.code == 0, done.err
    assert {r["target_scope"] for r in records(out)} == {"rest"}
    assert "Take paracetamol and rest." in "\n".join(stub._asked)


def test_segment_can_keep_only_the_patients_last_round_as_context():
    turns = [("user", "Hi"), ("user", "I have a cough"), ("assistant", "Since when?"), ("user", "A week"), ("user", "Dry"),
             ("assistant", "Any fever?"), ("user", "No"), ("assistant", "Try honey.")]
    session = Session(session_id="s", messages=[Message(role=r, content=c) for r, c in turns])
    history, rounds = segment(session), segment(session, context_cut="round")
    assert [len(s.context) for s in history] == [2, 5, 7]
    assert [[m.content for m in s.context] for s in rounds] == [["Hi", "I have a cough"], ["A week", "Dry"], ["No"]]
    assert [(s.id, s.future, s.decision) for s in rounds] == [(s.id, s.future, s.decision) for s in history]


def write_samples(path, samples):
    path.write_text("".join(s.model_dump_json() + "\n" for s in samples))
    return path


@pytest.mark.parametrize("flag", ["run", "eval"])
def test_the_trainer_refuses_targets_of_another_scope_than_its_config(tmp_path, cli, flag):
    rest = [sample(f"s{i}", 0, "continue").model_copy(update={"target_scope": "rest"}) for i in range(4)]
    path = write_samples(tmp_path / "samples.jsonl", rest)
    if flag == "run":
        done = cli.train("run", "--samples", path, "--out", tmp_path / "run", "--allow-uncalibrated")
    else:
        run = tmp_path / "run"
        (run / "final").mkdir(parents=True)
        (run / "config.json").write_text(json.dumps({"out": str(run), "allow_uncalibrated": True}))
        (run / "run.json").write_text("{}")
        done = cli.train("eval", "--model", run, "--samples", path)
    assert done.code == 2, done.err
    assert "4 of 4 samples have target_scope rest targets (first: s0_0), but the config says target_scope: next" in done.err


def test_rest_targets_pass_with_a_rest_config_and_next_targets_do_not():
    rest = [sample("a", 0, "continue").model_copy(update={"target_scope": "rest"}), sample("b", 0, "stop")]
    check_target_scope(rest, TrainConfig(target_scope="rest"), "s.jsonl")  # refused would raise
    with pytest.raises(SamplesFileError, match="1 of 2 samples have target_scope next targets"):
        check_target_scope([rest[0], sample("b", 0, "continue").model_copy(update={"target_scope": "next"})],
                           TrainConfig(target_scope="rest"), "s.jsonl")
    check_target_scope(rest, TrainConfig(content=False, fusion="stop"), "s.jsonl")  # no content graded: no target read


def test_the_configs_context_cut_reaches_the_segmentation_and_a_samples_manifest_is_checked_against_it(tmp_path):
    logs = write_log(tmp_path / "sessions.jsonl", 2)
    history = segment_logs(TrainConfig(logs=logs))
    rounds = segment_logs(TrainConfig(logs=logs, context_cut="round"))
    assert [len(s.context) for s in history] == [1, 3, 5] * 2 and [len(s.context) for s in rounds] == [1] * 6
    samples = write_samples(tmp_path / "samples.jsonl", [sample("a", 0, "stop")])
    manifest_path(samples).write_text(Manifest(logs="l", logs_sha256="x", shard=None, limit=None, sessions_file=None,
                                               sessions=1, samples=1, prompt_sha256="p", lm="local",
                                               context_cut="round").model_dump_json())
    with pytest.raises(SamplesFileError, match="cut with context cut 'round' .* but the config says context_cut: history"):
        samples_file_notes(TrainConfig(samples=samples))
    assert samples_file_notes(TrainConfig(samples=samples, context_cut="round")) == []


def test_the_gate_refuses_a_grader_prompt_for_another_scope(tmp_path, cli):
    config = tmp_path / "rest.yaml"
    config.write_text((CONFIGS / "cpu-smoke.yaml").read_text() + "target_scope: rest\n")
    path = write_samples(tmp_path / "samples.jsonl", [sample("a", 0, "continue")])
    done = cli.train("run", "--config", config, "--samples", path, "--out", tmp_path / "run")
    assert done.code == 2
    assert "grades against target_scope next, but the run's targets are target_scope rest" in done.err
    assert "prompts/grader.rest.yaml" in done.err and not (tmp_path / "run").exists()


def test_reference_samples_are_rest_targets(tmp_path):
    line = {"cid": "a_1", "session_id": "a", "messages": [{"role": "user", "content": "Cough"}],
            "remaining_chat": [{"role": "assistant", "content": "Dry?"}, {"role": "user", "content": "Yes"}],
            "decision_truth": "continue", "info_truth": "Symptom: dry cough"}
    (tmp_path / "ref.jsonl").write_text(json.dumps(line) + "\n")
    [ref] = read_samples(tmp_path / "ref.jsonl")
    assert ref.target_scope == "rest"
