"""Servers on 127.0.0.1 written for the tests: a threaded HTTP server run on a daemon thread for a `with` block, and
the JSON reply every one of them sends."""

import http.server
import json
import threading
from typing import Any


def send_json(handler: http.server.BaseHTTPRequestHandler, status: int, body: bytes | dict | list,
              headers: dict[str, str] | None = None) -> None:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(payload)))
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(payload)


class Quiet(http.server.BaseHTTPRequestHandler):
    """A handler that logs nothing to stderr."""

    def log_message(self, *_: Any) -> None:
        pass


class ThreadedServer:
    """`with Sub(...) as server:` serves `handler` on a free port of 127.0.0.1 until the block ends; `url` ends in /v1."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
