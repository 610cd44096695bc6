"""A fast OpenAI-compatible server on 127.0.0.1 that answers every chat request with a valid instance of the
JSON schema it was sent (labels picked by a hash of the messages, so different rows get different answers),
and a fenced instruction when no schema was sent (GEPA's reflection); asked for token log-probabilities, it sends them
(`token_logprobs`). It exercises the real client, cache,
DSPy adapters and optimizers at full budget sizes in seconds; the embedded model proves the answers themselves."""

import collections
import hashlib
import json
import math
import re
import threading
import time
from typing import Any

from support.http import Quiet, ThreadedServer, send_json


def instance(schema: dict[str, Any], defs: dict[str, Any], seed: int) -> Any:
    """A small valid value for `schema`; `seed` picks among enum values."""
    if "$ref" in schema:
        return instance(defs[schema["$ref"].split("/")[-1]], defs, seed)
    for key in ("anyOf", "oneOf", "allOf"):
        if key in schema:
            return instance(schema[key][0], defs, seed)
    if "enum" in schema:
        return schema["enum"][seed % len(schema["enum"])]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if kind == "object":
        return {name: instance(sub, defs, seed // 3 + i) for i, (name, sub) in enumerate(schema.get("properties", {}).items())}
    if kind == "array":
        return [instance(schema.get("items", {}), defs, seed)] if seed % 2 and schema.get("items") else []
    if kind in ("number", "integer"):
        return 0
    if kind == "boolean":
        return False
    pattern = schema.get("pattern", "")
    if pattern.startswith("^(") and "|" in pattern:
        return pattern[2:].split("|")[0] + ": something"  # the first alternative of a `^(a|b|…): …` item pattern
    return "Judge each example by the rubric and answer with one label."


def token_logprobs(text: str, seed: int, top: int) -> dict[str, Any]:
    """`choices[0].logprobs` as llama.cpp and OpenAI send it: every digit is its own token whose alternatives are the
    digits 0-2 with probabilities drawn from `seed`, so a label read from them varies from row to row."""
    content = []
    for i, token in enumerate(re.findall(r"\d|\s+|[^\d\s]+", text)):
        if token.isdigit():
            weights = [1 + int(hashlib.sha256(f"{seed}:{i}:{d}".encode()).hexdigest()[:4], 16) % 7 for d in range(3)]
            alternatives = [(str(d), math.log(w / sum(weights))) for d, w in enumerate(weights)]
        else:
            alternatives = [(token, -0.01)]
        alternatives = sorted(alternatives, key=lambda a: -a[1])[:max(top, 1)]
        chosen = next((lp for t, lp in alternatives if t == token), -5.0)
        content.append({"token": token, "logprob": chosen, "bytes": None,
                        "top_logprobs": [{"token": t, "logprob": lp, "bytes": None} for t, lp in alternatives]})
    return {"content": content}


class SchemaServer(ThreadedServer):
    """`with SchemaServer() as server:` then `--lm openai-compatible:stub@{server.url}`; counts requests."""

    def __init__(self, *, logprobs: bool = True, delay: float = 0.0, hold_until: frozenset[str] = frozenset()) -> None:
        self.logprobs = logprobs  # False: ignore `logprobs` like a server that cannot give them
        self.delay = delay  # seconds before each answer, like an API's latency
        self.hold_until = hold_until  # user messages every answer waits for (60 s at most), so callers are known to overlap
        self._asked: set[str] = set()
        self._all_asked = threading.Condition()
        self.requests = 0
        self.logprob_requests = 0
        self.seen: collections.Counter[str] = collections.Counter()  # requests by a digest of their messages
        self._lock = threading.Lock()
        owner = self

        class Handler(Quiet):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner._lock:
                    owner.requests += 1
                    owner.seen[hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()] += 1
                with owner._all_asked:
                    owner._asked.update(m.get("content") for m in body["messages"] if m.get("role") == "user")
                    owner._all_asked.notify_all()
                    owner._all_asked.wait_for(lambda: owner.hold_until <= owner._asked, timeout=60)
                if owner.delay:
                    time.sleep(owner.delay)
                seed = int(hashlib.sha256(json.dumps(body["messages"]).encode()).hexdigest()[:8], 16)
                fmt = (body.get("response_format") or {}).get("json_schema")
                if fmt:
                    schema = fmt["schema"]
                    text = json.dumps(instance(schema, schema.get("$defs", {}), seed))
                else:
                    text = "```\nRead the target and the candidate, then answer with the label the rubric gives.\n```"
                choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                if body.get("logprobs") and owner.logprobs:
                    with owner._lock:
                        owner.logprob_requests += 1
                    choice["logprobs"] = token_logprobs(text, seed, body.get("top_logprobs") or 0)
                reply = {"id": "stub", "object": "chat.completion", "created": 0, "model": body.get("model", "stub"),
                         "choices": [choice],
                         "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}
                send_json(self, 200, reply)

        super().__init__(Handler)

    def reset(self) -> None:
        """As new: no delay, nothing held, log-probabilities on, nothing counted (the session's server between tests)."""
        with self._lock, self._all_asked:
            self.logprobs, self.delay, self.hold_until = True, 0.0, frozenset()
            self.requests = self.logprob_requests = 0
            self.seen.clear()
            self._asked.clear()
            self._all_asked.notify_all()  # a request still held by the last test's hold_until is let go
