"""The engine's flow control in isolation: the AIMD window, the token bucket, Retry-After, error classes, the circuit
breaker, one call per key across threads and across processes, and ordered maps. Fake wires here prove the logic;
tests/test_concurrency.py proves it against the real embedded server."""

import email.utils
import json
import multiprocessing
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

from calibrator.lm.cache import CallCache, cache_key
from calibrator.lm.failure import BackendUnavailable, Failure, classify, retry_after
from calibrator.lm.flow import AdaptiveWindow, CircuitBreaker, TokenBucket
from calibrator.lm.wire import Answer
from calibrator.parallel import imap_unordered, map_ordered
from support import ROOT
from support.engine import ask, engine



def status_error(status: int, headers: dict[str, str] | None = None) -> openai.APIStatusError:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(status, headers=headers or {}, request=request, json={"error": {"message": "x"}})
    return openai.APIStatusError("x", response=response, body=None)


def connection_refused() -> openai.APIConnectionError:
    request = httpx.Request("POST", "http://127.0.0.1:9/v1/chat/completions")
    try:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
    except httpx.ConnectError as cause:
        error = openai.APIConnectionError(request=request)
        error.__cause__ = cause
        return error


# ---- reading errors -----------------------------------------------------------------------------------------

def test_retry_after_reads_seconds_milliseconds_and_http_dates():
    assert retry_after(httpx.Headers({"retry-after": "3"})) == 3.0
    assert retry_after(httpx.Headers({"retry-after-ms": "250", "retry-after": "3"})) == 0.25
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= retry_after(httpx.Headers({"retry-after": when})) <= 30
    assert retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert retry_after(httpx.Headers({})) is None


@pytest.mark.parametrize("status,kind", [(429, "throttled"), (503, "throttled"), (529, "throttled"), (500, "transient"),
                                         (502, "transient"), (401, "fatal"), (403, "fatal"), (404, "fatal"), (400, "rejected"),
                                         (422, "rejected")])
def test_status_codes_are_classified(status, kind):
    failure = classify(status_error(status, {"retry-after": "2"}))
    assert failure.kind == kind and str(status) in failure.cause
    assert (failure.retry_after == 2.0) == (kind == "throttled")


def test_connection_refused_is_named_and_other_errors_are_not_ours():
    assert classify(connection_refused()) == Failure(kind="transient", cause="connection refused")
    assert classify(ValueError("a bug")) is None


# ---- flow control ---------------------------------------------------------------------------------------------

def test_the_window_halves_once_per_round_trip_and_grows_back_one_slot_per_success():
    window = AdaptiveWindow(32)
    with window.slot() as early:
        pass
    window.throttled(early)
    assert window.limit == 16
    window.throttled(early)  # a call from before the cut: the same congestion, no second cut
    assert window.limit == 16
    with window.slot() as later:
        pass
    window.throttled(later)
    assert window.limit == 8 and window.cuts == 2
    for _ in range(5):
        window.success()
    assert window.limit == 13
    for _ in range(100):
        window.success()
    assert window.limit == 32
    tiny = AdaptiveWindow(1)
    with tiny.slot() as e:
        pass
    tiny.throttled(e)
    assert tiny.limit == 1  # never below one call in flight


def test_the_window_never_lets_more_calls_in_flight_than_its_limit():
    window, peak, lock = AdaptiveWindow(3), [0], threading.Lock()

    def call(_):
        with window.slot():
            with lock:
                peak[0] = max(peak[0], window.in_flight)
            time.sleep(0.01)

    map_ordered(call, list(range(40)), concurrency=12)
    assert peak[0] == 3 and window.in_flight == 0


def test_the_token_bucket_spaces_calls_at_the_rate():
    bucket = TokenBucket(per_minute=1200)  # 20 a second, a burst of 20
    started = time.monotonic()
    for _ in range(40):
        bucket.take(1)
    assert time.monotonic() - started >= 0.9  # the 20 beyond the burst waited ~1 s
    big = TokenBucket(per_minute=600)
    assert big.take(25) >= 1.4  # larger than the burst: it goes, after the bucket's debt is paid


def test_the_breaker_opens_on_fatal_answers_and_on_a_run_that_never_worked():
    fatal = CircuitBreaker("--lm x")
    assert isinstance(fatal.failure(Failure(kind="fatal", cause="HTTP 401: the API key was refused")), BackendUnavailable)
    with pytest.raises(BackendUnavailable, match="HTTP 401"):
        fatal.check()
    first = CircuitBreaker("--lm y", first=3)
    refused = Failure(kind="transient", cause="connection refused")
    assert first.failure(refused) is None and first.failure(refused) is None
    assert "first 3 calls" in str(first.failure(refused))
    mixed = CircuitBreaker("--lm z", first=3, streak=4)
    for cause in ("HTTP 400: a", "HTTP 400: b", "connection refused", "HTTP 400: a"):
        assert mixed.failure(Failure(kind="rejected", cause=cause)) is None  # per-sample problems, not a dead backend
    mixed.check()
    too_long = Failure(kind="rejected", cause="HTTP 400: the prompt exceeds the context size")
    rejecting = CircuitBreaker("--lm r", first=3, streak=4)
    assert rejecting.failure(too_long) is None and rejecting.failure(too_long) is None
    assert "first 3 calls" in str(rejecting.failure(too_long))  # every call so far refused the same way: a wrong setup
    after_success = CircuitBreaker("--lm s", first=3, streak=4)
    after_success.success()
    assert all(after_success.failure(too_long) is None for _ in range(10))  # once it worked, a long prompt is one row's problem
    assert all(after_success.failure(Failure(kind="transient", cause="HTTP 500")) is None for _ in range(10))  # so is a 500
    working = CircuitBreaker("--lm w", first=3, streak=4)
    working.success()
    for _ in range(3):
        assert working.failure(refused) is None  # it worked before: a short outage is retried per sample
    assert "4 calls in a row" in str(working.failure(refused))


# ---- the engine with a fake wire -------------------------------------------------------------------------------

class ScriptedWire:
    """Raises the scripted errors in turn, then answers; counts calls; can be slow."""

    supports_response_schema = True
    supports_logprobs = False

    def __init__(self, errors=(), delay: float = 0.0):
        self.errors, self.delay, self.calls = list(errors), delay, 0
        self._lock = threading.Lock()

    def chat(self, messages, params):
        with self._lock:
            self.calls += 1
            error = self.errors.pop(0) if self.errors else None
        if self.delay:
            time.sleep(self.delay)
        if error is not None:
            raise error
        return Answer(text=f"answer to {messages[-1]['content']}", prompt_tokens=3, completion_tokens=2)

    def close(self):
        pass


def test_throttled_calls_wait_retry_and_cut_the_window(tmp_path):
    wire = ScriptedWire([status_error(429, {"retry-after": "0.01"})] * 3)
    e = engine(tmp_path, wire, concurrency=8, preflight=False)
    assert ask(e, "q") == "answer to q"
    u = e.meter.snapshot()
    assert (wire.calls, u.throttled, u.retries, u.lm_calls, u.failures) == (4, 3, 0, 1, 0)
    assert e.window.cuts == 3 and e.window.limit == 2  # each retry started after the last cut; one success gave a slot back


def test_a_call_throttled_beyond_its_retries_fails_and_is_counted(tmp_path):
    wire = ScriptedWire([status_error(429, {"retry-after": "0"})] * 10)
    e = engine(tmp_path, wire, throttle_retries=2, preflight=False)
    with pytest.raises(openai.APIStatusError):
        ask(e, "q")
    assert wire.calls == 3 and e.meter.snapshot().failures == 1


def test_preflight_stops_a_wrong_backend_before_any_real_call(tmp_path):
    wire = ScriptedWire([status_error(404)])
    e = engine(tmp_path, wire)
    with pytest.raises(BackendUnavailable, match=r"--lm openai:m: HTTP 404: unknown model or wrong URL \(preflight request\)"):
        ask(e, "q")
    with pytest.raises(BackendUnavailable):
        ask(e, "another")  # the breaker is open: no more calls
    assert wire.calls == 1 and e.meter.snapshot().lm_calls == 0


def test_preflight_retries_a_timeout_or_5xx_but_not_a_refused_connection(tmp_path):
    flaky = ScriptedWire([status_error(500), status_error(502)])
    assert ask(engine(tmp_path / "a", flaky, max_retries=2), "q") == "answer to q" and flaky.calls == 4
    refused = ScriptedWire([connection_refused()])
    with pytest.raises(BackendUnavailable, match="connection refused"):
        ask(engine(tmp_path / "b", refused, max_retries=2), "q")
    assert refused.calls == 1


def test_a_quota_length_retry_after_fails_the_call_instead_of_sleeping(tmp_path):
    wire = ScriptedWire([status_error(429, {"retry-after": "86400"})])
    e = engine(tmp_path, wire, preflight=False)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError):
        ask(e, "q")
    assert time.monotonic() - started < 5 and wire.calls == 1 and e.meter.snapshot().failures == 1


def test_closing_the_engine_wakes_a_call_sleeping_in_backoff(tmp_path):
    wire = ScriptedWire([status_error(429, {"retry-after": "60"})])
    e = engine(tmp_path, wire, preflight=False)
    errors = []
    worker = threading.Thread(target=lambda: errors.append(pytest.raises(Exception, ask, e, "q").value))
    worker.start()
    time.sleep(0.5)
    e.close()
    worker.join(timeout=10)
    assert not worker.is_alive() and type(errors[0]).__name__ == "EngineClosed"


def test_a_busy_backend_passes_preflight(tmp_path):
    wire = ScriptedWire([status_error(429)])
    e = engine(tmp_path, wire)
    assert ask(e, "q") == "answer to q" and wire.calls == 2


def test_one_call_per_key_however_many_threads_ask(tmp_path):
    wire = ScriptedWire(delay=0.2)
    e = engine(tmp_path, wire, concurrency=16, preflight=False)
    answers = map_ordered(lambda i: ask(e, f"q{i % 3}"), list(range(24)), concurrency=24)
    assert answers == [f"answer to q{i % 3}" for i in range(24)]
    u = e.meter.snapshot()
    assert wire.calls == 3 and (u.lm_calls, u.cache_hits) == (3, 21)


# ---- two processes, one cache ------------------------------------------------------------------------------

CLIENT = """
import json, sys
from pathlib import Path
sys.path.insert(0, {root!r})
from calibrator.lm import CallPolicy, LMSpec, open_lm
spec = LMSpec.parse("openai-compatible:stub@" + sys.argv[1])
import os, time
from calibrator.parallel import map_ordered
Path(sys.argv[3] + "." + str(os.getpid())).touch()  # ready: everything imported
while not Path(sys.argv[3]).exists():  # start together: both processes ask for the same requests at the same time
    time.sleep(0.01)
with open_lm(spec, cache_dir=Path(sys.argv[2]), policy=CallPolicy(concurrency=8, preflight=False)) as lm:
    order = list(range(40))[::int(sys.argv[4])]  # one process from each end: they meet in the middle
    answers = map_ordered(lambda i: lm.engine.chat([{{"role": "user", "content": f"question {{i}}"}}], {{"max_tokens": 5}}).text,
                          order, concurrency=8)
    print(json.dumps({{"answers": sorted(zip(order, answers)), "usage": lm.usage().model_dump()}}))
"""


@pytest.mark.slow
def test_two_processes_on_one_cache_make_each_call_once_and_agree(tmp_path, stub):
    script = tmp_path / "client.py"
    script.write_text(CLIENT.format(root=str(ROOT)))
    go = tmp_path / "go"
    # No answer leaves the server before each process has asked its first question, so neither can finish alone.
    stub.delay, stub.hold_until = 0.3, frozenset({"question 0", "question 39"})
    procs = [subprocess.Popen([sys.executable, str(script), stub.url, str(tmp_path / "cache"), str(go), step], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for step in ("1", "-1")]
    deadline = time.monotonic() + 120
    while len(list(tmp_path.glob("go.*"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    first, second = (json.loads(out) for out, _ in outs)
    assert first["answers"] == second["answers"]
    assert stub.requests == 40 and set(stub.seen.values()) == {1}  # 40 distinct requests, each made once
    assert first["usage"]["lm_calls"] + second["usage"]["lm_calls"] == 40
    assert first["usage"]["lm_calls"] > 0 and second["usage"]["lm_calls"] > 0  # both really competed for the keys
    assert first["usage"]["lm_calls"] + first["usage"]["cache_hits"] == 40
    db = sqlite3.connect(tmp_path / "cache" / "lm-calls.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT COUNT(*) FROM calls").fetchone() == (40,)
    assert db.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)


def _open_cache_at(path: str, start: float) -> str:
    while time.time() < start:  # spin, not sleep: the processes open the file within microseconds of each other
        pass
    try:
        CallCache(Path(path))
    except sqlite3.Error as err:
        return repr(err)
    return "ok"


@pytest.mark.slow
def test_processes_opening_a_new_cache_at_the_same_instant_all_get_it(tmp_path):
    # Before the fix about 4 rounds in 10 lost a process to "database is locked" while the file was switched to WAL.
    with multiprocessing.get_context("fork").Pool(6) as pool:
        for round in range(12):
            start = time.time() + 0.2
            opened = pool.starmap(_open_cache_at, [(str(tmp_path / str(round) / "calls.sqlite"), start)] * 6)
            assert opened == ["ok"] * 6, (round, opened)
            db = sqlite3.connect(tmp_path / str(round) / "calls.sqlite")
            assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            tables = db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").fetchall()
            assert tables == [("calls",), ("claims",)]


def test_short_lived_worker_threads_reuse_the_cache_connections(tmp_path):
    e = engine(tmp_path, ScriptedWire(), concurrency=4, preflight=False)
    for round in range(20):  # each map is a new pool of new threads, as every evaluation makes
        map_ordered(lambda i: ask(e, f"q{round}-{i}"), list(range(8)), concurrency=4)
    assert e.cache.opened <= 5  # bounded by the callers at once (4 threads), not by the 80 threads made


def test_a_caller_waiting_on_another_process_takes_over_when_that_process_dies(tmp_path):
    e = engine(tmp_path, ScriptedWire(), preflight=False)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])
    threading.Thread(target=other.wait, daemon=True).start()  # reaped when it ends, as init reaps a killed process
    key_of_q = cache_key({"lm": e.identity, "messages": [{"role": "user", "content": "q"}], "params": {"max_tokens": 5}})
    with sqlite3.connect(tmp_path / "calls.sqlite") as db:
        db.execute("INSERT INTO claims VALUES (?, ?, ?)", (key_of_q, f"{e.cache.owner.split(':')[0]}:{other.pid}:x", time.time()))
    started = time.monotonic()
    assert ask(e, "q") == "answer to q"  # waited while the owner lived, then made the call itself
    assert 1.0 <= time.monotonic() - started < 30 and e.wire.calls == 1


def test_an_answer_landing_between_the_waiters_read_and_its_claim_leaves_no_claim_behind(tmp_path):
    # Another process holds the key; while this one waits, that process answers and releases it just after this one's
    # read and before its next claim, so the claim succeeds on a key already answered. It must be given back: a claim
    # left on an answered key makes the next process without that answer wait out its owner for nothing.
    e = engine(tmp_path, ScriptedWire(), preflight=False)
    other = CallCache(tmp_path / "calls.sqlite")
    claim, tries = e.cache.claim, []

    def claim_racing(key: str) -> bool:
        tries.append(key)
        if len(tries) == 1:
            assert other.claim(key)  # the other process holds it when this one first looks
        elif len(tries) == 2:
            other.put(key, {"text": "their answer"})  # answered (and released) right after this one's read
        return claim(key)

    e.cache.claim = claim_racing
    assert ask(e, "q") == "their answer" and e.wire.calls == 0 and len(tries) == 2
    with sqlite3.connect(tmp_path / "calls.sqlite") as db:
        assert db.execute("SELECT * FROM claims").fetchall() == []


def test_a_claim_left_by_a_killed_process_is_taken_over(tmp_path):
    cache = CallCache(tmp_path / "calls.sqlite")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    with sqlite3.connect(tmp_path / "calls.sqlite") as db:
        db.execute("INSERT INTO claims VALUES (?, ?, ?)", ("k", f"{cache.owner.split(':')[0]}:{dead}:x", time.time()))
    assert cache.claim("k")
    other = CallCache(tmp_path / "calls.sqlite")
    assert not other.claim("k")  # a live owner (this process) holds it now
    cache.put("k", {"text": "a"})
    assert other.get("k") == {"text": "a"}
    with sqlite3.connect(tmp_path / "calls.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone() == (0,)  # the answer released the claim


# ---- ordered and streaming maps ----------------------------------------------------------------------------

def test_map_ordered_keeps_input_order_and_imap_streams_with_a_bounded_queue():
    assert map_ordered(lambda x: (time.sleep(0.001 * (10 - x)), x * x)[1], list(range(10)), concurrency=5) == [x * x for x in range(10)]
    read = []

    def source():
        for i in range(100):
            read.append(i)
            yield i

    seen = 0
    for item, result in imap_unordered(lambda x: x + 1, source(), concurrency=2, pending=4):
        assert result == item + 1
        assert len(read) - seen <= 4 + 1  # never more than `pending` read ahead of what was yielded
        seen += 1
    assert seen == 100


def test_a_failing_task_stops_the_map_but_not_before_finished_results():
    def boom(x):
        if x == 3:
            raise KeyboardInterrupt
        return x

    got = []
    with pytest.raises(KeyboardInterrupt):
        for item, _ in imap_unordered(boom, range(10), concurrency=1, pending=10):
            got.append(item)
    assert {0, 1, 2} <= set(got) and 3 not in got


def test_rpm_and_tpm_flags_reach_the_engine_and_pace_its_calls(tmp_path):
    from calibrator.cli.parser import build, call_policy
    from calibrator.lm.spec import LMSpec

    args = build().parse_args(["eval", "--lm", "openai:gpt-4o-mini", "--rpm", "600", "--tpm", "100000", "--concurrency", "8"])
    policy = call_policy(args, LMSpec.parse(args.lm))
    assert (policy.concurrency, policy.rpm, policy.tpm) == (8, 600, 100000)
    assert call_policy(build().parse_args(["eval"]), LMSpec.parse("openai:m")).concurrency == 16
    with pytest.raises(ValueError, match="--rpm 0: must be at least 1"):
        call_policy(build().parse_args(["eval", "--rpm", "0"]), LMSpec.parse("local"))
    e = engine(tmp_path, ScriptedWire(), preflight=False, concurrency=8, rpm=600)  # 10 a second, a burst of 10
    started = time.monotonic()
    map_ordered(lambda i: ask(e, f"q{i}"), list(range(30)), concurrency=8)
    assert time.monotonic() - started >= 1.5 and e.meter.snapshot().rate_wait_seconds > 0
