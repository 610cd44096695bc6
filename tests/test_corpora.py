"""Tests for calibrator.corpora: PriMock57, MTS-Dialog and ReMeDi read as sessions, from hand-written fixtures in each
corpus's real format, and from the real files in ../shared/data when they are there."""

import json
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from calibrator.corpora import FORMATS, detect_format, mts_dialog, primock57, read_corpus, remedi
from calibrator.corpora.remedi import Action, AnnotatedSession, parse_actions
from calibrator.expert_logs.logs import LogError, Message, Session
from support.files import write_rows

MTS_HEADER = ("ID", "section_header", "section_text", "dialogue")

FIXTURES = Path(__file__).parent / "fixtures" / "corpora"
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
PRIMOCK = FIXTURES / "primock57"
MTS = FIXTURES / "mts-dialog.csv"
REMEDI = FIXTURES / "remedi.txt"
MTS_LABELS = FIXTURES / "mts-dialog-labels.csv"  # the training set's label variants, CRLF inside cells


def turns(session: Session) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in session.messages]


def remedi_line(context: list[tuple[str, str]], patient: str, action: str, response: str) -> str:
    """A line as the dev file writes it."""
    ctx = " ".join(f"<|{'user' if role == 'user' else 'system'}|> {text}" for role, text in context)
    return (f"<|endoftext|> <|context|> {ctx}<|endofcontext|> <|currentuser|> {patient} <|endofcurrentuser|> "
            f"<|intent|> Other <|endofintent|>  <|knowledge|>  <|endofknowledge|> <|action|> {action} <|endofaction|> "
            f"<|response|> {response} <|endofresponse|>  <|endoftext|>")


# --- PriMock57 ----------------------------------------------------------------------------------

CONSULTATION = [
    ("assistant", "Hello, how can I help you today?"),
    ("user", "I've had a cough, for a while."),
    ("assistant", "And how long has it been going on?"),
    ("user", 'About "three" days.'),
    ("assistant", "Any fever?"),
    ("user", "No, no fever."),
]


def test_primock57_fixture_is_in_the_real_format():
    for speaker in ("doctor", "patient"):
        raw = (PRIMOCK / "transcripts" / f"day1_consultation01_{speaker}.TextGrid").read_bytes()
        assert raw.count(b"\n") > 40 and raw.count(b"\r\n") == raw.count(b"\n")  # CRLF, as the corpus writes it
    assert b"<UNSURE>" in (PRIMOCK / "transcripts" / "day1_consultation01_doctor.TextGrid").read_bytes()


def test_primock57_merges_both_speakers_by_time_and_cleans_the_text():
    read = primock57.read(PRIMOCK)
    assert [s.session_id for s in read.sessions] == ["day1_consultation01"]
    # The "." interval is dropped, <UNSURE> keeps its words, <UNIN/> goes, Praat's "" is a quote, " ," closes up.
    assert turns(read.sessions[0]) == CONSULTATION
    assert (read.problems, read.skipped) == ([], 0)


def test_primock57_reads_the_transcripts_folder_itself():
    assert turns(primock57.read(PRIMOCK / "transcripts").sessions[0]) == CONSULTATION


def test_primock57_missing_speaker_skips_only_that_consultation(tmp_path):
    shutil.copytree(PRIMOCK, tmp_path / "root")
    transcripts = tmp_path / "root" / "transcripts"
    shutil.copy(transcripts / "day1_consultation01_doctor.TextGrid", transcripts / "day1_consultation02_doctor.TextGrid")
    read = primock57.read(tmp_path / "root")
    assert [s.session_id for s in read.sessions] == ["day1_consultation01"]
    [problem] = read.problems
    assert problem.file == str(transcripts / "day1_consultation02_patient.TextGrid")
    assert problem.line is None
    assert "missing" in problem.message and "day1_consultation02 skipped" in problem.message
    assert read.skipped == 1


def test_primock57_lost_intervals_are_a_problem(tmp_path):
    shutil.copytree(PRIMOCK, tmp_path / "root")
    grid = tmp_path / "root" / "transcripts" / "day1_consultation01_patient.TextGrid"
    grid.write_bytes(grid.read_bytes().replace(b"intervals: size = 7", b"intervals: size = 9"))
    read = primock57.read(tmp_path / "root")
    assert read.sessions == []
    [problem] = read.problems
    assert problem.file == str(grid)
    assert "parsed 7 intervals but the file declares 9" in problem.message
    assert read.skipped == 1


def test_primock57_detect(tmp_path):
    assert primock57.detect(PRIMOCK) and primock57.detect(PRIMOCK / "transcripts")
    assert not primock57.detect(tmp_path)
    assert not primock57.detect(MTS)
    (tmp_path / "transcripts").mkdir()
    (tmp_path / "transcripts" / "notes.txt").write_text("x")
    assert not primock57.detect(tmp_path)
    with pytest.raises(LogError, match="not a PriMock57 folder"):
        primock57.read(tmp_path)


# --- MTS-Dialog ---------------------------------------------------------------------------------


def test_mts_dialog_fixture_sessions_and_speakers():
    read = mts_dialog.read(MTS)
    assert [s.session_id for s in read.sessions] == ["0", "1", "3"]
    by_id = {s.session_id: turns(s) for s in read.sessions}
    # A line with no label continues the utterance before it; a label after a sentence's end starts a new one.
    assert by_id["0"] == [
        ("assistant", "What brings you in today?"),
        ("user", "My right knee hurts. It started last week, after a run."),
        ("assistant", "Does it hurt on the stairs?"),
        ("user", "Yes, going down."),
    ]
    # Family speaks for the patient (user); a second doctor is a clinician (assistant); spacing collapsed.
    assert by_id["1"] == [
        ("assistant", "Is she taking anything for the pain?"),
        ("user", "Just ibuprofen."),
        ("assistant", "How much, and how often?"),
        ("user", "Two tablets a day."),
    ]
    # `Guest_family.` (a full stop for a colon), a punctuation-only line dropped, the `Gest_family` typo.
    assert by_id["3"] == [
        ("user", "Hello, I'm his wife."),
        ("assistant", "Welcome. Any heart disease in the family?"),
        ("user", "His father had a heart attack."),
    ]


def test_mts_dialog_bad_row_is_reported_by_spreadsheet_row():
    read = mts_dialog.read(MTS)
    [problem] = read.problems
    # Header = row 1; rows 2 and 3 span several lines of the file each, row 4 is ID 2.
    assert (problem.file, problem.line) == (str(MTS), 4)
    assert "unknown speaker 'Nurse'" in problem.message and problem.message.endswith("row skipped")
    assert read.skipped == 1


def test_mts_dialog_row_problems(tmp_path):
    path = write_rows(tmp_path / "d.csv", [
        ["10", "CC", "x", "Doctor: Hi.\r\nPatient: Hello.\r\nGuest_clinician: Vitals are normal."],
        ["11", "CC", "x", "   "],
        ["12", "CC", "x", "Patient: I feel dizzy.\nGuest_family_2: Since Monday."],
        ["13", "CC", "x", "so anyway\nDoctor: Hi."],
        ["10", "CC", "x", "Doctor: Again."],
        ["", "CC", "x", "Doctor: No id."],
        ["14", "CC", "x", '"Doctor: Quoted label.\n Patient:  Leading space.'],
    ], MTS_HEADER)
    read = mts_dialog.read(path)
    assert [s.session_id for s in read.sessions] == ["10", "14"]
    assert turns(read.sessions[0]) == [("assistant", "Hi."), ("user", "Hello."), ("assistant", "Vitals are normal.")]
    assert turns(read.sessions[1]) == [("assistant", "Quoted label."), ("user", "Leading space.")]
    found = {p.line: p.message for p in read.problems}
    assert sorted(found) == [3, 4, 5, 6, 7]
    assert found[3].startswith("dialogue is empty")
    assert found[4].startswith("no doctor or clinician speaks")
    assert found[5].startswith("text before the first speaker label: 'so anyway'")
    assert found[6].startswith("duplicate ID '10' (first on row 2)")
    assert found[7].startswith("ID is empty")
    assert read.skipped == 5


def test_mts_dialog_unusable_files(tmp_path):
    with pytest.raises(LogError, match="missing dialogue"):
        mts_dialog.read(write_rows(tmp_path / "a.csv", [["1", "x"]], header=("ID", "text")))
    (tmp_path / "b.csv").write_bytes(b"ID,dialogue\n1,Doctor: caf\xe9\n")
    with pytest.raises(LogError, match="not UTF-8"):
        mts_dialog.read(tmp_path / "b.csv")


def test_mts_dialog_detect(tmp_path):
    assert mts_dialog.detect(MTS)
    transcript = write_rows(tmp_path / "t.csv", [["d1", "1", "patient", "Hi"]], header=("dialogue_id", "turn", "speaker", "text"))
    assert not mts_dialog.detect(transcript)
    assert not mts_dialog.detect(REMEDI)
    assert not mts_dialog.detect(tmp_path)


def test_mts_dialog_label_variants_of_the_training_set():
    """What only the real training set held before this fixture: the `Docotr_2` and `Guest_clinican` typos,
    `Guest_family2` (a number with no underscore), `Guest_family_1`, a label after a comma (`Yes, I am, Doctor:`)
    that is not a new utterance, and a dialogue whose only clinician is a (misspelled) guest clinician."""
    assert b"\r\n" in MTS_LABELS.read_bytes()
    read = mts_dialog.read(MTS_LABELS)
    assert (read.problems, read.skipped) == ([], 0)
    by_id = {s.session_id: turns(s) for s in read.sessions}
    assert list(by_id) == ["20", "21"]
    assert by_id["20"] == [
        ("assistant", "Are you here with anyone today?"),
        ("user", "Yes, I am, Doctor:"),
        ("user", "I'm her daughter."),
        ("assistant", "And how is the rash today?"),
        ("user", "Worse. It spread to her arms."),
    ]
    assert by_id["21"] == [("user", "I need my blood pressure checked."), ("assistant", "It is one thirty over eighty-five.")]


# --- ReMeDi -------------------------------------------------------------------------------------


def test_remedi_fixture_sessions():
    read = remedi.read(REMEDI)
    assert [s.session_id for s in read.sessions] == ["remedi-1", "remedi-8"]
    assert turns(read.sessions[0]) == [
        ("user", "我咳嗽三天了（女，30岁）"),
        ("assistant", "有没有发烧？"),
        ("user", "没有发烧， 有点痰"),
        ("assistant", "咳嗽多久了？可以先吃止咳糖浆"),
        ("user", "谢谢医生"),
        ("assistant", "不客气，多喝水"),
    ]
    assert turns(read.sessions[1]) == [("user", "牙疼得厉害"), ("assistant", "牙龈肿吗"), ("user", "肿了"),
                                       ("assistant", "可能是牙周炎，先吃布洛芬止痛，注意休息")]
    [problem] = read.problems
    assert (problem.file, problem.line) == (str(REMEDI), 6)
    assert "response" in problem.message and problem.message.endswith("session skipped")
    assert read.skipped == 1


def test_remedi_fixture_actions_per_doctor_turn():
    sessions, problems = remedi.read_annotated(REMEDI)
    assert [p.line for p in problems] == [6]
    assert [s.actions for s in sessions] == [
        [
            [Action(act="Inquire", slot="symptom", value="发热")],
            [Action(act="Inquire", slot="time"), Action(act="Recommend", slot="medicine", value="止咳糖浆"), Action(act="Chitchat")],
            [],
        ],
        [
            [Action(act="Inquire", slot="symptom")],
            [
                Action(act="Diagnosis", slot="disease", value="牙周炎"),
                Action(act="Chitchat"),
                Action(act="Recommend", slot="precaution", value="注意休息"),
                Action(act="Recommend", value="布洛芬 止痛"),
            ],
        ],
    ]


@pytest.mark.parametrize(("text", "expected"), [
    (" Inform time 康复时间 几个月  ", [Action(act="Inform", slot="time", value="康复时间 几个月")]),
    ("QuestionAnswering    ", [Action(act="QuestionAnswering")]),
    ("   ", []),
    ("  <|continue|> Other   Other    ", [Action(act="Other")]),
    ("Inquire symptom   <|continue|> Diagnosis disease 病毒感染", [Action(act="Inquire", slot="symptom"),
                                                                 Action(act="Diagnosis", slot="disease", value="病毒感染")]),
])
def test_parse_actions(text, expected):
    assert parse_actions(text) == expected


def test_remedi_context_that_does_not_continue_starts_a_new_session(tmp_path):
    lines = [
        remedi_line([], "头疼", "Inquire time", "多久了？"),
        remedi_line([("user", "头疼"), ("assistant", "别的话")], "两天", "Recommend medicine 布洛芬", "吃布洛芬"),
        remedi_line([("user", "头疼"), ("assistant", "别的话"), ("user", "两天"), ("assistant", "吃布洛芬")], "好的", "Chitchat", "不客气"),
    ]
    path = tmp_path / "r.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    sessions, problems = remedi.read_annotated(path)
    assert [(p.line, p.message) for p in problems] == [(2, "its context does not continue line 1; a new session starts here")]
    assert [s.session.session_id for s in sessions] == ["remedi-1", "remedi-2"]
    assert turns(sessions[0].session) == [("user", "头疼"), ("assistant", "多久了？")]
    assert turns(sessions[1].session) == [("user", "两天"), ("assistant", "吃布洛芬"), ("user", "好的"), ("assistant", "不客气")]
    assert sessions[1].actions == [[Action(act="Recommend", slot="medicine", value="布洛芬")], [Action(act="Chitchat")]]
    assert remedi.read(path).skipped == 0


def test_remedi_missing_tag_skips_its_session_only(tmp_path):
    first = remedi_line([], "头疼", "Inquire time", "多久了？")
    broken = remedi_line([("user", "头疼"), ("assistant", "多久了？")], "两天", "Other", "好").replace("<|endofaction|>", "")
    path = tmp_path / "r.txt"
    path.write_text("\n".join([first, broken, "", remedi_line([], "咳嗽", "Other", "多喝水")]), encoding="utf-8")
    read = remedi.read(path)
    assert [(p.line, p.message) for p in read.problems] == [(2, "no <|action|> … <|endofaction|>; session skipped")]
    assert [s.session_id for s in read.sessions] == ["remedi-4"]
    assert read.skipped == 1


def test_remedi_unusable_files_and_detect(tmp_path):
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(LogError, match="empty"):
        remedi.read(tmp_path / "empty.txt")
    (tmp_path / "other.txt").write_text("just some notes\n", encoding="utf-8")
    with pytest.raises(LogError, match="not a ReMeDi file"):
        remedi.read(tmp_path / "other.txt")
    assert remedi.detect(REMEDI)
    assert not remedi.detect(tmp_path / "other.txt") and not remedi.detect(MTS) and not remedi.detect(tmp_path)


def test_annotated_session_needs_one_action_list_per_doctor_turn():
    session = Session(session_id="s", messages=[Message(role="user", content="a"), Message(role="assistant", content="b")])
    assert AnnotatedSession(session=session, actions=[[]]).actions == [[]]
    with pytest.raises(ValidationError, match="2 action lists for 1 doctor messages"):
        AnnotatedSession(session=session, actions=[[], []])


# --- detection and dispatch ---------------------------------------------------------------------


def test_detect_format_and_read_corpus(tmp_path):
    log = tmp_path / "log.jsonl"
    log.write_text(json.dumps({"session_id": "s1", "messages": [{"role": "user", "content": "Cough."}]}) + "\n")
    assert set(FORMATS) == {"primock57", "mts-dialog", "remedi"}
    assert [detect_format(p) for p in (PRIMOCK, PRIMOCK / "transcripts", MTS, REMEDI, log)] == [
        "primock57", "primock57", "mts-dialog", "remedi", "log"]
    assert [s.session_id for s in read_corpus(PRIMOCK).sessions] == ["day1_consultation01"]
    assert [s.session_id for s in read_corpus(MTS).sessions] == ["0", "1", "3"]
    assert [s.session_id for s in read_corpus(REMEDI).sessions] == ["remedi-1", "remedi-8"]
    assert [s.session_id for s in read_corpus(log).sessions] == ["s1"]


def test_read_corpus_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(LogError, match="no such file or folder; supported: a PriMock57 folder"):
        read_corpus(tmp_path / "nowhere.csv")
    with pytest.raises(LogError, match="a folder, but not a PriMock57 one; supported"):
        read_corpus(tmp_path)
    (tmp_path / "notes.csv").write_text("a,b\n1,2\n")
    with pytest.raises(LogError, match="not a transcript CSV"):
        read_corpus(tmp_path / "notes.csv")


# --- the real corpora, when ../shared/data holds them ----------------------------------------------


def real(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (public data is read from ../shared/data)")
    return path


def test_real_mts_dialog_training_set():
    path = real(DATA / "mts-dialog" / "Main-Dataset" / "MTS-Dialog-TrainingSet.csv")
    assert detect_format(path) == "mts-dialog"
    read = mts_dialog.read(path)
    assert len(read.sessions) + read.skipped == 1201
    assert len(read.problems) == read.skipped
    assert len(read.sessions) >= 1190
    by_id = {s.session_id: s for s in read.sessions}
    # Row 297 (ID 295) holds two utterances on one line; ID 1156 has `Guest_family.` with a full stop.
    assert ("assistant", "This sounds like it is a migraine headache.") in turns(by_id["295"])
    assert ("user", "Hello. I'm his wife.") in turns(by_id["1156"])


def test_real_remedi_dev():
    path = real(DATA / "remedi" / "dev_human_annotation.txt")
    assert detect_format(path) == "remedi"
    sessions, problems = remedi.read_annotated(path)
    assert (len(sessions), problems) == (100, [])
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    assert sum(len(s.actions) for s in sessions) == len(lines) == 833  # one action list per doctor turn (line)
    assert sum(bool(actions) for s in sessions for actions in s.actions) >= 820
    assert {a.act for s in sessions for actions in s.actions for a in actions} <= set(remedi.ACTS)
    # Rebuilt from (patient, doctor) pairs, a session is also its last line's context + patient message + response.
    text = path.read_text(encoding="utf-8").split("\n")
    for annotated in sessions:
        first = int(annotated.session.session_id.removeprefix("remedi-"))
        after = next((n for n in range(first, len(text)) if not text[n].strip()), len(text))  # index of the blank after
        fields = remedi.fields(text[after - 1])
        assert isinstance(fields, dict)
        last = [("user", " ".join(fields["currentuser"].split())), ("assistant", " ".join(fields["response"].split()))]
        whole = remedi.context_turns(fields["context"]) + last
        assert turns(annotated.session) == whole


def test_real_primock57():
    path = real(DATA / "primock57")
    assert detect_format(path) == "primock57"
    read = primock57.read(path)
    assert (len(read.sessions), read.problems, read.skipped) == (57, [], 0)
    assert all({m.role for m in s.messages} == {"user", "assistant"} for s in read.sessions)
    assert sum(len(s.messages) for s in read.sessions) > 57 * 50
