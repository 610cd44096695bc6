"""What the extraction tests share: expert logs written as a user's file, `extract`'s arguments against a server on
127.0.0.1, samples to extract in-process and an LM that dies mid-run like a killed process, and what a cache holds."""

import json
import sqlite3
from pathlib import Path

from dspy.utils.dummies import DummyLM

from calibrator.expert_logs.logs import Message, Sample
from support import ROOT


def write_log(path: Path, n: int) -> Path:
    """n sessions of 2 questions and a final answer: 3 samples each (2 continue, 1 stop)."""
    lines = []
    for i in range(n):
        messages = [{"role": "user", "content": f"I have had a headache for {i + 1} days"},
                    {"role": "assistant", "content": "Do you have a fever?"}, {"role": "user", "content": "No" if i % 2 else "A mild one"},
                    {"role": "assistant", "content": "Any allergies?"}, {"role": "user", "content": f"Penicillin ({i})"},
                    {"role": "assistant", "content": "Take paracetamol and rest."}]
        lines.append(json.dumps({"session_id": f"s{i:04d}", "messages": messages}))
    path.write_text("\n".join(lines) + "\n")
    return path


def extract_args(logs: Path, out: Path, url: str, cache: Path, *extra: str) -> list[str]:
    return ["extract", "--logs", str(logs), "--out", str(out), "--prompt", str(ROOT / "prompts/extractor.yaml"),
            "--lm", f"openai-compatible:stub@{url}", "--cache-dir", str(cache), "--no-progress", *extra]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def cached(cache: Path) -> list[tuple]:
    """Every row of the call cache in `cache`, in key order."""
    with sqlite3.connect(cache / "lm-calls.sqlite") as db:
        return db.execute("SELECT * FROM calls ORDER BY key").fetchall()


def samples(n: int) -> list[Sample]:
    """n `continue` samples and one `stop` sample (no LM call) at the end."""
    out = []
    for i in range(n):
        context = [Message(role="user", content=f"I have had a cough for {i} days")]
        future = [Message(role="assistant", content="Any allergies?"), Message(role="user", content="none")]
        out.append(Sample(id=f"s{i}_0", session_id=f"s{i}", context=context, future=future, decision="continue"))
    out.append(Sample(id="s_stop_1", session_id="s_stop", context=out[0].context,
                      future=[Message(role="assistant", content="<med_search>")], decision="stop"))
    return out


class Dies(DummyLM):
    """Answers like an LM, then dies like a killed process after `calls` answers."""

    def __init__(self, calls: int):
        super().__init__([{"decision": "continue", "target_info": ["allergies: none"]}] * 100)
        self.left, self.made = calls, 0

    def forward(self, *args, **kwargs):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        self.made += 1
        return super().forward(*args, **kwargs)
