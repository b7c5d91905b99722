"""The Delta log as files: which entries a reader relies on, which of them cannot be trusted, and
how a damaged entry is replaced without a gap.

deltalake reads a 0-byte commit entry as a commit with no actions, so a table whose latest entry
was truncated to nothing silently reads as less data. :func:`damaged_versions` finds such entries
among those a reader replays (the ones after the last checkpoint), so the catalog can refuse to
read them. Cost: one ``stat`` per entry after the last checkpoint locally (deltalake writes a
checkpoint every 100 commits, so at most ~100), one HEAD request for the latest entry on object
stores.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass

import fsspec

LOG_DIR = "_delta_log"
CORRUPT_DIR = "_corrupt"


@dataclass(frozen=True)
class LogEntry:
    """One commit entry (``NNNN.json``) of a Delta log."""

    version: int
    path: str
    size: int


def _is_local(fs: fsspec.AbstractFileSystem) -> bool:
    return "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,))


def entry_name(version: int) -> str:
    return f"{version:020d}.json"


def list_entries(fs: fsspec.AbstractFileSystem, log_dir: str) -> list[LogEntry]:
    """Every commit entry of the log, in version order (empty when the folder is missing)."""
    fs.invalidate_cache(log_dir)
    try:
        infos = fs.ls(log_dir, detail=True)
    except FileNotFoundError:
        return []
    out = []
    for info in infos:
        base = info["name"].rstrip("/").rsplit("/", 1)[-1]
        if info.get("type") == "file" and base.endswith(".json") and base[:-5].isdigit():
            out.append(LogEntry(int(base[:-5]), info["name"], int(info.get("size") or 0)))
    return sorted(out, key=lambda e: e.version)


def last_checkpoint(fs: fsspec.AbstractFileSystem, log_dir: str) -> int | None:
    """The version of the log's last checkpoint (``_last_checkpoint``), or None."""
    try:
        with fs.open(f"{log_dir}/_last_checkpoint", "rt") as fh:
            return int(json.loads(fh.read() or "{}").get("version"))
    except (FileNotFoundError, ValueError, TypeError):
        return None


def parse_problem(data: bytes) -> str | None:
    """Why a commit entry's bytes are not a valid commit (None: they are)."""
    if not data.strip():
        return "0 bytes" if not data else "blank"
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            action = json.loads(line)
        except json.JSONDecodeError as exc:
            return f"line {number} is not JSON ({exc.msg})"
        if not isinstance(action, dict) or len(action) != 1:
            return f"line {number} is not one Delta action"
    return None


def damaged_versions(fs: fsspec.AbstractFileSystem, log_dir: str, upto: int) -> list[int]:
    """Versions whose entry is 0 bytes (deltalake reads them as empty commits).

    Locally: every entry a reader replays, (last checkpoint, `upto`], one ``stat`` each. On object
    stores only the latest entry (one HEAD request per table load, where a truncated write would
    land); ``catalog check`` reads every replayed entry everywhere.
    """
    if not _is_local(fs):
        try:
            return [upto] if fs.size(f"{log_dir}/{entry_name(upto)}") == 0 else []
        except FileNotFoundError:
            return []
    start = (last_checkpoint(fs, log_dir) or -1) + 1
    bad = []
    for version in range(start, upto + 1):
        try:
            if os.stat(f"{log_dir}/{entry_name(version)}").st_size == 0:
                bad.append(version)
        except FileNotFoundError:
            continue
    return bad


def read_entry(fs: fsspec.AbstractFileSystem, log_dir: str, version: int) -> bytes:
    with fs.open(f"{log_dir}/{entry_name(version)}", "rb") as fh:
        return fh.read()


def overwrite_atomically(fs: fsspec.AbstractFileSystem, path: str, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old or the new bytes, never a gap.

    Locally: a temporary file renamed over the old one. On object stores a PUT replaces an object
    whole, so one ``pipe`` is atomic already.
    """
    if _is_local(fs):
        tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def replace_damaged_entry(
    fs: fsspec.AbstractFileSystem, log_dir: str, version: int, damaged: bytes, payload: bytes
) -> str:
    """Keep a copy of a damaged entry under ``_corrupt/`` (a name of its own), then put `payload`
    in its place; returns the copy's path.

    The entry is never absent, so no writer can commit into the gap. Only repairs ever replace an
    entry, and what one writes there is a valid commit, so a second repair that read the same
    damaged bytes overwrites a valid repair entry with an equivalent one, never a writer's commit.
    """
    fs.makedirs(f"{log_dir}/{CORRUPT_DIR}", exist_ok=True)
    copy = f"{log_dir}/{CORRUPT_DIR}/{entry_name(version)}.{uuid.uuid4().hex[:12]}"
    fs.pipe_file(copy, damaged)
    overwrite_atomically(fs, f"{log_dir}/{entry_name(version)}", payload)
    return copy


def repair_entry(timestamp_ms: int, note: dict) -> bytes:
    """A commit entry with no data actions whose history line records a repair."""
    info = {
        "timestamp": int(timestamp_ms),
        "operation": "egocurate repair",
        "operationParameters": {},
        "egocurate.operation": "repair",
        "egocurate.repair": json.dumps(note, sort_keys=True),
    }
    return (json.dumps({"commitInfo": info}, sort_keys=True) + "\n").encode()
