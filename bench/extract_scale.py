"""`extract` at corpus scale: peak memory at 10k, 50k and 200k sessions, and a kill -9 mid-run then resume.

    .venv/bin/python bench/extract_scale.py [--sizes 10000 50000 200000]

Each corpus is generated in RealMedConv format (bench/corpus.py: 3 samples a session, 2 of them LM calls) and run
through the real `python -m calibrator extract` command at --concurrency 32 against bench/replay_server.py (the
embedded model's recorded answers, 250-750 ms latency, 5% 429s; run bench/engine_concurrency.py once first to
record them). Sessions repeat the templates under their own ids (only the templates whose every sample the embedded
model answered in the recording: a sample it failed is retried, with backoff, every time it recurs, which would make
this a bench of retries), so after the first few hundred calls the call cache answers:
the figures are the pipeline's (reading, segmenting, the DSPy program, the cache, the partial file, the index, the
ordered output), not the model's. Peak RSS is the child process's own (`wait4`), so runs do not mask each other.
Then the smallest size is run again, killed with SIGKILL part-way, and resumed: the output must hold every sample once,
in log order, each with its template's target.
"""

import argparse
import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import corpus  # noqa: E402
from engine_concurrency import EMBEDDED_OUT, RECORDING  # noqa: E402
from replay_server import ReplayServer, load_recording  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def command(logs: Path, out: Path, url: str, cache: Path) -> list[str]:
    return [sys.executable, "-m", "calibrator", "extract", "--logs", str(logs), "--out", str(out), "--prompt",
            str(ROOT / "prompts/extractor.yaml"), "--lm", f"openai-compatible:smollm2@{url}", "--concurrency", "32",
            "--cache-dir", str(cache), "--no-progress"]


def run(cmd: list[str], kill_when: Path | None = None, kill_at: int = 0) -> tuple[int, float, float, str]:
    """(exit status, wall seconds, peak RSS in MB, stdout); with kill_when, SIGKILL once that file has kill_at lines."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    if kill_when is not None:
        while proc.poll() is None:
            if kill_when.exists() and sum(1 for _ in open(kill_when, "rb")) >= kill_at:
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.5)
    stdout = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024, stdout


def answered_templates() -> list[int]:
    """Templates whose every sample the embedded model answered in the recording run."""
    failed = {json.loads(line)["session_index"] for line in gzip.open(EMBEDDED_OUT, "rt", encoding="utf-8")
              if json.loads(line)["error"] is not None}
    return [t for t in range(corpus.TEMPLATES) if t not in failed]


def check(out: Path, n: int, templates: list[int], targets: dict[int, list[str]] | None) -> dict[int, list[str]]:
    """Every sample once, in log order, no error; each continue sample's target equal to its template's."""
    expected = ((f"b{i:07d}_{k}", i) for i in range(n) for k in range(3))
    seen: dict[int, list[str]] = {}
    count = 0
    with open(out, encoding="utf-8") as f:
        for line, (sample_id, i) in zip(f, expected):
            record = json.loads(line)
            count += 1
            assert record["id"] == sample_id and record["error"] is None, (sample_id, record["id"], record["error"])
            key = templates[i % len(templates)] * 3 + int(sample_id[-1])
            seen.setdefault(key, record["target_info"])
            if targets is not None:
                assert targets.get(key, record["target_info"]) == record["target_info"], sample_id
    assert count == 3 * n, (count, 3 * n)
    return seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000])
    args = ap.parse_args()
    if not RECORDING.is_file():
        sys.exit(f"no recording at {RECORDING}: run bench/engine_concurrency.py once first")
    targets = None
    rows = []
    templates = answered_templates()
    with tempfile.TemporaryDirectory(prefix="extract-scale-") as tmp, \
            ReplayServer(load_recording(RECORDING), latency=(0.25, 0.75), throttle=0.05, retry_after=1.0) as server:
        work = Path(tmp)
        for n in args.sizes:
            logs = corpus.write(work / f"corpus{n}.jsonl", n, templates)
            out = work / f"samples{n}.jsonl"
            code, seconds, rss, _ = run(command(logs, out, server.url, work / f"cache{n}"))
            assert code == 0, f"extract exited {code} on {n} sessions"
            targets = check(out, n, templates, targets)
            rows.append((n, seconds, rss, logs.stat().st_size / 1e6))
            print(f"  {n} sessions: {seconds:.0f} s, peak RSS {rss:.0f} MB", flush=True)
            out.unlink()
        k = args.sizes[0]
        logs, out = work / f"corpus{k}.jsonl", work / "resumed.jsonl"
        partial = work / "resumed.jsonl.partial"
        code, first_seconds, first_rss, _ = run(command(logs, out, server.url, work / "cache-kill"), kill_when=partial, kill_at=3 * k // 2)
        kept = sum(1 for _ in open(partial, "rb"))
        assert code == -signal.SIGKILL and not out.exists(), code
        code, resume_seconds, resume_rss, stdout = run(command(logs, out, server.url, work / "cache-kill"))
        assert code == 0
        check(out, k, templates, targets)
        unmatched = server.unmatched
    print(f"\nextract --concurrency 32 against replayed embedded-model answers (250-750 ms, 5% 429s); {len(templates)} session "
          f"templates; unmatched requests: {unmatched}")
    print(f"{'sessions':>9}{'samples':>9}{'log MB':>8}{'seconds':>9}{'samples/s':>11}{'peak RSS MB':>13}")
    for n, seconds, rss, size in rows:
        print(f"{n:>9}{3 * n:>9}{size:>8.1f}{seconds:>9.0f}{3 * n / seconds:>11.0f}{rss:>13.0f}")
    print(f"\nkill -9 at {kept} of {3 * k} samples written ({first_seconds:.0f} s in, peak RSS {first_rss:.0f} MB); resumed in "
          f"{resume_seconds:.0f} s, peak RSS {resume_rss:.0f} MB: all {3 * k} samples once, in log order, targets as in the "
          "uninterrupted run")
    print("  " + next(line for line in stdout.splitlines() if line.startswith(f"{k} sessions")))


if __name__ == "__main__":
    main()
