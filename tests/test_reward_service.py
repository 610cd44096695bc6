"""The calibrated judge outside train/: `calibrator serve` answered by real HTTP clients (OpenRLHF's protocol and the
typed endpoint), the same rewards in-process (TRL's and verl's call shapes), the gate travelling with the judge, bad
requests answered 4xx naming the field while the server goes on, and the served log reviewed back into a drift figure."""

import json
import re
import signal
import time
from pathlib import Path

import pytest
import requests
from sklearn.metrics import cohen_kappa_score

from calibrator.components.grader import GRADER, GraderRow
from calibrator.gold.goldset import load_goldset
from calibrator.prompt import Calibration, load_prompt, save_prompt
from calibrator.reward.functions import compute_score, load_reward
from calibrator.reward.gate import GateError
from calibrator.reward.log import GradingLog, read_log
from calibrator.reward.schema import Case, Target
from support import ROOT
from support.cli import Started
from support.files import gold_slice

GOOD_TEST = {"qwk": 0.7, "qwk_ci": [0.5, 0.85], "accuracy": 0.8, "n": 24}
BELOW_TEST = {"qwk": 0.2, "qwk_ci": [-0.1, 0.45], "accuracy": 0.4, "n": 24}
CONTEXT = "patient: I have had a cough for a while.\npharmacist: Any fever with it?\npatient: No."
PROMPT = "<|im_start|>user\nAsk the next question or stop.<|im_end|>\n<|im_start|>assistant\n"
CASES = [  # (response, decision, items): continue turns the judge grades, a right and a wrong stop, a wrong continue
    ("How long have you had the cough?", "continue", ["duration: three weeks"]),
    ("Are you taking any medicines for it? Which ones?", "continue", ["current medication: none"]),
    ("Do you smoke?", "continue", ["smoking: no"]),
    ("<stop />", "stop", []),
    ("<stop />", "continue", ["duration: three weeks"]),
    ("Anything else?", "stop", []),
    ("Is the cough dry or chesty?", "continue", ["cough type: dry"]),
    ("Have you had a cold recently?", "continue", ["recent illness: cold last month", "age group: adult"]),
]


def calibrated(tmp_path: Path, lm: str, test: dict = GOOD_TEST) -> Path:
    goldset = gold_slice("grader", tmp_path / "seed.csv", 40, spread=True)
    prompt = load_prompt(ROOT / "prompts/grader.yaml").model_copy(update={"calibration": Calibration(
        run_id="run-1", created="2026-12-07T00:00:00Z", optimizer="auto:knn", lm=lm, seed=0, goldset_path=str(goldset),
        goldset_sha256=load_goldset(goldset, GraderRow).sha256, val={"qwk": 0.7}, test=test, verdict="improved")})
    path = tmp_path / f"grader.{test['qwk']}.yaml"
    save_prompt(prompt, path)
    return path


def label(decision: str, items: list[str], context: bool = True) -> str:
    return json.dumps({"decision": decision, "target_info": items} | ({"context": CONTEXT} if context else {}))


def openrlhf_body(cases=CASES) -> dict:
    return {"query": [PROMPT + response + "<|im_end|>" for response, _, _ in cases], "prompts": [PROMPT] * len(cases),
            "labels": [label(d, items) for _, d, items in cases]}


def in_process(prompt: Path, lm: str, cache: Path, cases=CASES) -> list[float]:
    with load_reward(prompt, lm, cache_dir=cache) as reward:
        return [g.reward for g in reward.score([Case(context=CONTEXT, target=Target(decision=d, target_info=items), candidate=r)
                                                for r, d, items in cases])]


class Served:
    def __init__(self, tmp_path: Path, *args: object):
        self.log = tmp_path / "served" / "grader.jsonl"
        self.child = Started("calibrator", "serve", "--port", 0, "--log", self.log, "--no-progress", *args, logs=tmp_path / "logs")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and self.child.proc.poll() is None:
            found = re.search(r"serving on (http://\S+) ", self.child.stdout.read_text())
            if found:
                self.url = found.group(1)
                return
            time.sleep(0.1)
        self.child.proc.kill()
        raise AssertionError(f"serve did not start: {self.child.result()}")

    def stop(self) -> None:
        if self.child.proc.poll() is None:
            self.child.proc.send_signal(signal.SIGTERM)
            self.child.proc.wait(timeout=60)


@pytest.fixture
def served(tmp_path, stub):
    lm = f"openai-compatible:stub@{stub.url}"
    prompt = calibrated(tmp_path, lm)
    server = Served(tmp_path, "--prompt", prompt, "--lm", lm, "--cache-dir", tmp_path / "cache", "--max-body-mb", 0.05)
    server.prompt, server.lm = prompt, lm
    yield server
    server.stop()


@pytest.mark.slow
def test_openrlhf_client_gets_the_in_process_rewards_and_every_grading_is_logged_once(served, tmp_path):
    body = openrlhf_body()
    answer = requests.post(f"{served.url}/get_reward", json=body, headers={"Authorization": "Bearer sk-secret-123"}, timeout=60)
    assert answer.status_code == 200, answer.text
    got = answer.json()
    expected = in_process(served.prompt, served.lm, tmp_path / "other-cache")  # its own cache: graded again, not read back
    assert got["rewards"] == expected and got["scores"] == expected
    assert got["rewards"][3] == 4.0 and got["rewards"][4] == 0.0 and got["rewards"][5] == 0.0  # right stop; wrong decisions
    assert len({r for r, (_, d, _) in zip(got["rewards"], CASES) if d == "continue" and r > 0}) > 1  # the judge's scores vary
    assert got["extra_logs"]["stop"] == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0] and got["extra_logs"]["content"][3] == 1.0
    assert set(got["extra_logs"]) == {"stop", "content", "format", "grader_failed"}
    typed = requests.post(f"{served.url}/grade", json={"context": [{"role": "user", "content": "I have had a cough for a while."},
                                                                  {"role": "assistant", "content": "Any fever with it?"},
                                                                  {"role": "user", "content": "No."}],
                                                      "target": {"decision": "continue", "target_info": "duration: three weeks"},
                                                      "candidates": [CASES[0][0], "<stop />"]}, timeout=60)
    assert typed.status_code == 200, typed.text
    graded = typed.json()["graded"]
    assert [g["reward"] for g in graded] == [expected[0], 0.0] and typed.json()["judge"] == "lm"
    entries = list(read_log(served.log))
    assert len(entries) == len(CASES) + 2 and len({e.id for e in entries}) == len(entries)
    assert [e.reward for e in entries] == expected + [expected[0], 0.0]
    served.stop()
    for text in (served.log.read_text(), served.child.stdout.read_text(), served.child.stderr.read_text()):
        assert "sk-secret" not in text and "Authorization" not in text


@pytest.mark.slow
def test_bad_requests_are_answered_4xx_naming_the_field_and_the_server_goes_on(served):
    good = openrlhf_body(CASES[:2])
    bad = {
        "malformed JSON": (b'{"query": [', 400, "body"),
        "missing labels": ({k: v for k, v in good.items() if k != "labels"}, 422, "labels"),
        "missing query": ({k: v for k, v in good.items() if k != "query"}, 422, "query"),
        "mistyped query item": (good | {"query": [good["query"][0], 7]}, 422, "query[1]"),
        "query not a list": (good | {"query": "text"}, 422, "query"),
        "empty lists": ({"query": [], "prompts": [], "labels": []}, 422, "query"),
        "unequal lengths": (good | {"labels": good["labels"][:1]}, 422, "labels"),
        "label not JSON": (good | {"labels": [good["labels"][0], "{oops"]}, 422, "labels[1]"),
        "bad decision": (good | {"labels": [good["labels"][0], label("maybe", [])]}, 422, "labels[1].decision"),
        "prompt not in query": (good | {"prompts": [PROMPT, "another prompt"]}, 422, "query[1]"),
        "body not an object": ([1, 2], 422, "body"),
        "oversized body": ({"query": ["x" * 60_000], "prompts": [""], "labels": [label("stop", [])]}, 413, "body"),
    }
    for name, (body, status, field) in bad.items():
        kwargs = {"data": body} if isinstance(body, bytes) else {"json": body}
        answer = requests.post(f"{served.url}/get_reward", timeout=30, **kwargs)
        assert (answer.status_code, answer.json()["field"]) == (status, field), (name, answer.text)
        assert field in answer.json()["error"] or field == "body", name
    typed_bad = {
        "no target": ({"context": "patient: hi", "candidates": ["Why?"]}, "target"),
        "no candidates": ({"context": "patient: hi", "target": {"decision": "stop"}, "candidates": []}, "candidates"),
        "candidate not text": ({"context": "patient: hi", "target": {"decision": "stop"}, "candidates": ["a", 3]}, "candidates[1]"),
        "unknown role": ({"context": [{"role": "doctor", "content": "x"}], "target": {"decision": "stop"}, "candidates": ["a"]},
                         "context"),
    }
    for name, (body, field) in typed_bad.items():
        answer = requests.post(f"{served.url}/grade", json=body, timeout=30)
        assert answer.status_code == 422 and answer.json()["field"].startswith(field), (name, answer.text)
    assert requests.post(f"{served.url}/get_reward", json=good, timeout=60).status_code == 200
    assert requests.get(f"{served.url}/health", timeout=30).json()["status"] == "ok"
    assert len(list(read_log(served.log))) == 2  # only the good request was graded


@pytest.mark.slow
def test_health_and_judge_give_the_calibration_record_and_the_gate(served):
    health = requests.get(f"{served.url}/health", timeout=30).json()
    assert health["status"] == "ok" and health["gate"] == "passed" and health["judge"] == "lm" and health["warnings"] == []
    judge = requests.get(f"{served.url}/judge", timeout=30).json()
    assert judge["card"]["lm"] == served.lm and judge["card"]["heldout"] == {"qwk": 0.7, "qwk_ci": [0.5, 0.85], "n": 24}
    assert judge["card"]["calibration_run"] == "run-1" and judge["fusion"] == "default"
    assert {c["check"]: c["passed"] for c in judge["gate"]["checks"]} == {
        "heldout_qwk_ci_low": True, "heldout_rows": True, "goldset_version": True, "grader_lm": True}


def test_the_gate_travels_with_the_judge(tmp_path, cli):
    lm = "openai-compatible:m@http://127.0.0.1:9"  # never reached: a refused judge opens no backend
    prompt = calibrated(tmp_path, lm, BELOW_TEST)
    refused = cli.calibrator("serve", "--prompt", prompt, "--lm", lm, "--check", "--cache-dir", tmp_path / "cache")
    assert refused.code == 2
    assert "held-out qwk 95% CI lower bound -0.10 is under --min-qwk 0.4" in refused.err
    assert "or pass --allow-below-gate to serve with it anyway (recorded)" in refused.err
    with pytest.raises(GateError, match=r"lower bound -0.10 is under min_qwk 0.4 .* pass allow_below_gate=True to load the reward with it anyway"):
        load_reward(prompt, lm, cache_dir=tmp_path / "cache")
    with pytest.raises(GateError, match=r"calibrated on LM .* but the reward grades with local: .* load the reward with lm="):
        load_reward(calibrated(tmp_path, "openai:gpt-4o"), "local", cache_dir=tmp_path / "cache")
    allowed = cli.calibrator("serve", "--prompt", prompt, "--lm", lm, "--check", "--allow-below-gate", "--cache-dir", tmp_path / "cache")
    assert allowed.code == 0, allowed.err
    assert "the judge does not pass the gate and is served anyway: heldout_qwk_ci_low -0.1 vs 0.4 waived by allow_below_gate" in allowed.err
    assert json.loads(allowed.out[allowed.out.index("{"):])["gate"]["overrides"] == ["allow_below_gate"]


@pytest.mark.slow
def test_a_judge_served_below_the_gate_says_so_in_health(tmp_path, stub):
    lm = f"openai-compatible:stub@{stub.url}"
    server = Served(tmp_path, "--prompt", calibrated(tmp_path, lm, BELOW_TEST), "--lm", lm, "--allow-below-gate",
                    "--cache-dir", tmp_path / "cache")
    try:
        health = requests.get(f"{server.url}/health", timeout=30).json()
        assert health["status"] == "warning" and health["gate"] == "allowed below the gate"
        assert any("waived by allow_below_gate" in w for w in health["warnings"])
    finally:
        server.stop()


def test_verl_calls_compute_score_as_its_reward_manager_does(tmp_path, stub):
    """verl is not installed here (it pins another transformers and pulls ray); its NaiveRewardManager calls the custom
    function with keyword arguments data_source, solution_str, ground_truth, extra_info, plus the config's reward_kwargs."""
    lm = f"openai-compatible:stub@{stub.url}"
    prompt = calibrated(tmp_path, lm)
    expected = in_process(prompt, lm, tmp_path / "cache-a")
    kwargs = {"grader_prompt": str(prompt), "lm": lm, "cache_dir": str(tmp_path / "cache-b")}
    got = [compute_score(data_source="learn_to_ask", solution_str=response + "<|im_end|>",
                         ground_truth={"decision": d, "target_info": items} if i % 2 else json.dumps({"decision": d, "target_info": items}),
                         extra_info={"context": CONTEXT, "index": i}, **kwargs) for i, (response, d, items) in enumerate(CASES)]
    assert [g["score"] for g in got] == expected
    assert all(set(g) == {"score", "stop", "content", "format", "grader_failed"} for g in got)
    with pytest.raises(ValueError, match="ground_truth: not JSON"):
        compute_score(data_source="x", solution_str="Why?", ground_truth="{", extra_info={}, **kwargs)


@pytest.mark.slow
def test_the_review_loop_from_a_served_log_to_the_drift_figure(tmp_path, stub, cli):
    lm = f"openai-compatible:stub@{stub.url}"
    prompt = calibrated(tmp_path, lm)
    server = Served(tmp_path, "--prompt", prompt, "--lm", lm, "--cache-dir", tmp_path / "cache")
    try:
        for step in range(6):
            cases = [(f"{response} (turn {step})", d, items) for response, d, items in CASES]
            body = {"context": CONTEXT, "target": {"decision": "continue", "target_info": ["duration: three weeks"]},
                    "candidates": [c for c, _, _ in cases], "step": step}
            assert requests.post(f"{server.url}/grade", json=body, timeout=60).status_code == 200
    finally:
        server.stop()
    entries = list(read_log(server.log))
    judged = [e for e in entries if e.terms.graded and e.terms.stop == 1.0 and not e.terms.grader_failed]
    sheet = tmp_path / "served-review.csv"
    done = cli.calibrator("review", "--graded", server.log, "--n", 20, "-o", sheet)
    assert done.code == 0, done.err
    import csv

    rows = list(csv.DictReader(sheet.open()))
    assert len(rows) == 20 and all(r["id"].startswith("policy-") for r in rows)
    by_id = {e.id: e for e in judged}
    picked = [by_id[r["graded_id"]] for r in rows]
    assert {e.step for e in picked} >= {0, 5} and len({e.terms.content for e in picked}) > 1  # spread over steps and scores
    for r in rows:  # a person's labels: here, the opposite of the judge's where it said 1
        r["adjudicated_label"] = "0" if r["judge_content_score"] == "1" else "1"
    with sheet.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    policy_gold = tmp_path / "policy-gold.csv"
    added = cli.calibrator("goldset", "add", sheet, "--component", "grader", "--goldset", policy_gold)
    assert added.code == 0, added.err
    before = stub.requests
    checked = cli.calibrator("serve", "--prompt", prompt, "--lm", lm, "--check", "--policy-goldset", policy_gold,
                             "--cache-dir", tmp_path / "fresh-cache")  # graded again by the LM, not read from the log
    assert checked.code == 0, checked.err
    assert stub.requests - before >= 20
    drift = json.loads(checked.out[checked.out.index("{"):])["drift"]
    gold = load_goldset(policy_gold, GRADER.row_model).rows
    judge = {e.candidate: e.terms.content for e in judged}
    human, machine = [int(2 * r.content_score) for r in gold], [int(2 * judge[r.candidate]) for r in gold]
    assert drift["policy_n"] == len(gold) == 20
    assert drift["policy_qwk"] == pytest.approx(cohen_kappa_score(human, machine, weights="quadratic", labels=[0, 1, 2]))
    assert drift["policy_exact"] == pytest.approx(sum(h == m for h, m in zip(human, machine)) / 20)
    assert drift["seed_qwk"] == 0.7 and drift["below_gate"] and "below the gate" in checked.err
    watching = Served(tmp_path, "--prompt", prompt, "--lm", lm, "--cache-dir", tmp_path / "cache", "--policy-goldset", policy_gold)
    try:
        health = requests.get(f"{watching.url}/health", timeout=60).json()
        judged_now = requests.get(f"{watching.url}/judge", timeout=60).json()["drift"]
    finally:
        watching.stop()
    assert health["status"] == "warning" and any("policy's own outputs is below the gate" in w for w in health["warnings"])
    assert judged_now["policy_qwk"] == pytest.approx(drift["policy_qwk"])


def test_trl_gets_one_float_per_completion_and_the_step_from_its_state(tmp_path, stub):
    lm = f"openai-compatible:stub@{stub.url}"
    prompt = calibrated(tmp_path, lm)
    expected = in_process(prompt, lm, tmp_path / "cache-a")
    with load_reward(prompt, lm, cache_dir=tmp_path / "cache-b") as reward:
        reward.log = GradingLog(tmp_path / "graded.jsonl", "lm")
        completions = [[{"role": "assistant", "content": r}] for r, _, _ in CASES]
        metrics = {}
        got = reward(prompts=[PROMPT] * len(CASES), completions=completions, context=[CONTEXT] * len(CASES),
                     target_info=["; ".join(items) for _, _, items in CASES], decision=[d for _, d, _ in CASES],
                     log_metric=metrics.__setitem__, trainer_state=type("State", (), {"global_step": 7})())
        reward.log.close()
    assert got == expected and metrics["reward_terms/stop"] == pytest.approx(6 / 8)
    assert [e.step for e in read_log(tmp_path / "graded.jsonl")] == [7] * len(CASES)


@pytest.mark.slow
def test_trl_grpo_trainer_runs_a_step_with_the_reward_as_its_reward_function(tmp_path, stub, tiny_policy):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    lm = f"openai-compatible:stub@{stub.url}"
    rows = [{"prompt": [{"role": "user", "content": f"{CONTEXT}\nAsk your next question, or write <stop />."}],
             "context": CONTEXT, "target_info": "; ".join(items), "decision": d} for _, d, items in CASES[:4]]
    with load_reward(calibrated(tmp_path, lm), lm, cache_dir=tmp_path / "cache") as reward:
        reward.log = GradingLog(tmp_path / "graded.jsonl", "lm")
        args = GRPOConfig(output_dir=str(tmp_path / "out"), max_steps=1, per_device_train_batch_size=4, num_generations=2,
                          max_completion_length=8, learning_rate=1e-6, use_cpu=True, report_to="none", logging_steps=1,
                          save_strategy="no", bf16=False, seed=0)
        trainer = GRPOTrainer(model=str(tiny_policy), reward_funcs=reward, args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(tiny_policy))
        trainer.train()
        reward.log.close()
    logged = [h for h in trainer.state.log_history if "reward" in h]
    graded = list(read_log(tmp_path / "graded.jsonl"))
    assert trainer.state.global_step == 1 and logged and "reward_terms/stop" in logged[0]
    assert len(graded) == 4 and {e.step for e in graded} == {0}  # one grading per completion, at TRL's step
    assert logged[0]["reward"] == pytest.approx(sum(e.reward for e in graded) / len(graded))
