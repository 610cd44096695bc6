"""Tests for calibrator.expert_logs.logs: reading both log formats, line-by-line problems, and hindsight segmentation."""

import csv
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st


from calibrator.components.grader import GraderRow
from calibrator.expert_logs.logs import LogError, Message, Session, asks, read_logs, render, segment, segment_all
from support.files import write_rows

GOOD = {"session_id": "s1", "messages": [{"role": "user", "content": "I have a cough."}, {"role": "assistant", "content": "How long?"}]}


def session(*turns: str, sid: str = "s") -> Session:
    """Turns written `u:text` / `a:text`."""
    roles = {"u": "user", "a": "assistant"}
    return Session(session_id=sid, messages=[Message(role=roles[t[0]], content=t[2:]) for t in turns])


def write_jsonl(path: Path, lines: list) -> Path:
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n", encoding="utf-8")
    return path


def shape(samples) -> list[tuple[int, int, str]]:
    return [(len(s.context), len(s.future), s.decision) for s in samples]


# --- segmentation -------------------------------------------------------------------------------


def test_greeting_run_gives_no_sample():
    samples = segment(session("a:Hello, how can I help?", "a:Take your time.", "u:I have a cough.", "a:How long?"))
    assert shape(samples) == [(3, 1, "stop")]
    assert samples[0].future[0].content == "How long?"


def test_consecutive_same_role_messages():
    s = session("u:I have a cough.", "u:It is dry.", "u:Since Monday.", "a:Any fever?", "a:And your age?", "u:No fever, 40.")
    [sample] = segment(s)
    assert [m.content for m in sample.context] == ["I have a cough.", "It is dry.", "Since Monday."]
    assert [m.content for m in sample.future[:2]] == ["Any fever?", "And your age?"]
    assert sample.decision == "continue"


def test_med_search_ending_is_stop():
    samples = segment(session("u:Headache.", "a:Since when?", "u:Today.", "a:Any allergies?", "u:None.", "a:<med_search>"))
    assert [s.decision for s in samples] == ["continue", "continue", "stop"]
    assert samples[-1].future[-1].content == "<med_search>"
    assert [m.content for m in samples[-1].future] == ["<med_search>"]


def test_context_is_the_full_history():
    s = session("u:Sore throat.", "a:How long?", "u:Two days.", "a:Fever?", "u:A little.", "a:Age?", "u:30.")
    samples = segment(s)
    assert samples[-1].context == s.messages[:5]
    assert samples[-1].future == s.messages[5:]


def test_one_sample_per_run_with_numbered_ids():
    sessions = [session("u:a", "a:b", "a:c", "u:d", "a:e", "u:f", "a:g", sid="x"), session("u:a", "a:b", sid="y")]
    samples = segment_all(sessions)
    assert [s.id for s in samples] == ["x_0", "x_1", "x_2", "y_0"]
    assert [s.session_id for s in samples] == ["x", "x", "x", "y"]
    assert [len(s.future) for s in samples] == [6, 3, 1, 1]


def test_session_ending_with_user_message_always_continues():
    samples = segment(session("u:Cough.", "a:How long?", "u:A week.", "a:Any fever?", "u:No."))
    assert shape(samples) == [(1, 4, "continue"), (3, 2, "continue")]


def test_no_user_message_no_sample():
    assert segment(session("a:Hello.", "a:Anyone there?")) == []
    assert segment(session("u:Hello?")) == []


@given(st.lists(st.sampled_from(["user", "assistant"]), min_size=1, max_size=30))
def test_segmentation_properties(roles):
    s = Session(session_id="p", messages=[Message(role=r, content=f"m{i}") for i, r in enumerate(roles)])
    runs = sum(1 for i, r in enumerate(roles) if r == "assistant" and i > 0 and roles[i - 1] == "user")
    samples = segment(s)
    assert len(samples) == runs
    for sample in samples:
        assert sample.context + sample.future == s.messages
        assert sample.future[0].role == "assistant"
        assert sample.context[-1].role == "user"
        assert (sample.decision == "continue") == any(m.role == "user" for m in sample.future)


# --- rendering ----------------------------------------------------------------------------------


def test_advice_rule_stops_at_the_first_run_after_the_last_question():
    s = session("u:I have a cough.", "a:Okay. Since when?", "u:Three days.", "a:I see.", "u:It is dry.", "a:Any fever?",
                "u:No.", "a:It is viral.", "a:Rest and drink fluids.", "u:Thanks. Should I come back?", "a:If it lasts a week.",
                "u:Bye.")
    samples = segment(s, "advice")
    assert [(x.id, x.decision, x.future[0].content) for x in samples] == [
        ("s_0", "continue", "Okay. Since when?"), ("s_1", "continue", "I see."), ("s_2", "continue", "Any fever?"),
        ("s_3", "stop", "It is viral.")]  # the advice after the stop point is dropped
    assert samples[3].context == s.messages[:7] and samples[3].future == s.messages[7:]
    assert [x.decision for x in segment(s, "end")] == ["continue"] * 5  # the patient speaks last: never a stop


def test_advice_rule_without_a_final_advice_or_any_question():
    still_asking = session("u:Cough.", "a:Since when?", "u:Monday.", "a:Any fever?", "u:No.")
    assert [x.decision for x in segment(still_asking, "advice")] == ["continue", "continue"]
    never_asks = session("u:Cough.", "a:It is viral.", "u:Thanks.", "a:Rest.", "u:Bye.")
    assert [(x.id, x.decision) for x in segment(never_asks, "advice")] == [("s_0", "stop")]


@pytest.mark.parametrize("text, expected", [
    ("Any fever?", True), ("你打了疫苗了吗", True), ("你吃了什么药呢？", True), ("有没有发烧吗，咳嗽呢", True),
    ("多喝水，注意休息。", False), ("It is viral. Rest.", False), ("吗啡止痛", False),
    # checks that close advice are not inquiries; a turn with a check and a real question still asks
    ("OK?", False), ("Um, all right?", False), ("If it gets worse, give me a call, OK?", False), ("Does that make sense?", False),
    ("Okay, and is uh is the treatment plan clear?", False), ("Right. Do you have any questions for me?", False),
    ("How's that sound?", False), ("Could you say that again, sorry?", False),
    ("Does that make sense? Any pain when you pass water?", True), ("Is that right?", True), ("And what about smoking, sir?", True)])
def test_asks_reads_question_marks_and_clause_final_chinese_particles(text, expected):
    assert asks(text) is expected


def test_render_one_turn_per_line_in_goldset_format():
    messages = [Message(role="user", content="I have a cough\nand  a cold.\r\n"), Message(role="assistant", content="How long?\u2028Days?")]
    text = render(messages)
    assert text == "patient: I have a cough and  a cold.\npharmacist: How long? Days?"
    row = GraderRow(id="r", context=text, target_info=["duration: 3 days"], candidate="Since when?", content_score=1)
    assert row.context == text


# --- RealMedConv JSONL --------------------------------------------------------------------------


def test_realmedconv_reads_sessions(tmp_path):
    messages = [{"role": "user", "content": " Cough. "}, {"role": "assistant", "content": "<med_search>"}]
    line = {"session_id": 7, "diagn": "cold", "messages": messages}
    read = read_logs(write_jsonl(tmp_path / "log.jsonl", [line, "", GOOD]))
    assert (read.problems, read.skipped) == ([], 0)
    assert [s.session_id for s in read.sessions] == ["7", "s1"]
    assert read.sessions[0].diagn == "cold"
    assert [m.content for m in read.sessions[0].messages] == ["Cough.", "<med_search>"]


def test_malformed_lines_reported_and_skipped(tmp_path):
    lines = [
        GOOD,
        "{not json",
        {"session_id": "s2", "messages": [{"role": "doctor", "content": "Hi"}]},
        "",
        {"session_id": "s3", "messages": []},
        {"session_id": "s4", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]},
        {"session_id": "s5", "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Age?"}]},
        {"messages": [{"role": "user", "content": "Hi"}]},
        {"session_id": "s1", "messages": [{"role": "user", "content": "Hi"}]},
        "[1, 2]",
        {"session_id": "s6"},
    ]
    read = read_logs(write_jsonl(tmp_path / "log.jsonl", lines))
    assert [s.session_id for s in read.sessions] == ["s1", "s5"]
    assert read.skipped == 8
    by_line = {p.line: p.message for p in read.problems}
    assert sorted(by_line) == [2, 3, 5, 6, 8, 9, 10, 11]
    assert "not valid JSON" in by_line[2]
    assert "message 1: role must be 'user' or 'assistant', got 'doctor'" in by_line[3]
    assert "messages is empty" in by_line[5]
    assert "message 2: content is empty" in by_line[6]
    assert "session_id is missing" in by_line[8]
    assert "duplicate session_id 's1' (first on line 1)" in by_line[9]
    assert "expected a JSON object, got list" in by_line[10]
    assert "messages is missing" in by_line[11]
    assert all(m.endswith("session skipped") for m in by_line.values())
    assert str(read.problems[0]) == f"{tmp_path / 'log.jsonl'}, line 2: {by_line[2]}"


# --- transcripts --------------------------------------------------------------------------------

COLUMNS = ["dialogue_id", "turn", "speaker", "text"]
TURNS = [
    ["d1", 1, "Patient", "I have a cough."],
    ["d1", 2, "PHARMACIST", "How long?"],
    ["d1", 3, "customer", "Two days."],
    ["d1", 4, "expert", "<med_search>"],
]


def test_transcript_csv_and_jsonl_match_realmedconv(tmp_path):
    roles = ["user", "assistant", "user", "assistant"]
    messages = [{"role": r, "content": t[3]} for r, t in zip(roles, TURNS)]
    medconv = write_jsonl(tmp_path / "m.jsonl", [{"session_id": "d1", "messages": messages}])
    shuffled = [TURNS[2], TURNS[0], TURNS[3], TURNS[1]]
    csv_file = tmp_path / "t.csv"
    csv_file.write_bytes(b"\xef\xbb\xbf")  # a BOM, as spreadsheet apps write
    with open(csv_file, "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([[" Dialogue_ID", "Turn ", "SPEAKER", "text", "note"], *[[*t, "x"] for t in shuffled]])
    jsonl = write_jsonl(tmp_path / "t.jsonl", [dict(zip(COLUMNS, t)) for t in shuffled])
    expected = segment_all(read_logs(medconv).sessions)
    assert len(expected) == 2
    for path in (csv_file, jsonl):
        read = read_logs(path)
        assert (read.problems, read.skipped) == ([], 0)
        assert segment_all(read.sessions) == expected


def test_transcript_bad_rows_skip_their_dialogue(tmp_path):
    rows = [
        *TURNS,
        ["d2", 1, "nurse", "Hello"],
        ["d2", 2, "pharmacist", "Hi"],
        ["d3", "two", "patient", "Cough"],
        ["d4", 1, "patient", "Cough"],
        ["d4", 1, "pharmacist", "How long?"],
        ["d5", 1, "patient", ""],
    ]
    read = read_logs(write_rows(tmp_path / "t.csv", rows, COLUMNS))
    assert [s.session_id for s in read.sessions] == ["d1"]
    assert read.skipped == 4
    by_row = {p.line: p.message for p in read.problems}
    assert sorted(by_row) == [6, 8, 10, 11]
    assert "unknown speaker 'nurse'" in by_row[6] and "dialogue 'd2' skipped" in by_row[6]
    assert "turn must be an integer, got 'two'" in by_row[8]
    assert "turn 1 repeats line 9 of dialogue 'd4'" in by_row[10]
    assert "text is empty" in by_row[11]


def test_transcript_jsonl_bad_line_reported(tmp_path):
    lines = [dict(zip(COLUMNS, t)) for t in TURNS] + ["oops", {"dialogue_id": "d2", "turn": 1.5, "speaker": "user", "text": "Hi"}]
    read = read_logs(write_jsonl(tmp_path / "t.jsonl", lines))
    assert [s.session_id for s in read.sessions] == ["d1"]
    assert [p.line for p in read.problems] == [5, 6]
    assert "not valid JSON" in read.problems[0].message
    assert "turn must be an integer, got '1.5'" in read.problems[1].message
    assert read.skipped == 1


# --- whole-file errors --------------------------------------------------------------------------


def test_wrong_csv_header_names_expected_columns(tmp_path):
    path = write_rows(tmp_path / "t.csv", [["d1", "1", "patient", "Hi"]], ["id", "turn", "who", "text"])
    with pytest.raises(LogError, match="expected columns dialogue_id, turn, speaker, text") as info:
        read_logs(path)
    assert "missing dialogue_id, speaker" in str(info.value)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("log.jsonl", "\xff\xfe{}".encode("latin-1"), "not UTF-8"),
        ("log.csv", b"\x80dialogue_id", "not UTF-8"),
        ("log.jsonl", b"  \n\n", "empty"),
        ("log.csv", b"", "empty"),
        ("log.txt", b"hello", "unsupported file type '.txt'"),
        ("log.jsonl", b'{"id": 1, "turns": []}\n', "unrecognised format"),
        ("log.json", b"[\n  {}\n]\n", "unrecognised format"),
    ],
)
def test_unusable_files_raise(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(LogError, match=match) as info:
        read_logs(path)
    assert str(path) in str(info.value)


def test_missing_file_raises(tmp_path):
    with pytest.raises(LogError, match="no such file"):
        read_logs(tmp_path / "nope.jsonl")
