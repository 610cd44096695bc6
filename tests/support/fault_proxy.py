"""A real HTTP proxy on 127.0.0.1 in front of a real LM server that injects what APIs do under load: the first
`fail_first` requests answered with `status`, then a `storm` share of requests answered 429 with `Retry-After`
(drawn from a seeded generator, so a run is repeatable). Everything else is forwarded unchanged and recorded as
(path, request, response); `seen`, `injected` and `forwarded` count what crossed the wire."""

import json
import random
import threading
import urllib.request

from support.http import Quiet, ThreadedServer, send_json


class FaultProxy(ThreadedServer):
    def __init__(self, upstream: str, *, fail_first: int = 0, status: int = 503, storm: float = 0.0,
                 retry_after: str | None = "0.05", seed: int = 0) -> None:
        self.upstream, self.fail_first, self.status, self.storm, self.retry_after = upstream, fail_first, status, storm, retry_after
        self.seen = self.injected = self.forwarded = 0
        self.exchanges: list[tuple[str, dict, dict]] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        owner = self

        class Handler(Quiet):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fail = owner._decide()
                if fail is not None:
                    send_json(self, fail, {"error": {"message": "injected", "type": "rate_limit_error"}},
                              {"Retry-After": owner.retry_after} if owner.retry_after is not None else {})
                    return
                req = urllib.request.Request(owner.upstream + self.path, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=300) as r:
                    payload = r.read()
                with owner._lock:
                    owner.forwarded += 1
                    owner.exchanges.append((self.path, json.loads(body), json.loads(payload)))
                send_json(self, 200, payload)

        super().__init__(Handler)
        self.url = f"http://127.0.0.1:{self.port}"

    def _decide(self) -> int | None:
        with self._lock:
            self.seen += 1
            if self.seen <= self.fail_first:
                self.injected += 1
                return self.status
            if self.storm and self._random.random() < self.storm:
                self.injected += 1
                return 429
            return None
