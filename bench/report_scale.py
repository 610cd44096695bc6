"""How the HTML report scales: file size and time to load in headless Chromium, 1,000 test examples vs 20.

    .venv/bin/python bench/report_scale.py [--n 1000]

Run folders are written by the real scoring/writing code with made-up predictions (tests/support/synthetic_run.py);
load time is the Navigation Timing load event in Debian's chromium (tests/support/browser.py), median of 3 opens.
Every example has a 12-line context of ~90-character turns by default (--turns), the history the
extractor reads. Goal: under 5 MB and under 2 s at 1,000 examples.
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from support.browser import chromium_available, open_page  # noqa: E402
from support.synthetic_run import make_run  # noqa: E402


def measure(parent: Path, component: str, n: int, turns: int) -> tuple[float, float, float]:
    started = time.perf_counter()
    folder = make_run(parent, component=component, n_test=n, n_val=max(12, n // 3), run_id=f"{component}-{n}", turns=turns)
    render = time.perf_counter() - started
    page = folder / "index.html"
    loads = [open_page(page).load_seconds for _ in range(3)]
    return page.stat().st_size / 1e6, statistics.median(loads), render


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="test examples in the large report (default: 1000)")
    parser.add_argument("--turns", type=int, default=12, help="context lines per example, ~90 characters each (default: 12)")
    args = parser.parse_args()
    if not chromium_available():
        print("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
        return 1
    print(f"{'component':<10}{'examples':>9}{'size MB':>9}{'load s':>8}{'write s':>9}{'size x':>8}{'load x':>8}")
    with tempfile.TemporaryDirectory() as tmp:
        for component in ("grader", "extractor"):
            small = measure(Path(tmp), component, 20, args.turns)
            large = measure(Path(tmp), component, args.n, args.turns)
            for n, (size, load, render) in ((20, small), (args.n, large)):
                print(f"{component:<10}{n:>9}{size:>9.3f}{load:>8.3f}{render:>9.2f}{size / small[0]:>8.1f}{load / small[1]:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
