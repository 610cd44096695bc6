"""Where a GRPO step's time goes: generation, reward (the calibrated grader), update — and the reward's cost
as a ratio to generation, measured in the same run.

    .venv/bin/python bench/grpo_step.py [--steps 4] [--samples samples.jsonl] [--grader-lm SPEC]

Runs `python -m train run` (cpu-smoke config, no eval) into a temporary folder, with the grader's LM calls on an
empty call cache so the reward is paid as in a first run, and summarises its metrics.jsonl. The first step also pays
for warm-up, so it is reported apart from the median of the rest.
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("generation_seconds", "reward_seconds", "update_seconds", "step_seconds")


def _run(cmd: list[str]) -> bool:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        print(done.stderr[-3000:], file=sys.stderr)
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--samples", type=Path, help="samples.jsonl (default: the shipped example logs, extracted through the shared call cache)")
    parser.add_argument("--grader-lm", default="local")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        samples = args.samples
        if samples is None:  # through the shared call cache: extracted once, then read from it
            samples = tmp / "samples.jsonl"
            if not _run([sys.executable, "-m", "calibrator", "extract", "--logs", "train/examples/sessions.jsonl",
                         "--out", str(samples), "--no-progress"]):
                return 1
        # the grader's calls go to an empty call cache, so the reward is paid, not read back; the converted policy is
        # the shared one
        (tmp / "cache").mkdir()
        (ROOT / ".cache" / "models").mkdir(parents=True, exist_ok=True)
        (tmp / "cache" / "models").symlink_to(ROOT / ".cache" / "models", target_is_directory=True)
        config = tmp / "config.yaml"
        config.write_text((ROOT / "train/configs/cpu-smoke.yaml").read_text() + f"cache_dir: {tmp / 'cache'}\n")
        if not _run([sys.executable, "-m", "train", "run", "--config", str(config), "--max-steps", str(args.steps),
                     "--out", str(tmp / "run"), "--grader-lm", args.grader_lm, "--samples", str(samples),
                     "--no-eval"]):  # the steps are the measurement; the held-out eval would triple the bench
            return 1
        steps = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    print(f"{'step':>5}" + "".join(f"{p.removesuffix('_seconds'):>12}" for p in PARTS) + f"{'reward/gen':>12}{'reward':>9}")
    for s in steps:
        print(f"{s['step']:>5}" + "".join(f"{s[p]:>12.2f}" for p in PARTS)
              + f"{s['reward_seconds'] / max(s['generation_seconds'], 1e-9):>12.2f}{s['reward']:>9.2f}")
    rest = steps[1:] or steps
    med = {p: statistics.median(s[p] for s in rest) for p in PARTS}
    print(f"median of steps {rest[0]['step']}-{rest[-1]['step']}: " + ", ".join(f"{p.removesuffix('_seconds')} {med[p]:.2f} s" for p in PARTS)
          + f"; reward costs {med['reward_seconds'] / max(med['generation_seconds'], 1e-9):.2f}× generation")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
