"""The served log: bounded and rotating, read back whole (a write cut short by a kill skipped, a bad line named), and
the stratified draw a review sheet is made from."""

import json
from collections import Counter

import pytest

from calibrator.reward.log import GradingLog, LogLineError, log_files, read_log
from calibrator.reward.schema import Case, Graded, Target
from calibrator.reward.terms import Terms
from calibrator.reward.watch import stratified_sample


def graded(content: float, stop: float = 1.0) -> Graded:
    return Graded(candidate="c", terms=Terms(stop=stop, content=content, format=1.0), reward=stop * (1 + 2 * content) + 1)


def write(log: GradingLog, n: int, step_of=lambda i: i, content_of=lambda i: 0.0) -> None:
    for i in range(n):
        log.write([Case(context="patient: hi", target=Target(decision="continue", target_info=["a: b"]), candidate=f"Why {i}?",
                        step=step_of(i))], [graded(content_of(i))], "default")


def test_the_log_rotates_within_its_bound_and_reads_back_every_kept_entry_once(tmp_path):
    path = tmp_path / "graded.jsonl"
    log = GradingLog(path, "lm", max_bytes=4096, backups=2)
    write(log, 200)
    log.close()
    files = log_files(path)
    assert [f.name for f in files] == ["graded.jsonl.2", "graded.jsonl.1", "graded.jsonl"]
    assert all(f.stat().st_size < 4096 + 1024 for f in files)  # one entry past the bound at most
    entries = list(read_log(path))
    ids = [e.id for e in entries]
    assert len(ids) == len(set(ids)) and 0 < len(ids) < 200  # the oldest were dropped, none twice
    numbers = [int(i.rsplit("-", 1)[1]) for i in ids]
    assert numbers == list(range(201 - len(ids), 201))  # oldest first, the newest kept, none lost in between
    assert len(ids) == sum(len(f.read_text().splitlines()) for f in files)  # every kept file read, not the newest alone
    assert len(ids) > len(path.read_text().splitlines())


def test_a_line_cut_short_by_a_kill_is_skipped_and_a_bad_line_is_named(tmp_path):
    path = tmp_path / "graded.jsonl"
    log = GradingLog(path, "lm")
    write(log, 3)
    log.close()
    whole = path.read_text()
    path.write_text(whole + whole.splitlines()[0][:40])  # a kill mid-write: no newline after it
    assert len(list(read_log(path))) == 3
    lines = whole.splitlines()
    path.write_text("\n".join([lines[0], '{"id": "x"}', lines[2]]) + "\n")
    with pytest.raises(LogLineError, match=r"graded.jsonl, line 2: not a grading entry"):
        list(read_log(path))
    with pytest.raises(LogLineError, match="no such log"):
        list(read_log(tmp_path / "none.jsonl"))


def test_the_log_keeps_no_field_beyond_the_case_and_its_grading(tmp_path):
    path = tmp_path / "graded.jsonl"
    log = GradingLog(path, "similarity")
    write(log, 1)
    log.close()
    assert set(json.loads(path.read_text())) == {"id", "time", "step", "context", "target", "candidate", "terms", "reward",
                                                 "fusion", "judge"}


def test_the_review_draw_spreads_over_scores_and_training_steps(tmp_path):
    path = tmp_path / "graded.jsonl"
    log = GradingLog(path, "lm")
    # 300 gradings over steps 0-299, the judge's content 1 rare (1 in 10) and only early; 0 elsewhere
    write(log, 300, content_of=lambda i: 1.0 if i % 10 == 0 and i < 100 else 0.0)
    log.write([Case(context="x", target=Target(decision="continue", target_info=["a: b"]), candidate="<stop />", step=5),
               Case(context="x", target=Target(decision="stop"), candidate="<stop />", step=6),
               Case(context="x", target=Target(decision="continue", target_info=["a: b"]), candidate="Why?", step=7)],
              [graded(0.0, stop=0.0), graded(1.0),  # a wrong decision, a right stop: scored without the judge, never drawn
               Graded(candidate="Why?", terms=Terms(stop=0.0, content=0.0, format=0.0, grader_failed=True), reward=0.0)],
              "default")  # and a grading that failed
    log.close()
    entries = list(read_log(path))
    picked = stratified_sample(entries, 30, seed=1)
    assert len(picked) == 30 and len({e.id for e in picked}) == 30
    assert all(e.target.decision == "continue" and e.terms.stop == 1.0 and not e.terms.grader_failed for e in picked)
    # 4 strata (content 0 in each third of training, content 1 early): 7 or 8 rows each; a random draw would give ~1
    assert sum(e.terms.content == 1.0 for e in picked) == 7
    bands = Counter(e.step // 100 for e in picked)
    assert set(bands) == {0, 1, 2} and min(bands.values()) >= 5
    assert stratified_sample(entries, 30, seed=1) == picked and stratified_sample(entries, 30, seed=2) != picked
    assert len(stratified_sample(entries, 1000)) == 300  # every judged grading, no more
