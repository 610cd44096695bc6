"""The judge checked on the policy's own outputs: `train eval --review N` exports judged rollouts blind, the labels come
back through `goldset add`, and the next eval corrects its content figures by them (prediction-powered inference) and
shows the judge's agreement on the policy's outputs beside its agreement on the seed gold set."""

import csv
import json
import shutil

import pytest

from calibrator.agreement.ppi import corrected_difference, corrected_rate
from support import ROOT
from support.training import sample
from train.policy_review import HIDDEN, correct, export_review, read_labels

ASK, STOP = "How long has it lasted?", "<stop />"


def score(sid: str, side: str, expert: str, predicted: str, content: float, graded: bool = True, failed: bool = False) -> dict:
    return {"id": sid, "session_id": sid.split("_")[0], "expert": expert, "predicted": predicted,
            "completion": f"{side} {sid} {ASK if predicted == 'continue' else STOP}", "reward": 0.0,
            "terms": {"stop": 1.0, "content": content, "format": 1.0, "graded": graded, "grader_failed": failed}}


def result_and_samples(n: int = 12):
    """n continue samples per side, the judge's content cycling 1, 0.5, 0; plus a wrong decision, a grader failure and
    a stop on each side, none of which the judge graded."""
    samples = [sample(f"s{i}", 0, "continue", context=f"I have a cough, day {i}") for i in range(n)]
    samples += [sample("w", 0, "continue"), sample("f", 0, "continue"), sample("t", 0, "stop")]
    scores = {side: [score(f"s{i}_0", side, "continue", "continue", (1.0, 0.5, 0.0)[(i + k) % 3]) for i in range(n)]
              + [score("w_0", side, "continue", "stop", 0.0), score("f_0", side, "continue", "continue", 0.0, failed=True),
                 score("t_0", side, "stop", "stop", 1.0)] for k, side in enumerate(("base", "trained"))}
    return {"scores": scores, "sampled": None}, samples


def read_sheet(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_the_export_is_a_blind_random_sample_of_judged_rollouts_only(tmp_path):
    result, samples = result_and_samples()
    index = export_review(tmp_path, result, samples, 10, tmp_path / "review.csv", seed=3)
    rows = read_sheet(tmp_path / "review.csv")
    assert len(rows) == len(index.rows) == 10
    header = list(rows[0])
    assert header[-len(HIDDEN):] == list(HIDDEN)  # the side is last, hidden in the XLSX
    assert all(r["content_score"] == "" and r["id"].startswith("policy-") for r in rows)
    assert {r["rollout"].split("_")[0] for r in rows} <= {f"s{i}" for i in range(12)}  # never w, f or t
    assert {r["side"] for r in rows} == {"base", "trained"}
    assert [r["side"] for r in rows] != sorted(r["side"] for r in rows)  # shuffled, not side by side
    again = export_review(tmp_path, result, samples, 10, tmp_path / "again.csv", seed=3)
    assert set(again.rows) == set(index.rows)  # the same rollouts keep their ids: one gold row each
    export_review(tmp_path / "x", result, samples, 4, tmp_path / "review.xlsx", seed=3)
    from openpyxl import load_workbook
    from openpyxl.utils import get_column_letter

    sheet = load_workbook(tmp_path / "review.xlsx")["review"]
    header = [c.value for c in sheet[1]]
    hidden = {get_column_letter(i) for i in range(1, len(header) + 1)
              if sheet.column_dimensions[get_column_letter(i)].hidden}
    assert hidden == {get_column_letter(header.index(name) + 1) for name in HIDDEN}  # side, judge's score, rollout: no more


def test_a_rollout_that_wrote_only_whitespace_is_never_drawn(tmp_path):
    """A policy can answer "\\n\\n": the judge scores it, but it cannot be a gold row (no candidate turn), so the draw
    leaves it out instead of failing the eval (a tiny random-weight policy did exactly this)."""
    result, samples = result_and_samples(4)
    blank = {r["id"] for r in result["scores"]["base"][:2]}
    for r in result["scores"]["base"][:2]:
        r["completion"] = "\n\n \n"
    index = export_review(tmp_path, result, samples, 20, tmp_path / "review.csv")
    rows = read_sheet(tmp_path / "review.csv")
    assert len(rows) == len(index.rows) == 6  # 4 + 4 judged continue rollouts, less the 2 blank ones
    assert not {r["rollout"] for r in rows if r["side"] == "base"} & blank


def test_labels_come_back_through_goldset_add_and_correct_the_judges_figures(tmp_path, cli):
    result, samples = result_and_samples()
    run = tmp_path / "run"
    run.mkdir()
    index = export_review(run, result, samples, 14, tmp_path / "review.csv", seed=1)
    rows = read_sheet(tmp_path / "review.csv")
    # people agree with the judge on base; on the trained side they mark its 1s down to 0.5 and one 0 up to 1
    flips = {"1": "0.5", "0": "1"}
    first_zero = next(r["id"] for r in rows if r["side"] == "trained" and r["judge_content_score"] == "0")
    truth = {r["id"]: (flips["1"] if r["side"] == "trained" and r["judge_content_score"] == "1" else
                       flips["0"] if r["id"] == first_zero else r["judge_content_score"]) for r in rows}
    for r in rows:
        r["adjudicated_label"] = truth[r["id"]]
    with open(tmp_path / "labelled.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    goldset = tmp_path / "grader.csv"
    shutil.copy(ROOT / "goldsets" / "grader.csv", goldset)
    added = cli.calibrator("goldset", "add", tmp_path / "labelled.csv", "--component", "grader", "--goldset", goldset)
    assert added.code == 0, added.err
    labels = read_labels(goldset)
    assert labels == {index.rows[i].case: float(truth[i]) for i in truth} | {i: float(truth[i]) for i in truth}

    correction = correct(run, result, labels, seed_qwk=0.16)
    figures = correction.figures()
    by_side = {side: [r for r in rows if r["side"] == side] for side in ("base", "trained")}
    assert correction.labelled == {side: len(by_side[side]) for side in by_side} and min(correction.labelled.values()) >= 2
    share = 12 / 14  # judged continue rollouts of all continue rollouts (the wrong decision and the failure are not)
    for side, mine in by_side.items():
        judge = {s["id"]: s["terms"]["content"] for s in result["scores"][side][:12]}  # every judged rollout
        reviewed = {r["rollout"] for r in mine}
        unlabelled = [v for rollout, v in judge.items() if rollout not in reviewed]
        f_lab = [judge[r["rollout"]] for r in mine]
        human = [float(truth[r["id"]]) for r in mine]
        win = corrected_rate([float(v == 1.0) for v in unlabelled], [float(v == 1.0) for v in f_lab],
                             [float(h == 1.0) for h in human])
        mean = corrected_rate(unlabelled, f_lab, human)
        for metric, expected in (("good_question_rate", win), ("mean_content", mean)):
            got = figures[side][metric]
            assert got["judge"] == pytest.approx(share * expected.judge)
            assert got["corrected"] == pytest.approx(share * expected.corrected)
            assert got["ci"] == pytest.approx([share * expected.ci[0], share * expected.ci[1]])
    assert figures["trained"]["good_question_rate"]["corrected"] < figures["trained"]["good_question_rate"]["judge"]
    disagree = sum(r["judge_content_score"] != truth[r["id"]] for r in rows)
    assert disagree >= 2 and correction.policy_agreement == pytest.approx(1 - disagree / len(rows))
    assert correction.seed_qwk == 0.16
    differences = correction.differences()
    for metric in ("good_question_rate", "mean_content"):
        expected = corrected_difference(getattr(correction.sides["base"], metric), getattr(correction.sides["trained"], metric),
                                        share, share)
        assert differences[metric]["delta"] == pytest.approx(figures["trained"][metric]["corrected"]
                                                             - figures["base"][metric]["corrected"])
        assert differences[metric]["ci"] == pytest.approx(list(expected.ci))
        assert differences[metric]["verdict"] == "too few labels"  # 7 labels a side: no normal interval to trust


def test_the_corrected_difference_says_improved_only_when_its_interval_clears_zero(tmp_path):
    """Sixty rollouts a side; trained says <stop /> on ten of them, so the judged shares differ (60 and 50); 100 of the
    110 judged rollouts labelled, humans agreeing with the judge: the verdict follows the interval, not the sign."""
    def result(base_good: int, trained_good: int):
        samples = [sample(f"s{i}", 0, "continue") for i in range(60)]
        good = {"base": base_good, "trained": trained_good}
        wrong = {"base": 0, "trained": 10}  # trained says <stop /> on its last 10: judged share 50/60
        scores = {side: [score(f"s{i}_0", side, "continue", "stop" if i >= 60 - wrong[side] else "continue",
                               1.0 if i < good[side] else 0.0) for i in range(60)] for side in ("base", "trained")}
        return {"scores": scores, "sampled": None}, samples

    cases = ((0, 30, "improved"), (0, 2, "no significant change"), (30, 0, "worse"))
    for base_good, trained_good, verdict in cases:
        run = tmp_path / f"run-{base_good}-{trained_good}"
        run.mkdir()
        got, samples = result(base_good, trained_good)
        index = export_review(run, got, samples, 100, run / "review.csv", seed=0)
        labels = {gid: r.judge_content for gid, r in index.rows.items()}
        correction = correct(run, got, labels, None)
        assert correction.sides["base"].judged_share == 1.0 and correction.sides["trained"].judged_share == 50 / 60
        difference = correction.differences()["good_question_rate"]
        assert difference["verdict"] == verdict, (base_good, trained_good, difference)
        assert difference["delta"] == pytest.approx(trained_good / 60 - base_good / 60, abs=0.02)  # PPI on 10 unlabelled


def test_without_review_json_or_labels_nothing_is_corrected(tmp_path):
    result, samples = result_and_samples()
    assert correct(tmp_path, result, {}, None) is None
    export_review(tmp_path, result, samples, 4, tmp_path / "review.csv")
    assert correct(tmp_path, result, {}, None) is None  # exported, not labelled yet


def test_an_export_from_sampled_rollouts_does_not_mix_with_greedy_ones(tmp_path):
    result, samples = result_and_samples()
    export_review(tmp_path, result, samples, 4, tmp_path / "review.csv")
    sampled = result | {"sampled": {"scores": result["scores"]}}
    with pytest.raises(ValueError, match="drawn from the greedy rollouts, this eval scored sampled ones"):
        export_review(tmp_path, sampled, samples, 4, tmp_path / "review2.csv")


@pytest.mark.slow
def test_train_eval_review_round_trip_on_the_real_policy(tmp_path, stub, cli, policy_model):
    """`train eval --review` on the embedded policy with the stub as judge, the sheet labelled and added, then eval again:
    eval.json and the page carry the corrected figures; before the labels, the output says the figures are uncorrected.
    The real policy, not the tiny random one: that one writes only whitespace, which is never drawn for review."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "final").symlink_to(policy_model, target_is_directory=True)
    goldset = tmp_path / "grader.csv"
    shutil.copy(ROOT / "goldsets" / "grader.csv", goldset)
    (run / "config.json").write_text(json.dumps({
        "model": str(policy_model), "grader_prompt": str(ROOT / "prompts" / "grader.yaml"), "allow_uncalibrated": True,
        "grader_lm": f"openai-compatible:stub@{stub.url}", "cache_dir": str(tmp_path / "cache"), "out": str(run)}))
    (run / "run.json").write_text("{}")
    held = [sample(f"s{i}", 0, "continue", context=f"I have had a cough for {i + 2} days.") for i in range(3)]
    (run / "heldout.jsonl").write_text("".join(s.model_dump_json() + "\n" for s in held))
    first = cli.train("eval", "--model", run, "--rollouts", "0", "--max-new-tokens", "8", "--review", "6",
                      "--review-out", tmp_path / "review.csv", "--goldset", goldset)
    assert first.code == 0, first.err
    assert "content figures are the judge's, uncorrected" in first.out and "review: wrote" in first.out
    assert "uncorrected: no rollout of this run has been labelled" in (run / "eval.html").read_text()
    rows = read_sheet(tmp_path / "review.csv")
    assert len(rows) >= 4
    for i, r in enumerate(rows):  # labels that vary, so the correction is not forced by a constant
        r["adjudicated_label"] = ("1", "0", "0.5")[i % 3]
    with open(tmp_path / "labelled.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert cli.calibrator("goldset", "add", tmp_path / "labelled.csv", "--component", "grader", "--goldset", goldset).code == 0
    second = cli.train("eval", "--model", run, "--rollouts", "0", "--max-new-tokens", "8", "--goldset", goldset)
    assert second.code == 0, second.err
    result = json.loads((run / "eval.json").read_text())
    corrected = result["corrected"]
    # base and trained are one model here, so they may write the same turn; each row's own label counts for its rollout
    # (a row dropped by `goldset add` as a duplicate had the same case and label as one it kept)
    assert corrected["labelled"]["base"] + corrected["labelled"]["trained"] == len(rows)
    for side in ("base", "trained"):
        mine = [r for r in rows if r["side"] == side]
        judged = {s["id"]: s["terms"]["content"] for s in result["scores"][side]
                  if s["predicted"] == "continue" and not s["terms"]["grader_failed"]}
        human = [float(r["adjudicated_label"]) for r in mine]
        unlabelled = [v for rollout, v in judged.items() if rollout not in {r["rollout"] for r in mine}]
        expected = corrected_rate(unlabelled, [judged[r["rollout"]] for r in mine], human)
        share = len(judged) / len(result["scores"][side])
        assert corrected["figures"][side]["mean_content"]["corrected"] == pytest.approx(share * expected.corrected)
    assert "corrected by" in second.out and "judge agreement on the policy's outputs" in second.out
    page = (run / "eval.html").read_text()
    assert "Content figures corrected by human labels" in page
    assert page.count("<td>trained − base</td>") == 2 and "too few labels" in page  # both metrics' differences, under 30 labels
    assert "trained - base, both corrected" in second.out
