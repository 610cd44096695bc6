"""The LM engine at concurrency 1 vs 8 vs 32 against an API-like backend, and the embedded server's slots.

    .venv/bin/python bench/engine_concurrency.py [--record]

1. Recording (once; `--record` redoes it): 250 generated sessions (bench/corpus.py) are extracted on the real embedded
   model through the project's own engine; every (request, answer) is saved to bench/recordings/extract-500.jsonl.gz,
   with the embedded model's output file for comparison.
2. Replay: bench/replay_server.py answers those very requests on 127.0.0.1 with 250-750 ms of latency per call and
   5% of calls answered 429 with `Retry-After: 1`, with unlimited parallel capacity, like an API. The same 500
   extraction calls run at --concurrency 1, 8 and 32, each with an empty call cache: wall time, calls/s, 429s seen,
   retries, lost and duplicated samples, and whether the output is byte-identical to the sequential run's and (but
   for the `lm` stamp) to the embedded model's own output.
3. The embedded server itself: the first 24 of those extraction calls at 1 slot / concurrency 1 vs 2 slots /
   concurrency 2, as a ratio (the machine's CPU is the limit there, not the client).
"""

import argparse
import gzip
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import dspy
import openai

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
from replay_server import ReplayServer, load_recording, request_key  # noqa: E402

from calibrator.components.extract import extract_stream  # noqa: E402
from calibrator.lm import CallPolicy, LMSpec, open_lm  # noqa: E402
from calibrator.lm.adapter import CompactJSONAdapter  # noqa: E402
from calibrator.expert_logs.logs import Session, segment  # noqa: E402
from calibrator.prompt import load_prompt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECORDING = ROOT / "bench" / "recordings" / "extract-500.jsonl.gz"
EMBEDDED_OUT = ROOT / "bench" / "recordings" / "extract-500.embedded.jsonl.gz"
PROMPT = ROOT / "prompts" / "extractor.yaml"


def samples() -> list:
    return [(i, s) for i, raw in enumerate(corpus.sessions(corpus.TEMPLATES)) for s in segment(Session.model_validate(raw))]


class RecordingWire:
    """The engine's wire, with every request and answer kept: the replay server's script. An HTTP error is kept too
    (llama.cpp answers 500 for some requests whose output breaks its own JSON format), so the replay fails where
    the embedded model failed."""

    def __init__(self, wire) -> None:
        self.wire, self.records = wire, []
        self.supports_response_schema, self.supports_logprobs = wire.supports_response_schema, wire.supports_logprobs

    def chat(self, messages, params):
        key = request_key(messages, params.get("response_format"))
        try:
            answer = self.wire.chat(messages, params)
        except openai.APIStatusError as e:
            self.records.append({"key": key, "answer": {"error": {"status": e.status_code, "message": str(e.message)}}})
            raise
        if params.get("max_tokens") != 1:
            self.records.append({"key": key, "answer": answer.model_dump()})
        return answer

    def close(self) -> None:
        self.wire.close()


def record(prompt) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "samples.jsonl"
        started = time.perf_counter()
        with open_lm(LMSpec.parse("local"), cache_dir=Path(tmp), policy=CallPolicy(concurrency=1)) as lm, \
                dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            recorder = lm.engine.wire = RecordingWire(lm.engine.wire)
            summary = extract_stream(samples(), prompt, LMSpec.parse("local"), out)
        RECORDING.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(RECORDING, "wt", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in recorder.records)
        with gzip.open(EMBEDDED_OUT, "wt", encoding="utf-8") as f:
            f.write(out.read_text(encoding="utf-8"))
    print(f"recorded {len({r['key'] for r in recorder.records})} embedded-model answers ({summary.extracted} extraction calls, "
          f"{summary.failed} failed) in {time.perf_counter() - started:.0f} s -> {RECORDING.relative_to(ROOT)}")


def strip_lm(text: str) -> list[dict]:
    """Records as the embedded run and a replay both wrote them: the `lm` stamp and the error's wording (which names
    the backend) aside; whether a sample failed stays."""
    return [{k: (v is not None if k == "error" else v) for k, v in json.loads(line).items() if k != "lm"} for line in text.splitlines()]


def run_at(url: str, concurrency: int, prompt, work: Path) -> dict:
    out = work / f"c{concurrency}.jsonl"
    spec = LMSpec.parse(f"openai-compatible:smollm2@{url}")
    started = time.perf_counter()
    with open_lm(spec, cache_dir=work / f"cache{concurrency}", policy=CallPolicy(concurrency=concurrency)) as lm, \
            dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
        summary = extract_stream(samples(), prompt, spec, out, concurrency=concurrency)
        usage = lm.usage()
        cuts = lm.engine.window.cuts
    seconds = time.perf_counter() - started
    records = [json.loads(line) for line in out.read_text().splitlines()]
    ids = [r["id"] for r in records]
    expected = [s.id for _, s in samples()]
    return {"concurrency": concurrency, "seconds": seconds, "calls": usage.lm_calls, "calls_per_s": usage.lm_calls / seconds,
            "throttled": usage.throttled, "retries": usage.retries, "failed": summary.failed, "window_cuts": cuts,
            "lost": len(set(expected) - set(ids)) + sum(r["error"] is not None for r in records),
            "duplicated": len(ids) - len(set(ids)), "text": out.read_text()}


def embedded_slots(prompt, n: int) -> list[tuple[int, float]]:
    rows = []
    subset = [s for s in samples() if s[1].decision == "continue"][:n]
    for slots in (1, 2):
        with tempfile.TemporaryDirectory() as tmp, \
                open_lm(LMSpec.parse("local"), cache_dir=Path(tmp), policy=CallPolicy(concurrency=slots)) as lm, \
                dspy.context(lm=lm.lm, adapter=CompactJSONAdapter()):
            lm.engine.wire.chat([{"role": "user", "content": "Hello"}], {"max_tokens": 1})  # warm-up: page the weights in
            started = time.perf_counter()
            extract_stream(subset, prompt, LMSpec.parse("local"), Path(tmp) / "out.jsonl", concurrency=slots)
            rows.append((slots, time.perf_counter() - started))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--record", action="store_true", help="record the embedded model's answers again")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32], help="concurrency levels (default 1 8 32)")
    ap.add_argument("--embedded-calls", type=int, default=24, help="extraction calls for the embedded slots ratio (0: skip)")
    args = ap.parse_args()
    prompt = load_prompt(PROMPT)
    if args.record or not RECORDING.is_file():
        record(prompt)
    answers = load_recording(RECORDING)
    embedded = strip_lm(gzip.open(EMBEDDED_OUT, "rt", encoding="utf-8").read())
    work = Path(tempfile.mkdtemp(prefix="engine-bench-"))
    results = []
    try:
        with ReplayServer(answers, latency=(0.25, 0.75), throttle=0.05, retry_after=1.0, seed=0) as server:
            for level in args.levels:
                results.append(run_at(server.url, level, prompt, work))
                r = results[-1]
                print(f"  concurrency {level:>2}: {r['seconds']:.1f} s, {r['calls']} calls, {r['throttled']} throttled", flush=True)
            unmatched = server.unmatched
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = results[0]
    print(f"\n{len(samples())} samples ({base['calls']} extraction calls) per level; replayed embedded-model answers, "
          f"250-750 ms latency, 5% 429 + Retry-After 1 s; unmatched requests: {unmatched}")
    print(f"{'concurrency':>11}{'seconds':>9}{'calls/s':>9}{'speed-up':>10}{'429s':>6}{'retries':>8}{'cuts':>6}{'lost':>6}"
          f"{'dup':>5}  same output as sequential / as embedded")
    for r in results:
        same = r["text"] == base["text"]
        as_embedded = strip_lm(r["text"]) == embedded
        print(f"{r['concurrency']:>11}{r['seconds']:>9.1f}{r['calls_per_s']:>9.2f}{base['seconds'] / r['seconds']:>9.1f}x"
              f"{r['throttled']:>6}{r['retries']:>8}{r['window_cuts']:>6}{r['lost']:>6}{r['duplicated']:>5}  {same} / {as_embedded}")
    if args.embedded_calls:
        rows = embedded_slots(prompt, args.embedded_calls)
        one = rows[0][1]
        print(f"\nembedded SmolLM2-135M (llama.cpp, this machine's CPU), {args.embedded_calls} extraction calls:")
        for slots, seconds in rows:
            print(f"  {slots} slot(s), concurrency {slots}: {seconds:.1f} s, {args.embedded_calls / seconds:.2f} calls/s, "
                  f"{one / seconds:.2f}x of one slot")


if __name__ == "__main__":
    main()
