"""What the tests share: the repository root, the CLI runners, the servers and the row writers. Not a test module;
fixtures built on it live in tests/conftest.py."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

QUICK_LOOP = False  # the run selects -m "not slow": set by tests/conftest.py before any test module is imported


def examples(n: int) -> int:
    """A property's Hypothesis examples: `n` in the full suite (CI runs it), a quarter, at least 10, in the quick loop."""
    return max(10, n // 4) if QUICK_LOOP else n
