"""Persistent cache of LM calls: a finished run re-runs with zero calls, a killed one resumes.

SQLite in WAL mode, a connection per concurrent caller (pooled, so short-lived worker threads do not pile up open
files), each answer committed as it arrives, so a SIGKILL loses at most the
calls in flight. Several threads or processes may share one cache: before calling, a caller claims the key (a row
in `claims`); whoever finds it claimed waits for the answer instead of paying for it again. A claim left by a killed
process (its pid is gone) or older than `stale_after` is taken over.
"""

import hashlib
import json
import os
import queue
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _write(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, its lock taken up front (waiting out other writers), committed or rolled back."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")  # never hand a connection holding the write lock back to the pool
        raise
    db.execute("COMMIT")


class CallCache:
    def __init__(self, path: Path, *, stale_after: float = 900.0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.stale_after = stale_after
        self.owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._idle: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self.opened = 0  # connections made: as many as callers ever used the cache at once
        self._lock = threading.Lock()
        self._closed = False
        self._create()

    def _create(self, patience: float = 60.0) -> None:
        """WAL mode and the tables, safe when several processes open a new cache at the same moment.

        Switching to WAL upgrades a read lock to an exclusive one, and SQLite answers "database is locked" at once,
        without its busy timeout, when two connections race for that upgrade; so the loser waits and tries again.
        """
        deadline = time.monotonic() + patience
        while True:
            try:
                with self._db() as db:
                    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                        db.execute("PRAGMA journal_mode=WAL")
                    with _write(db):
                        db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, answer TEXT NOT NULL)")
                        db.execute("CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, "
                                   "since REAL NOT NULL)")
                return
            except sqlite3.OperationalError as err:
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.01, 0.1))

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        """An idle connection, or a new one: as many exist as callers ever used the cache at once."""
        try:
            db = self._idle.get_nowait()
        except queue.Empty:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=60, check_same_thread=False)
            db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode: durable across a killed process, fewer fsyncs
            with self._lock:
                self.opened += 1
        try:
            yield db
        finally:
            with self._lock:
                closed = self._closed
                if not closed:
                    self._idle.put(db)
            if closed:  # the cache closed while this caller (an abandoned worker) was using it: close it now, here
                db.close()

    def get(self, key: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT answer FROM calls WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, answer: dict[str, Any]) -> None:
        with self._db() as db, _write(db):
            db.execute("INSERT OR REPLACE INTO calls VALUES (?, ?)", (key, json.dumps(answer)))
            db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def claim(self, key: str) -> bool:
        """True when this cache now owns the call for `key`; False while a live owner elsewhere is making it."""
        now = time.time()
        with self._db() as db:
            if db.execute("INSERT OR IGNORE INTO claims VALUES (?, ?, ?)", (key, self.owner, now)).rowcount == 1:
                return True
            row = db.execute("SELECT owner, since FROM claims WHERE key = ?", (key,)).fetchone()
            if row is not None:
                owner, since = row
                host, pid, _ = owner.split(":", 2)
                abandoned = (host == HOST and not _alive(int(pid))) or now - since > self.stale_after
                if owner != self.owner and not abandoned:
                    return False
                return db.execute("UPDATE claims SET owner = ?, since = ? WHERE key = ? AND owner = ?",
                                  (self.owner, now, key, owner)).rowcount == 1
        return self.claim(key)  # released between the two statements: try again

    def release(self, key: str) -> None:
        """Give up a claim without an answer (the call failed): a waiting caller may then try it."""
        with self._db() as db:
            db.execute("DELETE FROM claims WHERE key = ? AND owner = ?", (key, self.owner))

    def refresh(self, key: str) -> None:
        """Renew this cache's claim on `key` (before each attempt of a call), so it is never taken for abandoned."""
        with self._db() as db:
            db.execute("UPDATE claims SET since = ? WHERE key = ? AND owner = ?", (time.time(), key, self.owner))

    def close(self) -> None:
        """Close the idle connections; one still in use by a worker thread is closed by that thread when it is done
        (closing a SQLite connection under another thread's statement would crash the process)."""
        with self._lock:
            self._closed = True
        idle = []
        while True:
            try:
                idle.append(self._idle.get_nowait())
            except queue.Empty:
                break
        if idle:
            idle[0].execute("DELETE FROM claims WHERE owner = ?", (self.owner,))
        for db in idle:
            db.close()
