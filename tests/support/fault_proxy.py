"""A real HTTP proxy on 127.0.0.1 in front of a real LM server that injects what APIs do under load: the first
`fail_first` requests answered with `status`, then a `storm` share of requests answered 429 with `Retry-After`
(drawn from a seeded generator, so a run is repeatable). Everything else is forwarded unchanged and recorded as
(path, request, response); `seen`, `injected` and `forwarded` count what crossed the wire."""

import http.server
import json
import random
import threading
import urllib.request


class FaultProxy:
    def __init__(self, upstream: str, *, fail_first: int = 0, status: int = 503, storm: float = 0.0,
                 retry_after: str | None = "0.05", seed: int = 0) -> None:
        self.upstream, self.fail_first, self.status, self.storm, self.retry_after = upstream, fail_first, status, storm, retry_after
        self.seen = self.injected = self.forwarded = 0
        self.exchanges: list[tuple[str, dict, dict]] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fail = owner._decide()
                if fail is not None:
                    self._send(fail, json.dumps({"error": {"message": "injected", "type": "rate_limit_error"}}).encode(),
                               {"Retry-After": owner.retry_after} if owner.retry_after is not None else {})
                    return
                req = urllib.request.Request(owner.upstream + self.path, data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=300) as r:
                    payload = r.read()
                with owner._lock:
                    owner.forwarded += 1
                    owner.exchanges.append((self.path, json.loads(body), json.loads(payload)))
                self._send(200, payload, {})

            def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

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

    def __enter__(self) -> "FaultProxy":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
