"""Splitting a log across processes or machines, and joining the pieces back.

A session belongs to shard `sha256(session_id) mod N` (numbered 1..N for people), so every process given the same
log and N agrees without talking to the others, and a session never lands in two shards. `extract --shard I/N`
writes its samples plus a manifest beside them; `extract merge` checks the manifests (one log, one prompt, one LM,
every shard once, every record in its own shard, counts as written) and joins the records back in log order.
"""

import hashlib
import heapq
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from calibrator.expert_logs.logs import Session


class ShardError(ValueError):
    """Shards that do not add up to one whole extraction; the message says which file and why."""


class Shard(BaseModel, frozen=True):
    index: int = Field(ge=1)  # 1..count
    count: int = Field(ge=1)

    @classmethod
    def parse(cls, text: str) -> "Shard":
        index, sep, count = text.partition("/")
        try:
            shard = cls(index=int(index), count=int(count)) if sep else None
        except (ValueError, ValidationError):
            shard = None
        if shard is None or shard.index > shard.count:
            raise ValueError(f"--shard {text!r}: expected I/N with 1 <= I <= N, e.g. 1/4")
        return shard

    def owns(self, session_id: str) -> bool:
        return shard_of(session_id, self.count) == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def shard_of(session_id: str, count: int) -> int:
    return int.from_bytes(hashlib.sha256(session_id.encode()).digest()[:8], "big") % count + 1


class Selection(BaseModel, frozen=True):
    """Which sessions of a log this invocation extracts: its shard, a list of ids, and at most `limit` of them."""

    shard: Shard | None = None
    sessions: frozenset[str] | None = None
    limit: int | None = Field(None, ge=1)

    def pick(self, sessions: Iterable[Session]) -> Iterator[tuple[int, Session]]:
        """(position in the log, session) for the selected sessions, lazily; positions count every valid session, so
        they are the same in every shard and order a merge."""
        taken = 0
        for position, session in enumerate(sessions):
            if self.limit is not None and taken >= self.limit:
                return
            if self.shard is not None and not self.shard.owns(session.session_id):
                continue
            if self.sessions is not None and session.session_id not in self.sessions:
                continue
            taken += 1
            yield position, session


def read_session_ids(path: Path) -> frozenset[str]:
    """`--sessions FILE`: one session id per line; blank lines and lines starting with # are ignored."""
    if not path.is_file():
        raise ValueError(f"--sessions {path}: no such file")
    ids = frozenset(s for line in path.read_text(encoding="utf-8-sig").splitlines() if (s := line.strip()) and not s.startswith("#"))
    if not ids:
        raise ValueError(f"--sessions {path}: no session ids in it (one per line)")
    return ids


class Manifest(BaseModel):
    """What one `extract` wrote, beside its samples (`<out>.manifest.json`): enough for `merge` to prove the shards
    are one whole extraction."""

    logs: str
    logs_sha256: str
    shard: Shard | None
    limit: int | None
    sessions_file: str | None
    sessions: int  # selected sessions read
    samples: int  # records written
    prompt_sha256: str
    lm: str
    stop_rule: str = "end"  # calibrator.expert_logs.logs.STOP_RULES; manifests written before the option were all "end"
    context_cut: str = "history"  # calibrator.expert_logs.logs.CONTEXT_CUTS; likewise "history" before the option


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".manifest.json")


def file_sha256(path: Path) -> str:
    """The file's sha256; for a corpus folder (PriMock57), one over every file's relative path and content, in order."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()


def _records(path: Path) -> Iterator[tuple[int, dict]]:
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ShardError(f"{path}, line {number}: not a JSON record ({e}); re-run that shard's extract") from None
            if not isinstance(record, dict):
                raise ShardError(f"{path}, line {number}: not a JSON record (a {type(record).__name__}); re-run that shard's extract")
            yield number, record


def check_shards(paths: list[Path]) -> tuple[list[Manifest], list[str]]:
    """The shards' manifests, checked as a set; the warnings (e.g. a --limit shard) that do not stop a merge."""
    if not paths:
        raise ShardError("no shard files given")
    manifests: list[Manifest] = []
    for path in paths:
        mpath = manifest_path(path)
        if not path.is_file():
            raise ShardError(f"{path}: no such file")
        if not mpath.is_file():
            raise ShardError(f"{path}: no manifest beside it ({mpath.name}); was it written by `extract --shard I/N`, and did it finish?")
        try:
            manifests.append(Manifest.model_validate_json(mpath.read_text(encoding="utf-8")))
        except ValidationError as e:
            raise ShardError(f"{mpath}: not an extract manifest ({e.errors()[0]['msg']})") from None
    first = manifests[0]
    for path, m in zip(paths, manifests):
        if m.shard is None:
            raise ShardError(f"{path}: not a shard (extracted without --shard); nothing to merge it with")
        for field, what in (("logs_sha256", "log file"), ("prompt_sha256", "prompt"), ("lm", "LM"), ("stop_rule", "stop rule"),
                            ("context_cut", "context cut")):
            if getattr(m, field) != getattr(first, field):
                raise ShardError(f"{path}: made from another {what} than {paths[0]} ({getattr(m, field)[:16]} vs "
                                 f"{getattr(first, field)[:16]}); shards must share the log, the prompt, the LM and the "
                                 f"stop rule")
        if m.shard.count != first.shard.count:
            raise ShardError(f"{path}: shard {m.shard}, but {paths[0]} is shard {first.shard}: the shard counts differ")
    owners: dict[int, Path] = {}
    for path, m in zip(paths, manifests):
        if m.shard.index in owners:
            raise ShardError(f"shard {m.shard} given twice: {owners[m.shard.index]} and {path}")
        owners[m.shard.index] = path
    missing = sorted(set(range(1, first.shard.count + 1)) - owners.keys())
    if missing:
        raise ShardError(f"shard(s) {', '.join(f'{i}/{first.shard.count}' for i in missing)} missing: "
                         f"run `extract --shard I/{first.shard.count}` for each and pass every file")
    warnings = [f"{p}: extracted with --limit {m.limit}: the merge holds only that shard's first {m.limit} sessions"
                for p, m in zip(paths, manifests) if m.limit is not None]
    warnings += [f"{p}: extracted with --sessions {m.sessions_file}: the merge holds only those sessions"
                 for p, m in zip(paths, manifests) if m.sessions_file is not None]
    return manifests, warnings


def _checked(path: Path, manifest: Manifest) -> Iterator[tuple[int, str]]:
    """(session position, record line) of one shard file, checking each record against the shard as it streams."""
    last_position, ids_here, count = -1, set(), 0
    for number, record in _records(path):
        count += 1
        where = f"{path}, line {number}"
        session_id, position, sample_id = record.get("session_id"), record.get("session_index"), record.get("id", record.get("cid"))
        if not isinstance(session_id, str) or not isinstance(position, int) or not isinstance(sample_id, str):
            raise ShardError(f"{where}: a record without session_id, session_index or id; re-run that shard's extract")
        if record.get("error") is not None:
            raise ShardError(f"{where}: sample {sample_id!r} failed ({str(record['error'])[:80]}); run that shard's extract "
                             "again to retry it, then merge")
        if (record.get("prompt_sha256"), record.get("lm")) != (manifest.prompt_sha256, manifest.lm):
            raise ShardError(f"{where}: sample {sample_id!r} was made by another prompt or LM than its manifest says")
        if shard_of(session_id, manifest.shard.count) != manifest.shard.index:
            raise ShardError(f"{where}: session {session_id!r} belongs to shard {shard_of(session_id, manifest.shard.count)}/"
                             f"{manifest.shard.count}, not {manifest.shard}")
        if position < last_position:
            raise ShardError(f"{where}: out of log order (session position {position} after {last_position})")
        if position != last_position:
            last_position, ids_here = position, set()
        if sample_id in ids_here:
            raise ShardError(f"{where}: sample {sample_id!r} appears twice")
        ids_here.add(sample_id)
        yield position, json.dumps(record, ensure_ascii=False)
    if count != manifest.samples:
        raise ShardError(f"{path}: {count} records, but its manifest says {manifest.samples}: the file was cut or edited")


def merge_lines(paths: list[Path], manifests: list[Manifest]) -> Iterator[str]:
    """Every shard's records in log order (each shard is already in log order; sessions never span shards)."""
    streams = [_checked(p, m) for p, m in zip(paths, manifests)]
    for _, line in heapq.merge(*streams, key=lambda item: item[0]):
        yield line + "\n"
