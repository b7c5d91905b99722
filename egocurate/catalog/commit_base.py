"""What a writer's commits must check for keys: only what others added since its plan was checked.

Delta's own optimistic concurrency works this way: a transaction reads snapshot V0, and at commit
time checks only the commits that landed after V0. egocurate's driver anti-joins a stage's input
against the ledger, its table and the quarantine once, at planning (version V0 of each); after
that, a key of its incoming rows can be present in the table only if another writer committed it
after V0. So each commit reads the log entries added since the last one it saw (never the whole
table), keeps the keys of the data files *others* added (dataChange, not its own, and not ruled
out by a column whose value is fixed for this writer, like the ledger's `stage`), and checks its
incoming keys against those alone. Its cost is its work unit plus the racing writers' rows, not
the table's size or history; compaction (`dataChange: false`) adds no keys and is skipped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from egocurate.catalog.log import entry_name


def sorted_keys(values: pa.Array) -> np.ndarray:
    """Keys as a sorted fixed-width bytes array: ~key-length bytes each, searched in O(log n)."""
    return np.sort(np.asarray(values.drop_null().to_numpy(zero_copy_only=False).astype("S")))


class DamagedLogError(RuntimeError):
    """A log entry after the base version is empty or not JSON."""


class ExpiredLogError(RuntimeError):
    """A log entry after the base version was deleted by log cleanup (older than the retention)."""


@dataclass
class CommitBase:
    """One writer's view of one table since the version its plan was checked against."""

    table: str
    version: int  # the planner's anti-join read this version (or a later one) of the table
    fixed: Mapping[str, str] = field(default_factory=dict)  # column -> the one value this writer writes
    cursor: int = -2  # log entries up to here have been read
    own: set[str] = field(default_factory=set)  # data files this writer's commits added
    foreign: list[pa.Table] = field(default_factory=list)  # key columns of files others added
    files_read: int = 0
    dt: object | None = None  # the writer's DeltaTable, advanced incrementally
    # Merging writers (ingest's fold): the keys the table held at `version` plus those this writer
    # committed since, as sorted runs of fixed-width bytes (merged like a binary counter, so a
    # lookup is O(log² n) and adding is amortised O(log n)); None for other writers.
    known: list[np.ndarray] | None = None

    def knows_any(self, keys: pa.Array) -> bool:
        """Whether any of `keys` was in the table at the base version or committed by this writer."""
        if not self.known or len(keys) == 0:
            return False
        wanted = np.asarray(keys.to_numpy(zero_copy_only=False).astype("S"))
        for run in self.known:
            if len(run) == 0:
                continue
            at = np.minimum(np.searchsorted(run, wanted), len(run) - 1)
            if np.any(run[at] == wanted):
                return True
        return False

    def remember(self, keys: pa.Array) -> None:
        """Add keys this writer committed (own files are never read back as foreign)."""
        if self.known is None or len(keys) == 0:
            return
        self.known.append(sorted_keys(keys))
        while len(self.known) > 1 and len(self.known[-2]) <= 2 * len(self.known[-1]):
            last, before = self.known.pop(), self.known.pop()
            self.known.append(np.sort(np.concatenate([before, last])))

    def __post_init__(self) -> None:
        if self.cursor == -2:
            self.cursor = self.version


def _excluded(stats: str | None, fixed: Mapping[str, str]) -> bool:
    """Whether a file's min/max statistics rule out every row this writer could collide with."""
    if not fixed or not stats:
        return False
    try:
        parsed = json.loads(stats)
    except json.JSONDecodeError:
        return False
    lows, highs = parsed.get("minValues") or {}, parsed.get("maxValues") or {}
    for column, value in fixed.items():
        low, high = lows.get(column), highs.get(column)
        if low is not None and high is not None and not (low <= value <= high):
            return True
    return False


def foreign_adds(fs: fsspec.AbstractFileSystem, log_dir: str, base: CommitBase, upto: int) -> list[str]:
    """Paths of data files others added in log entries (base.cursor, upto]; advances the cursor."""
    out = []
    if upto > base.cursor:
        fs.invalidate_cache(log_dir)  # object stores: a cached listing would miss the new entries
    for version in range(base.cursor + 1, upto + 1):
        try:
            with fs.open(f"{log_dir}/{entry_name(version)}", "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            raise ExpiredLogError(f"log entry of version {version} was cleaned up") from None
        if not data.strip():
            raise DamagedLogError(f"log entry of version {version} is empty")
        for line in data.decode().splitlines():
            if not line.strip():
                continue
            try:
                action = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DamagedLogError(f"log entry of version {version} is not JSON ({exc.msg})") from None
            add = action.get("add")
            if not add or not add.get("dataChange", True) or add["path"] in base.own:
                continue
            if not _excluded(add.get("stats"), base.fixed):
                out.append(add["path"])
    base.cursor = max(base.cursor, upto)
    return out


def load_foreign(
    fs: fsspec.AbstractFileSystem, table_root: str, base: CommitBase, paths: Sequence[str], columns: list[str]
) -> None:
    """Read the key `columns` of the files others added and keep them with the base."""
    for path in paths:
        with fs.open(f"{table_root}/{path}", "rb") as fh:
            have = pq.read_schema(fh).names
            fh.seek(0)
            data = pq.read_table(fh, columns=[c for c in columns if c in have])
        base.foreign.append(data)
        base.files_read += 1
