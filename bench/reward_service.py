"""`calibrator serve` under load: 64 concurrent OpenRLHF-style clients against the reward service, whose judge's LM is
an API-like backend replaying the embedded model's answers.

    .venv/bin/python bench/reward_service.py [--record] [--clients 64] [--seconds 60]

1. Recording (once; `--record` redoes it): every row of goldsets/grader.csv (context and target) with its own candidate
   and the candidates of the next three rows, graded by the shipped calibrated grader prompt on the real embedded
   model; the requests and answers go to bench/recordings/grader-serve.jsonl.gz.
2. Cold: `calibrator serve` (a child process, --concurrency 32, an empty call cache) against bench/replay_server.py
   answering those requests with 250-750 ms latency, first with no 429s, then (a new cache) with 5% 429s; the clients send every recorded case once, in
   requests of 8 responses (one GRPO group). The bound the backend sets is concurrency / mean latency; the ratio
   achieved / bound says whether we or the backend limit throughput.
3. Cached: a new server on the same call cache (nothing in its memory), every case once more: no LM call, each
   grading renders its prompt, retrieves its demos and reads the cache.
4. Warm: that server, now remembering every case, for --seconds: requests of 8 responses drawn at random from the
   recorded cases, each client sending its next request when the last is answered.
Every phase checks that every response was answered with the reward the cold phase gave its case, and that the served
log holds exactly one entry per response sent (nothing lost, nothing duplicated).
"""

import argparse
import asyncio
import gzip
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_concurrency import RecordingWire  # noqa: E402
from replay_server import ReplayServer, load_recording  # noqa: E402

from calibrator.components.grader import GRADER  # noqa: E402
from calibrator.gold.goldset import load_goldset  # noqa: E402
from calibrator.lm import CallPolicy  # noqa: E402
from calibrator.parallel import map_ordered  # noqa: E402
from calibrator.reward.judge import open_judge  # noqa: E402
from calibrator.reward.log import read_log  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECORDING = ROOT / "bench" / "recordings" / "grader-serve.jsonl.gz"
PROMPT = ROOT / "prompts" / "grader.calibrated.yaml"
GROUP = 8  # responses per request: one GRPO group
LATENCY = (0.25, 0.75)
CONCURRENCY = 32


def cases() -> list[dict]:
    """Each gold row's own candidate and the candidates of the next three rows against its dialogue and target: four
    distinct gradings per row, as a GRPO group's answers to one prompt would be."""
    rows = load_goldset(ROOT / "goldsets" / "grader.csv", GRADER.row_model).rows
    return [{"context": r.context, "target_info": r.target_info, "candidate": rows[(i + k) % len(rows)].candidate}
            for i, r in enumerate(rows) for k in range(4)]


def record() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        judge = open_judge(stack, PROMPT, "local", cache_dir=Path(tmp), policy=CallPolicy(concurrency=2))
        recorder = judge.handle.engine.wire = RecordingWire(judge.handle.engine.wire)
        map_ordered(lambda c: judge.grade(c["context"], "; ".join(c["target_info"]), c["candidate"]), cases(), concurrency=2)
    RECORDING.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(RECORDING, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in recorder.records)
    print(f"recorded {len(recorder.records)} embedded-model answers in {time.perf_counter() - started:.0f} s -> "
          f"{RECORDING.relative_to(ROOT)}", flush=True)


def body(group: list[dict]) -> dict:
    prompt = "<|im_start|>user\nAsk the next question or stop.<|im_end|>\n<|im_start|>assistant\n"
    return {"query": [prompt + c["candidate"] + "<|im_end|>" for c in group], "prompts": [prompt] * len(group),
            "labels": [json.dumps({"decision": "continue", "target_info": c["target_info"], "context": c["context"]})
                       for c in group]}


async def client(session, url, groups, latencies, answers, stop_at=None):
    while groups and (stop_at is None or time.monotonic() < stop_at):
        group = groups.pop()
        started = time.perf_counter()
        async with session.post(url, json=body(group)) as reply:
            payload = await reply.json()
            if reply.status != 200:
                raise RuntimeError(f"{reply.status}: {payload}")
        latencies.append(time.perf_counter() - started)
        answers.extend(zip((c["candidate"] for c in group), payload["rewards"]))


async def load(url: str, groups: list[list[dict]], clients: int, seconds: float | None) -> dict:
    latencies, answers = [], []
    connector = aiohttp.TCPConnector(limit=clients)
    started = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=600)) as session:
        stop_at = None if seconds is None else time.monotonic() + seconds
        await asyncio.gather(*(client(session, url, groups, latencies, answers, stop_at) for _ in range(clients)))
    wall = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    return {"seconds": wall, "requests": len(latencies), "gradings": len(answers), "per_s": len(answers) / wall,
            "p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, int(0.99 * len(ms)))], "answers": answers}


def serve(work: Path, backend: str) -> tuple[subprocess.Popen, str]:
    work.mkdir(parents=True, exist_ok=True)
    log = work / "graded.jsonl"
    out = open(work / "serve.out", "w")
    child = subprocess.Popen([sys.executable, "-m", "calibrator", "serve", "--prompt", str(PROMPT), "--port", "0",
                              "--lm", f"openai-compatible:smollm2@{backend}", "--allow-uncalibrated", "--concurrency",
                              str(CONCURRENCY), "--cache-dir", str(work / "cache"), "--log", str(log), "--log-max-mb", "500"],
                             cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                             env=os.environ | {"PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://\S+) ", (work / "serve.out").read_text())
        if found:
            return child, found.group(1)
        if child.poll() is not None:
            break
        time.sleep(0.2)
    child.kill()
    raise SystemExit(f"serve did not start:\n{(work / 'serve.out').read_text()}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", action="store_true", help="record the embedded model's answers again")
    ap.add_argument("--clients", type=int, default=64, help="concurrent clients (default: 64)")
    ap.add_argument("--seconds", type=float, default=60.0, help="the warm phase's length (default: 60)")
    args = ap.parse_args()
    if args.record or not RECORDING.is_file():
        record()
    recorded = load_recording(RECORDING)
    known = cases()
    rng = random.Random(0)
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    phases = []

    def once() -> list[list[dict]]:
        shuffled = rng.sample(known, len(known))
        return [shuffled[i:i + GROUP] for i in range(0, len(shuffled), GROUP)]

    with ReplayServer(recorded, latency=LATENCY, throttle=0.0, seed=0) as clean:  # no 429s: the bound is the latency's
        child, url = serve(work / "clean", clean.url)
        try:
            result = asyncio.run(load(f"{url}/get_reward", once(), args.clients, None))
        finally:
            os.killpg(child.pid, signal.SIGTERM)
            child.wait(timeout=60)
        phases.append(("cold, no 429s", result, clean.requests, 0))
    with ReplayServer(recorded, latency=LATENCY, throttle=0.05, retry_after=1.0, seed=0) as backend:
        for name, groups, seconds in (("cold", once(), None), ("cached", once(), None),
                                      ("warm", [rng.sample(known, GROUP) for _ in range(200_000)], args.seconds)):
            if name != "warm":  # a new server: the call cache on disk is all it keeps
                child, url = serve(work, backend.url)
            calls, throttled = backend.requests, backend.throttled
            try:
                result = asyncio.run(load(f"{url}/get_reward", groups, args.clients, seconds))
            except BaseException:
                os.killpg(child.pid, signal.SIGTERM)
                raise
            phases.append((name, result, backend.requests - calls, backend.throttled - throttled))
            if name != "cached":
                os.killpg(child.pid, signal.SIGTERM)
                child.wait(timeout=60)
        unmatched = backend.unmatched
    reward_of = {}
    for candidate, reward in phases[1][1]["answers"]:
        reward_of.setdefault(candidate, set()).add(reward)
    mismatched = sum(reward not in reward_of.get(c, set()) for _, r, _, _ in phases for c, reward in r["answers"])
    logged = list(read_log(work / "graded.jsonl")) + list(read_log(work / "clean" / "graded.jsonl"))
    sent = sum(r["gradings"] for _, r, _, _ in phases)
    ids = [e.id for e in logged]
    bound = CONCURRENCY / statistics.mean(LATENCY)
    print(f"\n{len(known)} recorded cases (goldsets/grader.csv rows x 4 candidates, on the embedded model); backend: replayed "
          f"answers, {LATENCY[0] * 1000:.0f}-{LATENCY[1] * 1000:.0f} ms, 5% 429 + Retry-After 1 s, unmatched requests "
          f"{unmatched}; serve --concurrency {CONCURRENCY}; {args.clients} clients, {GROUP} responses a request; "
          f"{os.cpu_count()} CPUs for server, clients and backend together")
    print(f"{'phase':<14}{'seconds':>9}{'requests':>10}{'gradings':>10}{'gradings/s':>12}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'LM calls':>10}{'429s':>6}")
    for name, r, calls, throttled in phases:
        print(f"{name:<14}{r['seconds']:>9.1f}{r['requests']:>10}{r['gradings']:>10}{r['per_s']:>12.1f}{r['p50']:>9.0f}"
              f"{r['p99']:>9.0f}{calls:>10}{throttled:>6}")
    clean_run, cold = phases[0][1], phases[1][1]
    print(f"cold, no 429s: {clean_run['per_s']:.1f} gradings/s against the backend's bound of {bound:.0f} calls/s "
          f"({CONCURRENCY} in flight / {statistics.mean(LATENCY):.2f} s mean latency): {clean_run['per_s'] / bound:.2f} of it")
    print(f"cold, 5% 429s: {cold['per_s']:.1f} gradings/s, {cold['per_s'] / bound:.2f} of the bound; 429s absorbed: {phases[1][3]}")
    print(f"cached (a new server, every answer in the call cache): {phases[2][1]['per_s']:.0f} gradings/s; warm (the same "
          f"server, {args.seconds:.0f} s): {phases[3][1]['per_s']:.0f} gradings/s (goal: at least 200)")
    print(f"logged {len(logged)} of {sent} gradings sent, {len(ids) - len(set(ids))} duplicated, {sent - len(set(ids))} "
          f"lost; rewards differing from the cold phase's for the same case: {mismatched}")


if __name__ == "__main__":
    main()
