"""An API-like backend on 127.0.0.1 for the scale benches: an OpenAI chat-completions server that replays answers
recorded from the real embedded model for the same requests, with API-like latency and a share of 429s.

Like a real API it has effectively unlimited parallel capacity (one thread per connection, latency is a sleep), so a
bench measures the client engine, not this machine's CPU. A request it has no recording for gets HTTP 500 and is
counted (`unmatched`): a bench that sees any has measured something else than it says.
"""

import gzip
import hashlib
import http.server
import json
import random
import threading
import time
from pathlib import Path
from typing import Any


def request_key(messages: list[dict[str, str]], response_format: Any) -> str:
    return hashlib.sha256(json.dumps({"messages": messages, "response_format": response_format}, sort_keys=True).encode()).hexdigest()


def load_recording(path: Path) -> dict[str, dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return {r["key"]: r["answer"] for r in map(json.loads, f)}


class ReplayServer:
    def __init__(self, answers: dict[str, dict], *, latency: tuple[float, float] = (0.0, 0.0), throttle: float = 0.0,
                 retry_after: float = 1.0, seed: int = 0) -> None:
        self.answers, self.latency, self.throttle, self.retry_after = answers, latency, throttle, retry_after
        self.requests = self.throttled = self.unmatched = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as an API's load balancer does

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner._lock:
                    owner.requests += 1
                    throttle = owner._random.random() < owner.throttle
                    delay = owner._random.uniform(*owner.latency)
                    owner.throttled += throttle
                time.sleep(delay)
                if throttle:
                    self._send(429, {"error": {"message": "rate limited (injected)", "type": "rate_limit_exceeded"}},
                               {"Retry-After": f"{owner.retry_after:g}"})
                    return
                if body.get("max_tokens") == 1:  # the engine's preflight
                    answer = {"text": "OK", "prompt_tokens": 5, "completion_tokens": 1}
                else:
                    answer = owner.answers.get(request_key(body["messages"], body.get("response_format")))
                if answer is None:
                    with owner._lock:
                        owner.unmatched += 1
                    self._send(500, {"error": {"message": "no recorded answer for this request"}}, {})
                    return
                if "error" in answer:  # the embedded server failed this request: so does the replay
                    self._send(answer["error"]["status"], {"error": {"message": answer["error"]["message"]}}, {})
                    return
                self._send(200, {"id": "replay", "object": "chat.completion", "created": 0, "model": body.get("model", "replay"),
                                 "choices": [{"index": 0, "finish_reason": answer.get("finish_reason", "stop"),
                                              "message": {"role": "assistant", "content": answer["text"]}}],
                                 "usage": {"prompt_tokens": answer["prompt_tokens"], "completion_tokens": answer["completion_tokens"],
                                           "total_tokens": answer["prompt_tokens"] + answer["completion_tokens"]}}, {})

            def _send(self, status: int, payload: dict, headers: dict[str, str]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.request_queue_size = 256
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/v1"

    def __enter__(self) -> "ReplayServer":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *_: Any) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
