"""The engine's paths under failure, against real HTTP servers on 127.0.0.1 and the real OpenAI wire: a leader call
that fails while others wait for it (in this process and in another), pacing by --tpm, a claim kept fresh through a
long retry, and the circuit breaker opening in the middle of a run. tests/test_engine_flow.py has the logic with a
fake wire; these prove the same paths end to end."""

import json
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from calibrator.lm.cache import cache_key
from calibrator.lm.failure import BackendUnavailable
from calibrator.lm.openai_chat import OpenAIChatWire
from calibrator.parallel import map_ordered
from support.fault_proxy import FaultProxy
from support.http import Quiet, ThreadedServer, send_json
from support.engine import ask, engine
from support.extraction import cached, extract_args, write_log

# ---- a scripted backend -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the backend does with one request: answer (200) or an error status, after `delay` seconds; `drop` closes
    the connection without a word, as a crashed or restarting server does."""

    status: int = 200
    delay: float = 0.0
    retry_after: str | None = None
    drop: bool = False


class Backend(ThreadedServer):
    """A tiny OpenAI-compatible server on 127.0.0.1 that plays `script(n, asked)` (n: the request's number from 1,
    asked: its last user message) and records each request's arrival, and how many were in flight at once. Answers
    are "answer {n} to {asked}", usage 10 prompt + 5 completion tokens."""

    def __init__(self, script: Callable[[int, str], Reply] = lambda n, asked: Reply()) -> None:
        self.script = script
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), asked)
        self.in_flight = self.peak = 0
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        owner = self

        class Handler(Quiet):
            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                asked = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
                with owner._arrived:
                    owner.arrivals.append((time.monotonic(), asked))
                    n = len(owner.arrivals)
                    owner.in_flight += 1
                    owner.peak = max(owner.peak, owner.in_flight)
                    owner._arrived.notify_all()
                try:
                    reply = owner.script(n, asked)
                    time.sleep(reply.delay)
                    if reply.drop:
                        return  # the connection closes without a response
                    if reply.status == 200:
                        data = {"id": f"r{n}", "object": "chat.completion", "created": 0, "model": body["model"],
                                "choices": [{"index": 0, "finish_reason": "stop",
                                             "message": {"role": "assistant", "content": f"answer {n} to {asked}"}}],
                                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
                    else:
                        data = {"error": {"message": f"scripted {reply.status}", "type": "error"}}
                    send_json(self, reply.status, data, {} if reply.retry_after is None else {"Retry-After": reply.retry_after})
                finally:
                    with owner._lock:
                        owner.in_flight -= 1

        super().__init__(Handler)

    @property
    def requests(self) -> int:
        return len(self.arrivals)

    def wire(self) -> OpenAIChatWire:
        return OpenAIChatWire("m", base_url=self.url, api_key="test", timeout=10, max_retries=0)

    def wait_for(self, requests: int, timeout: float = 10) -> None:
        with self._arrived:
            assert self._arrived.wait_for(lambda: len(self.arrivals) >= requests, timeout), self.arrivals


class Outcome:
    """`fn()` on a daemon thread (a hung call cannot hang the test run): its value or its error once joined."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.value: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.value = fn()
        except BaseException as e:  # noqa: BLE001 - the test reads it
            self.error = e


def join_all(outcomes: list[Outcome], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for o in outcomes:
        o.thread.join(max(0.0, deadline - time.monotonic()))
    assert not any(o.thread.is_alive() for o in outcomes), "a caller is still waiting: it hangs"


def key_of(e, text: str) -> str:
    return cache_key({"lm": e.identity, "messages": [{"role": "user", "content": text}], "params": {"max_tokens": 5}})


def claims(tmp_path: Path) -> list[tuple]:
    with sqlite3.connect(tmp_path / "calls.sqlite") as db:
        return db.execute("SELECT * FROM claims").fetchall()


# ---- 1. a leader that fails ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("status,attempts", [(400, 1), (500, 3)], ids=["400-not-retried", "500-retried-then-failed"])
def test_when_the_leader_fails_its_followers_make_the_call_themselves_one_at_a_time(tmp_path, status, attempts):
    # The leader's attempts fail slowly, so the other threads are waiting on it when it gives up.
    with Backend(lambda n, asked: Reply(status, delay=0.4) if n <= attempts else Reply(delay=0.1)) as backend:
        e = engine(tmp_path, backend.wire(), concurrency=8, preflight=False, max_retries=2)
        leader = Outcome(lambda: ask(e, "q"))
        backend.wait_for(1)
        followers = [Outcome(lambda: ask(e, "q")) for _ in range(5)]
        join_all([leader, *followers], timeout=10)
    assert isinstance(leader.error, openai.APIStatusError) and leader.error.status_code == status
    # the leader's error is its own: each follower went on to make the call, the first to wake made it, the rest read it
    assert [(f.error, f.value) for f in followers] == [(None, f"answer {attempts + 1} to q")] * 5
    assert backend.requests == attempts + 1 and backend.peak == 1  # never two calls for the key at once
    assert e.cache.get(key_of(e, "q"))["text"] == f"answer {attempts + 1} to q"  # the answer, never the failure
    assert claims(tmp_path) == []
    u = e.meter.snapshot()
    assert (u.lm_calls, u.failures, u.cache_hits, u.retries) == (1, 1, 4, attempts - 1)


def test_a_leader_of_another_cache_owner_that_fails_releases_its_claim_and_the_waiter_calls_at_once(tmp_path):
    with Backend(lambda n, asked: Reply(400, delay=0.5) if n == 1 else Reply()) as backend:
        first = engine(tmp_path, backend.wire(), preflight=False)
        other = engine(tmp_path, backend.wire(), preflight=False)  # its own CallCache on the file: another owner
        assert other.cache.owner != first.cache.owner and other.cache.stale_after >= 900
        leader = Outcome(lambda: ask(first, "q"))
        backend.wait_for(1)
        waiter = Outcome(lambda: ask(other, "q"))  # finds the key claimed by `first`: waits for its answer
        join_all([leader, waiter], timeout=8)  # released at once, not taken over as stale 15 minutes later
    assert isinstance(leader.error, openai.BadRequestError)
    assert waiter.error is None and waiter.value == "answer 2 to q"
    assert backend.requests == 2 and claims(tmp_path) == []
    assert (first.meter.snapshot().failures, other.meter.snapshot().lm_calls) == (1, 1)


# ---- 2. --tpm -----------------------------------------------------------------------------------------------------

def test_a_low_tpm_spreads_the_calls_as_the_token_budget_says(tmp_path):
    # 3000 tokens a minute: 50 a second, a burst of 50. Each call is estimated at 5 tokens (max_tokens; "qN" is under
    # 4 characters) and settled at the 15 the backend reports, so 12 calls cost 180 tokens: ~2.6 s of budget.
    rate, burst, cost, concurrency = 50.0, 50.0, 15, 4
    with Backend() as backend:
        e = engine(tmp_path, backend.wire(), preflight=False, concurrency=concurrency, tpm=3000)
        map_ordered(lambda i: ask(e, f"q{i}"), list(range(12)), concurrency=concurrency)
    times = sorted(t for t, _ in backend.arrivals)
    assert len(times) == 12
    # Any run of requests at the server fits the budget: what they cost is at most the burst plus what the rate gave
    # meanwhile, give or take the calls in flight and not yet settled (and one call for latency).
    slack = (concurrency - 1) * (cost - 5) + cost
    for i in range(len(times)):
        for j in range(i + 1, len(times)):
            assert (j - i) * cost <= burst + rate * (times[j] - times[i]) + slack, (i, j, [round(t - times[0], 2) for t in times])
    assert times[-1] - times[0] >= (11 * cost - burst - slack) / rate  # >= 1.1 s, where ~0.01 s is unpaced
    assert times[-1] - times[0] < 15  # paced by the budget, not stalled
    u = e.meter.snapshot()
    assert u.lm_calls == 12 and u.rate_wait_seconds > 0 and (u.prompt_tokens, u.completion_tokens) == (120, 60)


# ---- 3. a claim kept through a long retry --------------------------------------------------------------------------

def test_a_claim_stays_fresh_through_a_long_retry_so_another_process_waits_instead_of_taking_over(tmp_path):
    # The leader is throttled 12 times (Retry-After 0.3 s, waited 0.3-0.36 s): ~4 s of retrying, twice as long as the
    # other process's patience for a silent claim (2 s), more than five times as long as one wait between attempts.
    with Backend(lambda n, asked: Reply(429, retry_after="0.3") if n <= 12 else Reply()) as backend:
        first = engine(tmp_path, backend.wire(), preflight=False, throttle_retries=12)
        other = engine(tmp_path, backend.wire(), preflight=False)
        other.cache.stale_after = 2.0
        leader = Outcome(lambda: ask(first, "slow"))
        backend.wait_for(1)
        waiter = Outcome(lambda: ask(other, "slow"))
        join_all([leader, waiter], timeout=15)
    assert leader.error is None and waiter.error is None
    assert leader.value == waiter.value == "answer 13 to slow"
    assert backend.requests == 13  # the leader's 12 throttled attempts and its answer; the waiter made none
    assert backend.arrivals[-1][0] - backend.arrivals[0][0] > other.cache.stale_after  # the retry outlived the patience
    assert first.meter.snapshot().throttled == 12
    u = other.meter.snapshot()
    assert (u.lm_calls, u.throttled, u.cache_hits) == (0, 0, 1)
    assert claims(tmp_path) == []


# ---- 4. the circuit breaker mid-run --------------------------------------------------------------------------------

def test_the_breaker_opens_mid_run_when_the_backend_stops_answering_and_later_calls_fail_fast(tmp_path):
    # The preflight and 5 calls are answered; then the server drops every connection (crashed behind a proxy).
    good = 6
    with Backend(lambda n, asked: Reply() if n <= good else Reply(drop=True)) as backend:
        e = engine(tmp_path, backend.wire(), concurrency=4, max_retries=1)
        rows: dict[int, str] = {}

        def row(i: int) -> None:  # as a component's predict does: a failed call is the row's, a stopped backend the run's
            try:
                rows[i] = ask(e, f"q{i}")
            except BackendUnavailable:
                raise
            except openai.APIConnectionError as err:
                rows[i] = f"failed: {err}"

        with pytest.raises(BackendUnavailable, match=r"--lm openai:m: connection error \(Connection error\.\) "
                                                     r"\(8 calls in a row failed this way\)"):
            map_ordered(row, list(range(40)), concurrency=4)
        assert e.window.drain(10)  # the abandoned rows' calls are over
        dropped = backend.requests - good
        # 8 failed calls of 2 attempts each opened it; calls already in flight stop at their next attempt
        assert 8 * 2 <= dropped <= (8 + 3) * 2, dropped
        assert sum(text.startswith("answer") for text in rows.values()) == good - 1
        assert len(rows) < 40 - 4  # the run stopped: most rows were never tried
        for i in range(40):
            with pytest.raises(BackendUnavailable, match="8 calls in a row"):
                ask(e, f"later {i}")
        assert backend.requests == good + dropped  # nothing reached the server
    assert e.meter.snapshot().lm_calls == good - 1 and claims(tmp_path) == []


class RevokedAfter(FaultProxy):
    """The proxy forwards the first `good` requests to the stub, then answers every one 401: the key was revoked."""

    def __init__(self, upstream: str, good: int) -> None:
        super().__init__(upstream, status=401, retry_after=None)
        self.good = good

    def _decide(self) -> int | None:
        with self._lock:
            self.seen += 1
            if self.seen <= self.good:
                return None
            self.injected += 1
            return 401


def test_a_key_revoked_mid_run_stops_the_command_with_the_breaker_line_and_keeps_what_was_answered(tmp_path, stub, cli):
    logs = write_log(tmp_path / "log.jsonl", 20)  # 40 LM calls (two questions a session)
    with RevokedAfter(stub.url.removesuffix("/v1"), good=1 + 6) as proxy:  # the preflight and 6 calls pass
        url = proxy.url + "/v1"
        done = cli.calibrator(*extract_args(logs, tmp_path / "out.jsonl", url, tmp_path / "cache", "--concurrency", "2"))
    assert done.code == 1, done.err
    [line] = [l for l in done.err.splitlines() if l.startswith("error:")]
    assert f"--lm openai-compatible:stub@{url}: HTTP 401: the API key was refused (the backend refuses every call)" in line
    assert f"({proxy.forwarded - 1} made by this run)" in line and proxy.forwarded == 7
    assert 1 <= proxy.injected <= 2  # the calls in flight when it opened (concurrency 2), not one per remaining row
    assert len(cached(tmp_path / "cache")) == 6  # every answer before the key was revoked is kept
    assert not (tmp_path / "out.jsonl").exists()

