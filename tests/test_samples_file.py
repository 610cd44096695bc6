"""Sample files in the Learn-to-Ask reference's processed shape, as its train and test files are written, read by
`train run --samples` and `train eval --samples`, written by `calibrator extract --format reference`, and round
trips that lose nothing; a bad line named by line and field, never a traceback."""

import json
from pathlib import Path

import pytest

from calibrator.expert_logs.samples_file import (SamplesFileError, join_info_truth, parse_chat_text, parse_info_truth, read_samples,
                                     sample_lines)
from support.extraction import extract_args, records, write_log
from train.data import expert_move, warm_rows

INFO = "Symptom: sore throat, Symptom quality: thick, yellow discharge, Symptom severity: mild cough"
CONTEXT = [{"role": "user", "content": "I have a sore throat."}, {"role": "assistant", "content": "Since when?"},
           {"role": "user", "content": "Two days."}]
FUTURE = [{"role": "assistant", "content": "Is the discharge thick or thin?"},
          {"role": "user", "content": "Thick, yellow."}, {"role": "assistant", "content": "<med_search>"}]


def reference_lines() -> list[dict]:
    """Three samples as the reference writes them: remaining_chat as messages, as text, and a stop."""
    return [
        {"cid": "s1_1", "session_id": "s1", "diagn": "pharyngitis", "messages": CONTEXT, "remaining_chat": FUTURE,
         "decision_truth": "continue", "info_truth": INFO},
        {"cid": "s1_2", "session_id": "s1", "diagn": "pharyngitis", "messages": CONTEXT + FUTURE[:2],
         "remaining_chat": "assistant: Any fever?\nuser: No fever,\nbut tired.\nassistant: <med_search>",
         "decision_truth": "continue", "info_truth": "Symptom: no fever, Symptom: tired"},
        {"cid": "s2_1", "session_id": "s2", "diagn": None, "messages": CONTEXT, "remaining_chat": [FUTURE[-1]],
         "decision_truth": "stop", "info_truth": ""},
    ]


def write_jsonl(path: Path, objects: list) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects), encoding="utf-8")
    return path


def test_info_truth_splits_at_field_labels_not_at_every_comma():
    assert parse_info_truth(INFO) == ["Symptom: sore throat", "Symptom quality: thick, yellow discharge",
                                      "Symptom severity: mild cough"]
    assert parse_info_truth("症状: 咳嗽，持续时间: 三天") == ["症状: 咳嗽", "持续时间: 三天"]
    assert parse_info_truth("") == [] and parse_info_truth(" , ") == []
    assert parse_info_truth(join_info_truth(["a: 1, 2", "b: 3"])) == ["a: 1, 2", "b: 3"]


def test_remaining_chat_text_is_read_as_labelled_messages():
    messages = parse_chat_text("Assistant: Any fever?\nuser: No fever,\nbut tired.\n\npharmacist: Rest.")
    assert [(m.role, m.content) for m in messages] == [("assistant", "Any fever?"), ("user", "No fever,\nbut tired."),
                                                       ("assistant", "Rest.")]
    assert parse_chat_text("no labels at all") == []
    assert [(m.role, m.content) for m in parse_chat_text("药师：咳嗽几天了？\n患者：三天")] == [("assistant", "咳嗽几天了？"), ("user", "三天")]


def test_the_reference_shape_is_read_into_samples(tmp_path):
    samples = read_samples(write_jsonl(tmp_path / "train.jsonl", reference_lines()))
    first, text, stop = samples
    assert (first.id, first.session_id, first.decision, first.diagn) == ("s1_1", "s1", "continue", "pharyngitis")
    assert first.target_info == parse_info_truth(INFO) and len(first.target_info) == 3
    assert [m.content for m in first.future] == [m["content"] for m in FUTURE]
    assert [(m.role, m.content) for m in text.future] == [("assistant", "Any fever?"), ("user", "No fever,\nbut tired."),
                                                          ("assistant", "<med_search>")]
    assert text.target_info == ["Symptom: no fever", "Symptom: tired"]
    assert (stop.decision, stop.target_info) == ("stop", [])
    assert expert_move(first) == "Is the discharge thick or thin?" and expert_move(stop) == "<stop />"


def test_a_reference_file_read_and_written_back_is_unchanged(tmp_path):
    original = reference_lines()
    samples = read_samples(write_jsonl(tmp_path / "train.jsonl", original))
    assert [json.loads(line) for line in sample_lines(samples, "reference")] == original


def test_ours_written_in_the_reference_shape_and_read_back_is_the_same_sample(tmp_path):
    ours = read_samples(write_jsonl(tmp_path / "ours.jsonl", [
        {"id": "a_0", "session_id": "a", "context": CONTEXT, "future": FUTURE, "decision": "continue",
         "target_info": ["duration: two days", "nature: thick, yellow"], "prompt_sha256": "f" * 64, "lm": "local",
         "session_index": 4},
        {"id": "a_1", "session_id": "a", "context": CONTEXT + FUTURE[:2], "future": FUTURE[2:], "decision": "stop",
         "target_info": []}]))
    again = read_samples(write_jsonl(tmp_path / "ref.jsonl", [json.loads(line) for line in sample_lines(ours, "reference")]))
    keys = ("id", "session_id", "context", "future", "target_info", "decision", "prompt_sha256", "lm", "session_index")
    assert [s.model_dump(include=set(keys)) for s in again] == [s.model_dump(include=set(keys)) for s in ours]
    assert [s.target_scope for s in again] == ["next", "next"]  # ours, unstamped (made before the option), are next targets


def test_an_edited_target_or_future_is_written_as_edited_not_as_the_text_it_was_read_from(tmp_path):
    [sample, text, _] = read_samples(write_jsonl(tmp_path / "train.jsonl", reference_lines()))
    sample.target_info = sample.target_info[:1]
    [line] = sample_lines([sample], "reference")
    assert json.loads(line)["info_truth"] == "Symptom: sore throat"
    text.future = text.future[:1]
    [line] = sample_lines([text], "reference")
    assert json.loads(line)["remaining_chat"] == [{"role": "assistant", "content": "Any fever?"}]


@pytest.mark.parametrize("bad, said", [
    ("{not json", "line 2: not valid JSON"),
    ('["a list"]', "line 2: expected a JSON object, got list"),
    ('{"hello": 1}', "line 2: neither sample shape (keys: hello)"),
    ('{"cid": "x_1", "session_id": "x", "messages": [], "remaining_chat": [], "info_truth": "a: b"}',
     "line 2: not a sample in the Learn-to-Ask reference's processed samples (cid, session_id, diagn, messages, "
     "remaining_chat, decision_truth, info_truth): decision_truth: is missing"),
    ('{"cid": "x_1", "session_id": "x", "messages": [{"role": "nurse", "content": "hi"}], "remaining_chat": [], '
     '"decision_truth": "stop"}', "line 2: not a sample in the Learn-to-Ask reference's processed samples (cid, session_id, "
     "diagn, messages, remaining_chat, decision_truth, info_truth): messages.1.role: role must be 'user' or 'assistant'"),
    ('{"cid": "x_1", "session_id": "x", "messages": [], "remaining_chat": [], "decision_truth": "maybe"}',
     "line 2: not a sample in the Learn-to-Ask reference's processed samples (cid, session_id, diagn, messages, "
     "remaining_chat, decision_truth, info_truth): decision_truth: Input should be 'continue' or 'stop'"),
])
def test_a_bad_line_is_named_with_its_field(tmp_path, bad, said):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(reference_lines()[0]) + "\n" + bad + "\n")
    with pytest.raises(SamplesFileError) as caught:
        read_samples(path)
    assert str(path) in str(caught.value) and said in str(caught.value)


def test_a_continue_sample_whose_future_is_unlabelled_text_is_left_out_of_the_warm_start(tmp_path):
    line = reference_lines()[1] | {"remaining_chat": "Any fever? No fever."}
    [sample] = read_samples(write_jsonl(tmp_path / "train.jsonl", [line]))
    assert sample.future == [] and expert_move(sample) is None
    assert warm_rows([sample], "Ask one question.") == []
    assert json.loads(next(sample_lines([sample], "reference")))["remaining_chat"] == "Any fever? No fever."


def test_extract_refuses_processed_samples_as_logs_and_says_what_reads_them(tmp_path, cli):
    path = write_jsonl(tmp_path / "train.jsonl", reference_lines())
    done = cli.calibrator("extract", "--logs", path, "--out", tmp_path / "out.jsonl", "--no-progress")
    assert done.code == 2
    assert "processed samples in the Learn-to-Ask reference's shape" in done.err and "train run --samples" in done.err
    assert not (tmp_path / "out.jsonl").exists()


def test_train_run_names_the_bad_line_of_a_samples_file_instead_of_a_traceback(tmp_path, cli):
    line = {k: v for k, v in reference_lines()[0].items() if k != "messages"}
    path = write_jsonl(tmp_path / "train.jsonl", [reference_lines()[2], line])
    done = cli.train("run", "--samples", path, "--out", tmp_path / "run", "--allow-uncalibrated")
    assert done.code == 2, done.err
    assert f"{path}, line 2: not a sample in the Learn-to-Ask reference's processed samples" in done.err
    assert "messages: is missing" in done.err and "Traceback" not in done.err


def test_extract_writes_the_reference_shape_and_resumes_from_it(tmp_path, stub, cli):
    logs, out = write_log(tmp_path / "sessions.jsonl", 3), tmp_path / "train.jsonl"
    args = extract_args(logs, out, stub.url, tmp_path / "cache", "--format", "reference")
    first = cli.calibrator(*args)
    assert first.code == 0, first.err
    written = records(out)
    assert [r["cid"] for r in written] == [f"s{i:04d}_{j}" for i in range(3) for j in range(3)]
    assert all(set(r) >= {"cid", "session_id", "diagn", "messages", "remaining_chat", "decision_truth", "info_truth"}
               and "id" not in r and "context" not in r for r in written)
    assert [r["decision_truth"] for r in written] == ["continue", "continue", "stop"] * 3
    assert all(r["target_scope"] == "next" for r in written)
    samples = read_samples(out)
    assert [s.target_scope for s in samples] == ["next"] * 9
    assert [s.target_info for s in samples] == [parse_info_truth(r["info_truth"]) for r in written]
    again = cli.calibrator(*args)
    assert again.code == 0, again.err
    assert "0 extracted now" in again.out and "9 from an earlier run" in again.out
    assert records(out) == written
