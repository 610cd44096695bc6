"""`calibrator suggest`: the rows worth labelling next, ranked by judge-floor disagreement, the floors' uncertainty and
thin coverage, written as a sheet `goldset add` takes; and the CLI's refusals."""

import csv

import openpyxl
import pytest

from calibrator.components.grader import GRADER
from calibrator.gold.goldset import load_goldset
from calibrator.reward.log import GradingLog
from calibrator.reward.schema import Case, Graded, Target
from calibrator.reward.terms import Terms
from calibrator.reward.suggest import Candidate, from_log, rank
from support.files import gold_slice
from support.training import small_samples


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
def test_a_judge_that_disagrees_with_the_floor_and_a_field_the_gold_set_lacks_rank_first(tmp_path):
    gold = load_goldset(gold_slice("grader", tmp_path / "gold.csv", 60, spread=True), GRADER.row_model)
    floor = next(f for f in GRADER.floors() if f.name == "similarity")
    floor.fit(gold.split("train"))
    rows = gold.split("val")[:6]
    by_floor = [p.content_score for p in floor.predict(rows)]
    agreeing = [Candidate(context=r.context, target_info=r.target_info, candidate=r.candidate, judge=f, source=f"a{i}")
                for i, (r, f) in enumerate(zip(rows, by_floor))]
    disagreeing = [c.model_copy(update={"judge": 1.0 if c.judge == 0.0 else 0.0, "source": f"d{i}"}) for i, c in enumerate(agreeing)]
    ranked = rank(agreeing + disagreeing, gold)
    assert all(s.signals["disagreement"] >= 0.5 for s in ranked[:6]) and {s.row.source[0] for s in ranked[:6]} == {"d"}
    assert all(0 <= v <= 1 for s in ranked for v in s.signals.values())
    same = agreeing[0]
    unseen = same.model_copy(update={"target_info": ["zodiac sign: virgo"], "source": "new"})
    both = rank([same, unseen], gold)
    assert [s.row.source for s in both] == ["new", "a0"]
    assert both[0].signals["thin_field"] == 1.0 and both[1].signals["thin_field"] < 1.0
    assert all(s.score == pytest.approx(sum(s.signals.values())) for s in ranked + both)
    assert [s.score for s in ranked] == sorted((s.score for s in ranked), reverse=True)


def served_log(path, gold_rows, judge_of):
    log = GradingLog(path, "lm")
    for i, r in enumerate(gold_rows):
        content = judge_of(i)
        log.write([Case(context=r.context, target=Target(decision="continue", target_info=r.target_info),
                        candidate=r.candidate + f" (take {i})", step=i)],
                  [Graded(candidate=r.candidate, terms=Terms(stop=1.0, content=content, format=1.0), reward=1 + 2 * content + 1)],
                  "default")
    log.close()
    return path


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
def test_suggest_from_a_served_log_writes_a_sheet_goldset_add_takes(tmp_path, cli):
    goldset = gold_slice("grader", tmp_path / "gold.csv", 40, spread=True)
    rows = load_goldset(goldset, GRADER.row_model).rows
    log = served_log(tmp_path / "graded.jsonl", rows[:25], lambda i: [0.0, 0.5, 1.0][i % 3])
    sheet = tmp_path / "suggested.csv"
    done = cli.calibrator("suggest", "--from", log, "--n", 8, "-o", sheet, "--goldset", goldset)
    assert done.code == 0, done.err
    assert "wrote 8 rows" in done.out and "ranked from 25 candidates" in done.out
    written = list(csv.DictReader(sheet.open()))
    assert len(written) == 8 and all(r["id"].startswith("suggest-") and r["content_score"] == "" for r in written)
    top = [s.row.source for s in rank(from_log(log), load_goldset(goldset, GRADER.row_model))][:8]
    assert [r["source"] for r in written] == top  # the ranking's first rows, in its order
    for r in written:
        r["content_score"] = "0.5"
    with sheet.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(written[0]))
        writer.writeheader()
        writer.writerows(written)
    added = cli.calibrator("goldset", "add", sheet, "--component", "grader", "--goldset", goldset)
    assert added.code == 0, added.err
    assert len(load_goldset(goldset, GRADER.row_model).rows) == len(rows) + 8
    again = cli.calibrator("suggest", "--from", log, "--n", 30, "-o", tmp_path / "again.csv", "--goldset", goldset)
    assert again.code == 0 and "wrote 17 rows" in again.out  # the 8 now labelled are not suggested again


@pytest.mark.slow  # MiniLM, the embedder (torch and sentence-transformers: ~10 s to import)
def test_suggest_reads_a_samples_file_and_refuses_what_it_cannot_use(tmp_path, cli):
    goldset = gold_slice("grader", tmp_path / "gold.csv", 40, spread=True)
    samples = small_samples(tmp_path / "samples.jsonl")
    done = cli.calibrator("suggest", "--from", samples, "--n", 5, "-o", tmp_path / "s.xlsx", "--goldset", goldset)
    assert done.code == 0, done.err
    assert "wrote 3 rows" in done.out and "ranked from 18 candidates" in done.out  # 3 distinct cases among 18 continue samples
    sheet = openpyxl.load_workbook(tmp_path / "s.xlsx")["review"]
    assert sheet.max_row == 4 and {sheet.cell(row=i, column=4).value for i in range(2, 5)} == {
        "Who is it for?", "How long have you had it?", "Any other medicines?"}
    missing = cli.calibrator("suggest", "--from", tmp_path / "none.jsonl", "--goldset", goldset)
    assert missing.code == 2 and "--from" in missing.err and "no such file" in missing.err
    zero = cli.calibrator("suggest", "--from", samples, "--n", 0, "--goldset", goldset)
    assert zero.code == 2 and "--n must be at least 1" in zero.err
    rows = load_goldset(goldset, GRADER.row_model).rows
    unjudged = GradingLog(tmp_path / "unjudged.jsonl", "lm")
    for stop, failed in ((0.0, False), (0.0, True)):  # a wrong decision, a grading that failed: nothing the judge said
        unjudged.write([Case(context=rows[0].context, target=Target(decision="continue", target_info=rows[0].target_info),
                             candidate="<stop />")],
                       [Graded(candidate="<stop />", terms=Terms(stop=stop, content=0.0, format=0.0, grader_failed=failed), reward=0.0)],
                       "default")
    unjudged.close()
    empty = cli.calibrator("suggest", "--from", tmp_path / "unjudged.jsonl", "--goldset", goldset, "-o", tmp_path / "e.csv")
    assert empty.code == 2 and "no row to suggest" in empty.err
