"""Persistent cache of LM calls: a finished run re-runs with zero calls, a killed one resumes.

SQLite in WAL mode, one connection per thread, each answer committed as it arrives, so a SIGKILL loses at most the
calls in flight. Several threads or processes may share one cache: before calling, a caller claims the key (a row
in `claims`); whoever finds it claimed waits for the answer instead of paying for it again. A claim left by a killed
process (its pid is gone) or older than `stale_after` is taken over.
"""

import hashlib
import json
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

HOST = socket.gethostname()


def cache_key(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CallCache:
    def __init__(self, path: Path, *, stale_after: float = 900.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.stale_after = stale_after
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        db = self._db()
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, since REAL NOT NULL)")

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across a killed process, fewer fsyncs
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._db().execute("SELECT answer FROM calls WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, answer: dict[str, Any]) -> None:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, json.dumps(answer)))
        db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))
        db.execute("COMMIT")

    def claim(self, key: str) -> bool:
        """True when this cache now owns the call for `key`; False while a live owner elsewhere is making it."""
        db = self._db()
        now = time.time()
        if db.execute("INSERT OR IGNORE INTO claims VALUES (?, ?, ?)", (key, self.owner, now)).rowcount == 1:
            return True
        row = db.execute("SELECT owner, since FROM claims WHERE key = ?", (key,)).fetchone()
        if row is None:
            return self.claim(key)  # released between the two statements
        owner, since = row
        host, pid, _ = owner.split(":", 2)
        abandoned = (host == HOST and not _alive(int(pid))) or now - since > self.stale_after
        if owner == self.owner or abandoned:
            return db.execute("UPDATE claims SET owner = ?, since = ? WHERE key = ? AND owner = ?",
                              (self.owner, now, key, owner)).rowcount == 1
        return False

    def release(self, key: str) -> None:
        """Give up a claim without an answer (the call failed): a waiting caller may then try it."""
        self._db().execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def claimed(self, key: str) -> bool:
        return self._db().execute("SELECT 1 FROM claims WHERE key = ?", (key,)).fetchone() is not None

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        if connections:
            connections[0].execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
        for db in connections:
            db.close()
