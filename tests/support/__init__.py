"""What the tests share: the repository root, the CLI runners, the servers and the row writers. Not a test module;
fixtures built on it live in tests/conftest.py."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
