"""The shard folder (``--out``) as a target: what a writer may create and delete there, and nothing else.

Containment rules (issue 23), each enforced here:

- A split becomes a folder name, so it must be one safe path segment (:func:`safe_split`).
- A writer creates only files named like its own (:data:`OWN_FILE`): ``<split>/shard-NNNNN-<run>.parquet``
  (``.partial`` while open), the manifest and its temporary name, and a marker ``.writer-<run>.json``
  that says "run <run> is still writing here" (host, pid and a heartbeat).
- Deletion never trusts a manifest's paths. After publishing, a writer lists the folder and deletes
  the files named like a shard (:data:`SHARD_FILE`) that the manifest *now* published does not list
  and whose run has no live marker; nothing else, and never through a link out of the folder. So
  two writers racing on one folder leave exactly the winner's shards once both exit, a killed
  writer's leftovers go with the next write, and a previous manifest listing ``../x`` deletes nothing.
- A previous manifest's paths are therefore ignored, not refused: the write replaces that manifest,
  and refusing would only block the folder without protecting anything. A ``manifest.json`` that is
  not an egocurate shard manifest at all (garbled, another tool's) is refused in one line: the
  folder is someone else's.
- A marker is live while its writer's pid runs (same host) or its heartbeat is younger than
  :data:`STALE_S` (another host); hosts sharing a folder must not share a hostname.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

import fsspec

from egocurate.shards.manifest import MANIFEST_NAME, Manifest, filesystem

RUN = r"[0-9a-f]{8}"
SPLIT = r"[a-z0-9][a-z0-9_.-]{0,63}"
SPLIT_NAME = re.compile(rf"^{SPLIT}$")
SHARD_FILE = re.compile(rf"^(?P<split>{SPLIT})/shard-\d{{5}}-(?P<run>{RUN})\.parquet(?P<partial>\.partial)?$")
MARKER_FILE = re.compile(rf"^\.writer-(?P<run>{RUN})\.json$")
MANIFEST_TMP = re.compile(rf"^\.{re.escape(MANIFEST_NAME)}\.(?P<run>{RUN})\.tmp$")
# Files a shard writer of ours creates (besides manifest.json): shards, markers, the manifest's temp name.
OWN_FILE = re.compile(
    "|".join(f"(?:{re.sub(r'[?]P<[a-z]+>', '', p.pattern)})" for p in (SHARD_FILE, MARKER_FILE, MANIFEST_TMP))
)

HEARTBEAT_S = 30.0  # a live writer rewrites its marker this often
STALE_S = 600.0  # a marker not rewritten for this long belongs to a writer that is gone


class ShardTargetError(ValueError):
    """The output folder holds files that are not a shard set of ours (a user error: one line)."""


class ShardSplitError(ShardTargetError):
    """A split name that cannot be a folder of the shard set (it would leave or garble ``--out``)."""


# ----------------------------------------------------------------------------- split names
def safe_split(name: str) -> str:
    """`name` itself if it can be a split folder, else :class:`ShardSplitError`.

    Why refuse rather than slug: a split is a name trainers select by (``data_split: val``,
    ``ShardDataset(split=...)``), so silently renaming ``Pick Up`` to ``pick_up`` breaks the loader
    far from the cause, and two names could merge into one. Hugging Face ``datasets`` refuses split
    names outside ``\\w+(\\.\\w+)*`` the same way. Allowed: lower-case letters, digits, ``_ . -``,
    starting with a letter or digit, at most 64 characters (``train``, ``val``, ``test``,
    ``train.clean``, ``held_out-2``); the split column's aliases (``validation`` -> ``val``) and
    lower-casing are applied before this check.
    """
    if isinstance(name, str) and SPLIT_NAME.match(name):
        return name
    raise ShardSplitError(
        f"{name!r} is not a safe split name: use lower-case letters, digits, '_', '.' or '-' "
        "(at most 64, starting with a letter or digit), such as train, val, test"
    )


def check_splits(splits: dict[str, list[Any]], where: dict[str, str] | None = None) -> None:
    """Refuse the write (before any file exists) when a split name is not :func:`safe_split`."""
    for split, members in splits.items():
        try:
            safe_split(split)
        except ShardSplitError as exc:
            source = f" (the split column of {len(members)} clip(s), e.g. {where[split]})" if where else ""
            raise ShardSplitError(f"{exc}{source}; fix the source manifest's split column") from None


# ----------------------------------------------------------------------------- the target folder
def _rel(base: str, path: str) -> str:
    return path.removeprefix(base.rstrip("/") + "/")


def read_own_manifest(out: str, storage_options: dict | None = None) -> Manifest | None:
    """The manifest published in `out` (None if there is none); a foreign or garbled one is an error."""
    fs, base = filesystem(out, storage_options)
    path = f"{base.rstrip('/')}/{MANIFEST_NAME}"
    if not fs.exists(path):
        return None
    try:
        data = json.loads(fs.cat_file(path).decode("utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"a JSON {type(data).__name__}, not an object")
        return Manifest.from_dict(data)
    except (ValueError, TypeError, KeyError, UnicodeDecodeError) as exc:
        reason = " ".join(str(exc).split())
        raise ShardTargetError(
            f"{out}/{MANIFEST_NAME} is not an egocurate shard manifest ({reason}); "
            "choose another folder, or move that file away"
        ) from None


def check_target(out: str, storage_options: dict | None = None) -> Manifest | None:
    """The manifest `out` holds now (None if none); refuses a folder that is not a shard set of ours.

    A non-empty folder without a shard manifest is not ours, unless all it holds is what a killed
    writer of ours left: writing into it would mix our shards with someone else's files (a
    glob-based loader would read both). A foreign or garbled ``manifest.json`` is refused too.
    Nothing is written or deleted here.
    """
    fs, base = filesystem(out, storage_options)
    fs.invalidate_cache()
    if not fs.exists(base):
        return None
    if not fs.isdir(base):
        raise ShardTargetError(f"{out} is a file; choose a folder for the shards")
    entries = fs.ls(base, detail=False)
    if not entries:
        return None
    manifest = read_own_manifest(out, storage_options)
    if manifest is None:
        leftovers = [_rel(base, f) for f in fs.find(base)]
        if leftovers and all(OWN_FILE.match(f) for f in leftovers):
            return None  # only what a killed writer of ours left: no manifest was published yet
        raise ShardTargetError(
            f"{out} is not empty ({len(entries)} entries) and holds no shard manifest; choose an empty folder"
        )
    return manifest


def is_local(fs: fsspec.AbstractFileSystem) -> bool:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def inside(fs: fsspec.AbstractFileSystem, base: str, path: str) -> bool:
    """Whether `path` is under `base` (on a local disk: after resolving links, so none leads out)."""
    if not is_local(fs):
        rel = _rel(base, path)
        return rel != path and ".." not in rel.split("/")
    root = os.path.realpath(base)
    return os.path.realpath(path).startswith(root.rstrip(os.sep) + os.sep)


# ----------------------------------------------------------------------------- writer markers
def marker_path(base: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/.writer-{run_id}.json"


class WriterLease:
    """The marker ``.writer-<run>.json`` in `out` that protects run `run_id`'s unpublished shards.

    Created before the run's first shard, rewritten every :data:`HEARTBEAT_S` by a daemon thread,
    removed right after the run's manifest is published (or it failed). Other writers' cleanup
    skips shards of runs whose marker is live (:func:`is_live`).
    """

    def __init__(self, out: str, run_id: str, storage_options: dict | None = None):
        self.fs, self.base = filesystem(out, storage_options)
        self.run_id = run_id
        self.path = marker_path(self.base, run_id)
        self.started = datetime.now(UTC).isoformat()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _write(self) -> None:
        record = {"run_id": self.run_id, "host": socket.gethostname(), "pid": os.getpid(),
                  "started": self.started, "beat": time.time()}  # fmt: skip
        with self.fs.open(self.path, "wb") as fh:
            fh.write(json.dumps(record).encode())

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            with contextlib.suppress(OSError):  # a missed beat is retried; STALE_S allows many
                self._write()

    def acquire(self) -> WriterLease:
        self.fs.makedirs(self.base, exist_ok=True)
        self._write()
        self._thread = threading.Thread(target=self._beat, name=f"shards-lease-{self.run_id}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.fs.exists(self.path):
            self.fs.rm(self.path)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _age(fs: fsspec.AbstractFileSystem, path: str, now: float) -> float:
    info = fs.info(path)
    stamp = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    if isinstance(stamp, datetime):
        stamp = stamp.timestamp()
    return now - float(stamp) if stamp else 0.0


def is_live(fs: fsspec.AbstractFileSystem, path: str, now: float | None = None) -> bool:
    """Whether the writer of marker `path` may still be writing.

    On this host, its pid decides (a killed writer is dead at once); elsewhere, a heartbeat newer
    than :data:`STALE_S`. A marker that cannot be read (being rewritten) is live while it is new.
    """
    now = time.time() if now is None else now
    try:
        record = json.loads(fs.cat_file(path).decode("utf-8"))
        beat, host, pid = float(record["beat"]), str(record["host"]), int(record["pid"])
    except FileNotFoundError:
        return False
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return _age(fs, path, now) < STALE_S
    if now - beat >= STALE_S:
        return False
    return _pid_alive(pid) if host == socket.gethostname() else True


# ----------------------------------------------------------------------------- cleanup
def live_runs(out: str, storage_options: dict | None = None) -> tuple[set[str], list[str]]:
    """(runs with a live marker, relative paths of dead runs' markers) in `out`, listed afresh."""
    fs, base = filesystem(out, storage_options)
    fs.invalidate_cache()
    live, dead = set(), []
    for entry in fs.ls(base, detail=False):
        rel = _rel(base, entry)
        match = MARKER_FILE.match(rel)
        if match:
            if is_live(fs, entry):
                live.add(match["run"])
            else:
                dead.append(rel)
    return live, dead


def remove_orphans(out: str, storage_options: dict | None = None) -> list[str]:
    """Delete the files of ours in `out` that no published manifest or live writer needs; returns them.

    In this order, which makes two racing writers safe: (1) list the folder; (2) read the markers:
    a run whose marker is gone has published (or died) before this step; (3) read the manifest
    published now, which is that run's or a later one. A shard file named like ours whose run is
    not live and that (3) does not list is an orphan. A folder whose manifest is not ours is left
    alone. Only paths matching :data:`SHARD_FILE` / :data:`MANIFEST_TMP` and inside `out` go.
    """
    fs, base = filesystem(out, storage_options)
    fs.invalidate_cache()
    if not fs.isdir(base):
        return []
    files = [_rel(base, f) for f in fs.find(base)]
    live, dead_markers = live_runs(out, storage_options)
    try:
        manifest = read_own_manifest(out, storage_options)
    except ShardTargetError:
        return []  # someone else's manifest now: not ours to clean
    listed = {s.path for s in manifest.shards} if manifest else set()
    doomed = [rel for rel in files if _orphan(rel, live, listed)] + dead_markers
    removed = []
    for rel in sorted(doomed):
        path = f"{base.rstrip('/')}/{rel}"
        if inside(fs, base, path) and fs.exists(path):
            fs.rm(path)
            removed.append(rel)
    return removed


def _orphan(rel: str, live: set[str], listed: set[str]) -> bool:
    match = SHARD_FILE.match(rel) or MANIFEST_TMP.match(rel)
    return bool(match) and match["run"] not in live and rel not in listed
