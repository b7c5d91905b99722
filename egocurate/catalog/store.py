"""The catalog: Delta tables under one root (a local path or any fsspec/object-store URL).

The catalog is the only state of a run (DESIGN.md). Workers write Parquet parts next to a table;
the driver makes them visible in one Delta transaction, so a killed run leaves orphan files that no
reader sees, never partial data.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties, RemoveAction

from egocurate.catalog import tables
from egocurate.catalog.commit_base import (
    CommitBase,
    DamagedLogError,
    ExpiredLogError,
    foreign_adds,
    load_foreign,
    sorted_keys,
)
from egocurate.catalog.log import LOG_DIR, damaged_versions
from egocurate.catalog.tables import TableSpec
from egocurate.storage import fsspec_options


class CatalogReadError(RuntimeError):
    """A table exists but cannot be read (corrupt or missing log entry, unreadable file)."""

    def __init__(self, table: str, root: str, version: int | str | None, cause: BaseException | str):
        self.table, self.version = table, version
        where = f"latest version {version}" if version is not None else "unknown version"
        cause = str(cause).strip().split("\n")[0].split("    0: ")[0].strip()  # no Rust backtrace
        super().__init__(
            f"table {table!r} in {root} cannot be read ({where}): {cause}; "
            f"run `egocurate catalog check` and `egocurate catalog repair`"
        )


class CatalogPathError(ValueError):
    """The catalog root is missing (for a read), a file, or cannot be created or written; or its
    settings (log retention) are not valid."""


class VacuumRetentionError(ValueError):
    """A vacuum retention shorter than a running job may hold on to its files."""


# Vacuum keeps files younger than this: the longest a job may read an old snapshot or hold parts it
# has written but not committed yet (Delta's own default deletedFileRetentionDuration, one week).
MIN_VACUUM_RETENTION_HOURS = 168
ORPHAN_GRACE_HOURS = 1  # a part never referenced by the log this old has no live writer (driver)


class KeysPresentError(RuntimeError):
    """A commit that must not drop rows found some of its keys present (the writer folds instead)."""


class CommitConflictError(RuntimeError):
    """A commit lost the optimistic-concurrency race more often than its retry budget allows."""


# Optimistic concurrency: each commit is built against one table version and lands at exactly the
# next one, or fails and is rebuilt on top of whatever the other writer committed (see README).
COMMIT_ATTEMPTS = 200
COMMIT_BACKOFF_S = (0.02, 1.0)


def backoff(attempt: int) -> None:
    """Sleep a jittered, exponentially growing time before commit attempt `attempt` + 1."""
    low, high = COMMIT_BACKOFF_S
    time.sleep(random.uniform(low, min(high, low * 2 ** min(attempt, 10))))


def _sql_list(values: Iterable[str]) -> str:
    return ", ".join("'" + str(v).replace("'", "''") + "'" for v in values)


@dataclass(frozen=True)
class PartFile:
    """A Parquet file a worker wrote into a table's folder, not yet committed."""

    table: str
    path: str  # relative to the table root
    size: int
    num_rows: int


def _normalise_root(root: str | os.PathLike[str]) -> str:
    root = str(root)
    if "://" in root:
        return root.rstrip("/")
    return os.path.abspath(os.path.expanduser(root))


def table_uri(root: str, name: str) -> str:
    """URI of table `name` under catalog `root`."""
    return f"{_normalise_root(root)}/{name}"


def filesystem(uri: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
    fs, path = fsspec.core.url_to_fs(uri, **fsspec_options(storage_options))
    return fs, path


def _column_stats(path_table: pa.Table) -> str:
    """Delta `stats` JSON (numRecords, min/max of primitive columns, null counts)."""
    import json

    import pyarrow.compute as pc

    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in path_table.column_names:
        col = path_table.column(name)
        nulls[name] = col.null_count
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_string(col.type):
            valid = col.drop_null()
            if len(valid):
                mm = pc.min_max(valid).as_py()
                lo, hi = mm["min"], mm["max"]
                if isinstance(lo, float) and (lo != lo or hi != hi):  # NaN stats are not allowed
                    continue
                mins[name], maxs[name] = lo, hi
    return json.dumps(
        {"numRecords": path_table.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    )


def write_part(
    root: str, spec: TableSpec, table: pa.Table, tag: str, storage_options: dict | None = None
) -> PartFile:
    """Write `table` as one Parquet part inside `spec`'s folder (invisible until committed)."""
    name = f"part-{tag}-{uuid.uuid4().hex[:8]}.parquet"
    uri = f"{table_uri(root, spec.name)}/{name}"
    fs, path = filesystem(uri, storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
    size = fs.size(path)
    return PartFile(table=spec.name, path=name, size=int(size), num_rows=table.num_rows)


def _commit_at_next_version(
    dt: DeltaTable, spec: TableSpec, actions: list, metadata: dict[str, str]
) -> int | None:
    """Commit `actions` at exactly the loaded version + 1 (compare-and-swap on the log entry);
    returns that version, or None when another writer took it first."""
    read_version = int(dt.version())
    try:
        dt.create_write_transaction(
            actions,
            mode="append",
            schema=spec.schema,
            partition_by=list(spec.partition_by) or None,
            commit_properties=CommitProperties(custom_metadata=metadata, max_commit_retries=0),
        )
    except CommitFailedError:
        return None
    return read_version + 1


def _add_action(part: PartFile, data: pa.Table, now_ms: int) -> AddAction:
    """The log action that makes a written part visible, with its column statistics."""
    return AddAction(path=part.path, size=part.size, partition_values={}, modification_time=now_ms,
                     data_change=True, stats=_column_stats(data))  # fmt: skip


def _add_paths_and_sizes(dt: DeltaTable) -> tuple[list[str], list[int]]:
    """Paths (relative to the table) and sizes of the data files of the loaded version."""
    actions = pa.table(dt.get_add_actions(flatten=True))
    return actions.column("path").to_pylist(), actions.column("size_bytes").to_pylist()


def _same_rows(a: pa.Table, b: pa.Table, key: str) -> bool:
    """Whether two tables hold the same rows (order aside)."""
    if a.num_rows != b.num_rows:
        return False
    order = [(key, "ascending")]
    return a.sort_by(order).to_pylist() == b.sort_by(order).to_pylist()


def native_filesystem(uri: str) -> Any:
    """Arrow's own filesystem rooted at a local table, or None (deltalake's handler) for remote ones.

    Why: through deltalake's Python filesystem handler, scanned bytes are Python buffers. Arrow's
    readahead frees some of them on its own threads after ``to_table()`` returned; when that lands
    during interpreter exit, the thread cannot take the GIL, Python ends it with ``pthread_exit``,
    the unwind crosses a C++ ``noexcept`` destructor and the process aborts (exit 134, "terminate
    called without an active exception"). Native reads hold no Python buffers, so nothing is left
    that needs the GIL.
    """
    import pyarrow.fs as pafs

    if uri.startswith("file://"):
        uri = uri.removeprefix("file://")
    if "://" in uri:
        return None
    return pafs.SubTreeFileSystem(os.path.abspath(uri), pafs.LocalFileSystem())


def logged_paths(fs: fsspec.AbstractFileSystem, log_dir: str) -> set[str]:
    """Every data file path any commit or checkpoint of a Delta log added or removed."""
    import json

    paths: set[str] = set()
    for entry in fs.ls(log_dir, detail=False):
        base = entry.rsplit("/", 1)[-1]
        if base.endswith(".json") and base[:1].isdigit():
            with fs.open(entry, "rt") as fh:
                for line in fh:
                    action = json.loads(line) if line.strip() else {}
                    for kind in ("add", "remove"):
                        if kind in action:
                            paths.add(action[kind]["path"])
        elif ".checkpoint" in base and base.endswith(".parquet"):
            with fs.open(entry, "rb") as fh:
                data = pq.read_table(fh)
            for kind in ("add", "remove"):
                if kind in data.column_names:
                    paths.update(p for p in data.column(kind).combine_chunks().field("path").to_pylist() if p)
    return {p.rsplit("/", 1)[-1] for p in paths}


def log_retention(hours: float | None = None) -> float | None:
    """The log retention in hours: `hours`, else ``EGOCURATE_LOG_RETENTION_HOURS``, else None (Delta's
    default, 30 days). Refuses a negative or unparsable value in one line (a user error)."""
    if hours is None:
        raw = os.environ.get("EGOCURATE_LOG_RETENTION_HOURS", "").strip()
        if not raw:
            return None
        try:
            hours = float(raw)
        except ValueError:
            raise CatalogPathError(f"EGOCURATE_LOG_RETENTION_HOURS must be hours, not {raw!r}") from None
    if not hours >= 0:
        raise CatalogPathError(f"log retention must be 0 hours or more, not {hours}")
    return float(hours)


def _first_key_values(incoming: pa.Table, columns: Sequence[str]) -> pa.Array:
    """The distinct non-null values of the first key column (list columns flattened)."""
    first = incoming.column(columns[0])
    if pa.types.is_list(first.type):
        first = pc.list_flatten(first)
    return pc.unique(first.drop_null())


def _key_tuples(have: pa.Table, columns: Sequence[str]) -> set[tuple]:
    out: set[tuple] = set()
    for row in have.to_pylist():
        vals = [row[c] for c in columns]
        if isinstance(vals[0], list):  # a list column: each element counts as a present key
            out.update((v, *vals[1:]) for v in vals[0])
        else:
            out.add(tuple(vals))
    return out


class NullKeyError(ValueError):
    """Rows whose key is null: they could never be found, deduplicated or redone by key."""


def _refuse_null_keys(name: str, data: pa.Table, columns: Sequence[str]) -> None:
    for column in columns:
        if column in data.column_names and data.column(column).null_count:
            count = data.column(column).null_count
            raise NullKeyError(f"table {name!r}: {count} row(s) have a null key column {column!r}")


class Catalog:
    """Delta tables under one root, with atomic commits, time travel and SQL over a clip view."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        storage_options: dict[str, str] | None = None,
        create: bool = True,
        log_retention_hours: float | None = None,
    ):
        """Open the catalog at `root`; `create=False` (read-only commands) requires it to exist.

        `log_retention_hours` (default ``EGOCURATE_LOG_RETENTION_HOURS``, else Delta's 30 days) is
        the tables' ``delta.logRetentionDuration``: log entries older than it and older than the
        last checkpoint are deleted at the next checkpoint. A commit on a local or POSIX file
        system lists the whole log folder, so this bounds its cost (see :func:`log_retention`).
        """
        self.root = _normalise_root(root)
        self.storage_options = dict(storage_options or {})
        self.log_retention_hours = log_retention(log_retention_hours)
        if "://" in self.root:
            if not create:  # read-only commands: a missing bucket or prefix is no catalog, never empty
                fs, path = filesystem(self.root, self.storage_options)
                if not fs.exists(path):
                    bucket = path.split("/", 1)[0]
                    if bucket != path and not fs.exists(bucket):
                        raise CatalogPathError(f"bucket {bucket!r} does not exist: {self.root}")
                    raise CatalogPathError(f"no catalog at {self.root}; check --catalog, or ingest first")
            return
        if os.path.exists(self.root) and not os.path.isdir(self.root):
            raise CatalogPathError(f"catalog path {self.root} is a file, not a folder; pass a folder")
        if not create:
            if not os.path.isdir(self.root):
                raise CatalogPathError(f"no catalog at {self.root}; check --catalog, or ingest first")
            return
        try:
            os.makedirs(self.root, exist_ok=True)
        except OSError as exc:
            raise CatalogPathError(
                f"cannot create catalog folder {self.root}: {exc.strerror or exc}"
            ) from None
        if not os.access(self.root, os.W_OK):
            raise CatalogPathError(f"catalog folder {self.root} is not writable; fix its permissions")

    # ------------------------------------------------------------------ tables
    def uri(self, name: str) -> str:
        return table_uri(self.root, name)

    def table(self, name: str, version: int | str | None = None) -> DeltaTable | None:
        """The Delta table `name` (at `version`, an int or an ISO timestamp), or None if absent.

        A table whose log cannot be read raises :class:`CatalogReadError`; it never reads as absent.
        """
        for attempt in range(3):
            try:
                dt = DeltaTable(self.uri(name), storage_options=self.storage_options or None)
                break
            except TableNotFoundError:
                if not self._has_log(name):
                    lost = self.lost_log(name)
                    if lost is None:
                        return None
                    if attempt < 2:  # a log being created right now: look again
                        time.sleep(0.2)
                        continue
                    raise CatalogReadError(name, self.root, None, lost) from None
                if attempt < 2:  # another process may be creating it right now: look again
                    time.sleep(0.2)
                    continue
                cause = "its Delta log is unreadable"
                raise CatalogReadError(name, self.root, self.log_version(name), cause) from None
            except Exception as exc:  # noqa: BLE001 - every other failure is a broken table, said loudly
                raise CatalogReadError(name, self.root, self.log_version(name), exc) from exc
        if version is not None:
            try:
                dt.load_as_version(version)
            except Exception as exc:  # noqa: BLE001
                raise CatalogReadError(name, self.root, version, exc) from exc
        self._raise_if_damaged(name, dt)
        return dt

    def _log_dir(self, name: str) -> tuple[fsspec.AbstractFileSystem, str]:
        return filesystem(f"{self.uri(name)}/{LOG_DIR}", self.storage_options)

    def _raise_if_damaged(self, name: str, dt: DeltaTable) -> None:
        """Refuse a table whose replayed log holds a 0-byte entry (deltalake reads it as empty)."""
        fs, log_dir = self._log_dir(name)
        bad = damaged_versions(fs, log_dir, int(dt.version()))
        if bad:
            cause = f"log entry of version {bad[0]} is empty, so that commit's rows would be missing"
            raise CatalogReadError(name, self.root, dt.version(), cause)

    def lost_log(self, name: str) -> str | None:
        """Why a table folder without a log entry has lost its log, or None (it is simply absent).

        Data files (or an empty log folder) and no log entry: never read that as an absent table,
        or a reader would miss every row and a rerun would silently redo everything.
        """
        fs, path = filesystem(self.uri(name), self.storage_options)
        fs.invalidate_cache(path)
        try:
            infos = fs.ls(path, detail=True)
        except FileNotFoundError:
            return None
        files = sum(1 for i in infos if i.get("type") == "file" and i["name"].endswith(".parquet"))
        has_log_dir = any(i["name"].rstrip("/").endswith(f"/{LOG_DIR}") for i in infos)
        if not files and not has_log_dir:
            return None
        return f"its Delta log is missing ({files} data file(s), no log entry)"

    def _log_files(self, name: str) -> list[str]:
        fs, path = filesystem(f"{self.uri(name)}/_delta_log", self.storage_options)
        fs.invalidate_cache(path)
        try:
            return [p.rsplit("/", 1)[-1] for p in fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []

    def _has_log(self, name: str) -> bool:
        return any(f.endswith(".json") for f in self._log_files(name))

    def log_version(self, name: str) -> int | None:
        """The highest version number in the table's log folder (readable or not)."""
        versions = [int(f[:-5]) for f in self._log_files(name) if f.endswith(".json") and f[:-5].isdigit()]
        return max(versions) if versions else None

    def exists(self, name: str) -> bool:
        return self.table(name) is not None

    def ensure(self, spec: TableSpec) -> DeltaTable:
        """Create `spec`'s table if it does not exist yet (an empty version 0)."""
        dt = self.table(spec.name)
        if dt is not None:
            return self._evolve(spec, dt)
        try:
            return DeltaTable.create(
                self.uri(spec.name),
                schema=spec.schema,
                mode="ignore",
                partition_by=list(spec.partition_by) or None,
                name=spec.name,
                description=spec.description or None,
                configuration=self.table_properties() or None,
                storage_options=self.storage_options or None,
            )
        except Exception:
            # Another process created it between our check and create.
            existing = self.table(spec.name)
            if existing is None:
                raise
            return existing

    def table_properties(self) -> dict[str, str]:
        """Delta table properties egocurate sets on the tables it creates (log retention, if set)."""
        if self.log_retention_hours is None:
            return {}
        seconds = max(0, round(self.log_retention_hours * 3600))
        return {"delta.logRetentionDuration": f"interval {seconds} seconds"}

    def _evolve(self, spec: TableSpec, dt: DeltaTable) -> DeltaTable:
        """Add the columns `spec` declares that a table created by an older egocurate lacks.

        Old rows read those columns as null. Without this a commit would store the new columns in
        its files but the table schema would hide them. Two writers evolving at once: whoever
        loses the race finds the columns there when it looks again.
        """
        from deltalake import Field

        for attempt in range(5):
            have = set(dt.schema().to_arrow().names)
            missing = [f for f in spec.schema if f.name not in have]
            have_props = dt.metadata().configuration
            wanted = {k: v for k, v in self.table_properties().items() if have_props.get(k) != v}
            if not missing and not wanted:
                return dt
            if not missing:  # a retention set after the table was created: one metadata commit
                try:
                    dt.alter.set_table_properties(wanted, raise_if_not_exists=False)
                except Exception:  # noqa: BLE001 - another writer changed it first: look again
                    if attempt == 4:
                        raise
                    backoff(attempt)
                dt = self.table(spec.name)
                assert dt is not None
                continue
            try:
                dt.alter.add_columns([Field.from_arrow(f) for f in missing])
            except Exception:  # noqa: BLE001 - another writer evolved it first: look again
                if attempt == 4:
                    raise
                backoff(attempt)
            dt = self.table(spec.name)
            assert dt is not None
        return dt

    def tables(self) -> list[str]:
        """Names of the Delta tables present under the root."""
        fs, path = filesystem(self.root, self.storage_options)
        fs.invalidate_cache()  # other processes add tables: never answer from a stale listing
        if not fs.exists(path):
            return []
        names = []
        for entry in fs.ls(path, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if fs.exists(f"{entry}/_delta_log"):
                names.append(name)
        return sorted(names)

    def version(self, name: str) -> int | None:
        dt = self.table(name)
        return None if dt is None else dt.version()

    def history(self, name: str, limit: int | None = None) -> list[dict[str, Any]]:
        dt = self.table(name)
        return [] if dt is None else dt.history(limit)

    # ------------------------------------------------------------------ reads
    def dataset(self, name: str, version: int | str | None = None) -> pads.Dataset | None:
        """The table as an Arrow dataset; columns its spec declares that an older table lacks read as null."""
        dt = self.table(name, version)
        if dt is None:
            return None
        ds = dt.to_pyarrow_dataset(filesystem=native_filesystem(dt.table_uri))
        spec = tables.SPECS.get(name)
        if spec is not None:
            missing = [f for f in spec.schema if f.name not in ds.schema.names]
            if missing:  # an old catalog, read without writing to it
                ds = ds.replace_schema(pa.schema(list(ds.schema) + missing))
        return ds

    def read(
        self,
        name: str,
        columns: Sequence[str] | None = None,
        version: int | str | None = None,
        filter: Any | None = None,
    ) -> pa.Table:
        """Read table `name` into Arrow; an absent table reads as empty with its spec's schema."""
        ds = self.dataset(name, version)
        if ds is None:
            schema = tables.spec_for(name).schema
            empty = schema.empty_table()
            return empty.select(list(columns)) if columns else empty
        with self.reading(name, version):
            return ds.to_table(columns=list(columns) if columns else None, filter=filter)

    @contextlib.contextmanager
    def reading(self, name: str, version: int | str | None = None) -> Iterator[None]:
        """Turn a failure while scanning a table's files (a lost file, a value that cannot be cast
        to the declared type) into :class:`CatalogReadError`: one line, never less data."""
        try:
            yield
        except (OSError, pa.ArrowException, DeltaError) as exc:
            raise CatalogReadError(name, self.root, version, exc) from exc

    def count(self, name: str) -> int:
        ds = self.dataset(name)
        if ds is None:
            return 0
        with self.reading(name):
            return ds.count_rows()

    def distinct(self, name: str, column: str, filter: Any | None = None) -> set[str]:
        """Distinct values of one column (list columns are flattened), read in batches."""
        ds = self.dataset(name)
        if ds is None or column not in ds.schema.names:
            return set()
        out: set[str] = set()
        with self.reading(name):
            for batch in ds.to_batches(columns=[column], filter=filter):
                col = batch.column(0)
                if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                    col = col.flatten()
                out.update(v for v in col.to_pylist() if v is not None)
        return out

    def values(self, name: str, column: str, filter: Any | None = None) -> pa.Array:
        """Distinct non-null values of one column as an Arrow string array (list columns flattened).

        What a rerun's anti-join reads: Arrow memory (~20 bytes a key), no Python object per key.
        """
        ds = self.dataset(name)
        if ds is None or column not in ds.schema.names:
            return pa.array([], pa.string())
        with self.reading(name):
            col = ds.to_table(columns=[column], filter=filter).column(0).combine_chunks()
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            col = pc.list_flatten(col)
        return pc.unique(col.drop_null()).cast(pa.string())

    def key_column(self, name: str, column: str, filter: Any | None = None) -> pa.Array:
        """One string column's non-null values as they are stored (duplicates kept): what a hash
        lookup (`pc.is_in(value_set=...)`) needs, without the cost of making them distinct."""
        ds = self.dataset(name)
        if ds is None or column not in ds.schema.names:
            return pa.array([], pa.string())
        with self.reading(name):
            col = ds.to_table(columns=[column], filter=filter).column(0).combine_chunks()
        return col.drop_null().cast(pa.string())

    def values_among(self, name: str, column: str, among: pa.Array, filter: Any | None = None) -> pa.Array:
        """The values of `among` that `column` holds (list columns flattened), read batch by batch."""
        ds = self.dataset(name)
        if ds is None or column not in ds.schema.names or len(among) == 0:
            return pa.array([], pa.string())
        hits = []
        with self.reading(name):
            for batch in ds.to_batches(columns=[column], filter=filter):
                col = batch.column(0)
                if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                    col = pc.list_flatten(col)
                col = col.cast(pa.string())
                hits.append(col.filter(pc.fill_null(pc.is_in(col, value_set=among), False)))
        return pc.unique(pa.concat_arrays(hits)) if hits else pa.array([], pa.string())

    def optimize(self, name: str, target_size: int | None = None) -> dict | None:
        """Compact a table's small files in one commit of its own (Delta OPTIMIZE).

        The rewritten files carry ``dataChange: false``: the rows do not change, so readers, the
        ledger and racing writers' key checks are unaffected. Compare-and-swap like every commit:
        built on version V, landing at V+1 or started again on the new version. Returns the
        metrics, or None for an absent table.
        """
        for attempt in range(COMMIT_ATTEMPTS):
            dt = self.table(name)
            if dt is None:
                return None
            try:
                return dt.optimize.compact(
                    target_size=target_size,
                    commit_properties=CommitProperties(
                        custom_metadata={"egocurate.operation": "optimize"}, max_commit_retries=0
                    ),
                )
            except CommitFailedError:
                backoff(attempt)
        raise CommitConflictError(f"table {name!r}: optimize lost the race {COMMIT_ATTEMPTS} times")

    def files(self, name: str, version: int | str | None = None) -> list[str]:
        """Absolute URIs of the Parquet files of the table's current (or given) version.

        Hand these to Spark (``spark.read.parquet(*files)``) to query a table without Delta jars.
        """
        dt = self.table(name, version)
        return [] if dt is None else list(dt.file_uris())

    # ------------------------------------------------------------------ writes
    def append(self, spec: TableSpec, data: pa.Table, operation: str = "append") -> int:
        """Append rows in one transaction; returns the new version."""
        self.ensure(spec)
        write_deltalake(
            self.uri(spec.name),
            tables.conform(data, spec),
            mode="append",
            storage_options=self.storage_options or None,
            commit_properties=CommitProperties(custom_metadata={"egocurate.operation": operation}),
        )
        return int(self.version(spec.name))

    def append_unique(
        self,
        spec: TableSpec,
        data: pa.Table,
        unique: Sequence[Sequence[str]],
        operation: str = "append",
        base: CommitBase | None = None,
    ) -> int | None:
        """Append the rows of `data` whose `unique` keys the table does not hold yet (see commit_parts)."""
        if data.num_rows == 0:
            return None
        if base is None:
            self.ensure(spec)  # a table folder holding parts never lacks its log (see `lost_log`)
        part = write_part(self.root, spec, tables.conform(data, spec), "commit", self.storage_options)
        return self.commit_parts(spec, [part], operation=operation, unique=unique, base=base)

    def _present(self, dt: DeltaTable, incoming: pa.Table, columns: Sequence[str]) -> set[tuple]:
        """Key tuples (`columns`) of `incoming` that the loaded version of `dt` already holds.

        Reads the key column of every data file: what a commit without a base costs (see
        :class:`~egocurate.catalog.commit_base.CommitBase` for the commit whose cost does not grow).
        """
        values = _first_key_values(incoming, columns)
        if len(values) == 0:
            return set()
        have = dt.to_pyarrow_dataset().to_table(
            columns=list(columns), filter=pc.field(columns[0]).isin(values)
        )
        return _key_tuples(have, columns)

    def _present_since(
        self, base: CommitBase, incoming: pa.Table, unique: list[tuple[str, ...]]
    ) -> list[set[tuple]]:
        """Per unique tuple, the incoming keys that files others added since the base hold."""
        dt = base.dt
        fs, log_dir = self._log_dir(base.table)
        try:
            paths = foreign_adds(fs, log_dir, base, int(dt.version()))
        except DamagedLogError as exc:
            raise CatalogReadError(base.table, self.root, dt.version(), exc) from exc
        except ExpiredLogError:
            # Log cleanup removed entries this writer had not read yet (it fell behind the log
            # retention). Every file others may have added since the base is among the loaded
            # version's files: take all of them but the writer's own as foreign (one read of the
            # table's key columns, exact), and go on from this version's log entries.
            actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
            paths = [a["path"] for a in actions if a["path"] not in base.own]
            base.foreign, base.cursor = [], int(dt.version())
        columns = list(dict.fromkeys(c for cols in unique for c in cols))
        tfs, root = filesystem(self.uri(base.table), self.storage_options)
        load_foreign(tfs, root, base, paths, columns)
        out = []
        for cols in unique:
            pieces = [t.select(list(cols)) for t in base.foreign if all(c in t.column_names for c in cols)]
            values = _first_key_values(incoming, cols)
            if not pieces or len(values) == 0:
                out.append(set())
                continue
            have = pa.concat_tables(pieces, promote_options="default")
            if not pa.types.is_list(have.schema.field(cols[0]).type):
                have = have.filter(pc.is_in(have.column(cols[0]), value_set=values))
            out.append(_key_tuples(have, cols))
        return out

    def commit_base(
        self, name: str, fixed: dict[str, str] | None = None, key_column: str | None = None
    ) -> CommitBase:
        """A base for a writer whose plan was checked against the table's current version (call it
        before the anti-join reads the table); `fixed` names columns whose value the writer's rows
        all share (the ledger's `stage`), so files of other values are never read. A merging
        writer (ingest's fold) names its `key_column`: the keys of that version are kept, sorted
        (~key length in bytes each), so :meth:`commit_or_fold` folds only when a key exists."""
        dt = self.table(name)
        if dt is None:
            raise CatalogReadError(name, self.root, None, "a commit base needs the table to exist")
        base = CommitBase(name, int(dt.version()), dict(fixed or {}), dt=dt)
        if key_column is not None:
            with self.reading(name):
                keys = dt.to_pyarrow_dataset().to_table(columns=[key_column]).column(0).combine_chunks()
            base.known = [sorted_keys(keys.cast(pa.string()))]
        return base

    def commit_or_fold(
        self, spec: TableSpec, parts: list[PartFile], fold: Any, operation: str, base: CommitBase | None
    ) -> int | None:
        """Commit a merging stage's parts: appended as they are when none of their keys exists
        (the base's keys, files others added since, and within the parts), else folded into the
        existing rows by :meth:`upsert`. The append checks only what others added since the base,
        so its cost does not grow with the table; only a commit holding a duplicate pays for the
        keyed overwrite's scan of the table."""
        incoming = self.read_parts(parts)
        if incoming is None:
            return None
        keys = incoming.column(spec.key).combine_chunks()
        distinct = pc.count_distinct(keys).as_py() == len(keys)
        if base is not None and base.known is not None and distinct and not base.knows_any(keys):
            try:
                version = self.commit_parts(spec, parts, operation, unique=[(spec.key,)], base=base,
                                            refuse_present=True)  # fmt: skip
                base.remember(keys)
                return version
            except KeysPresentError:
                pass  # another writer committed one of these keys since the base: fold
        version = self.upsert(spec, incoming, operation=operation, fold=fold)
        self.discard_parts(parts)  # the overwrite wrote its own files: these stay unused
        if base is not None:
            base.remember(keys)
        return version

    @staticmethod
    def _keep_mask(data: pa.Table, unique: Sequence[Sequence[str]], present: list[set[tuple]]) -> list[bool]:
        keep = [True] * data.num_rows
        seen: list[set[tuple]] = [set() for _ in unique]
        columns = [[data.column(c).to_pylist() for c in cols] for cols in unique]
        for i in range(data.num_rows):
            for j, cols in enumerate(columns):
                first = cols[0][i]
                keys = (
                    [(v, *(c[i] for c in cols[1:])) for v in first]
                    if isinstance(first, list)
                    else [tuple(c[i] for c in cols)]
                )
                # Only the first key (the table's own) must also be unique within the incoming rows:
                # the others are input keys, and one input (a video) may yield many rows (clips).
                if any(k in present[j] or (j == 0 and k in seen[j]) for k in keys):
                    keep[i] = False
            if keep[i]:
                for j, cols in enumerate(columns):
                    first = cols[0][i]
                    if not isinstance(first, list):
                        seen[j].add(tuple(c[i] for c in cols))
        return keep

    def commit_parts(
        self,
        spec: TableSpec,
        parts: Iterable[PartFile],
        operation: str = "stage",
        unique: Sequence[Sequence[str]] | None = None,
        base: CommitBase | None = None,
        refuse_present: bool = False,
    ) -> int | None:
        """Make worker-written Parquet parts visible in a single Delta transaction, idempotent by key.

        `refuse_present`: raise :class:`KeysPresentError` (committing nothing) instead of dropping
        rows whose key is present, for a writer that must fold them instead.

        With a `base` (a driver whose plan anti-joined its input at the base's version), the keys
        are checked only against files others added since (a cost independent of the table's size);
        without one, against the whole table.

        Concurrency-safe without any lock: each attempt loads the latest version V, drops rows whose
        `unique` keys (default: the table's key) V already holds, or whose first key repeats within
        the parts, and commits at exactly V+1 (``max_commit_retries=0``: compare-and-swap on the log
        entry). If another writer took V+1 first, the attempt is rebuilt on the new version after a jittered
        backoff. So a key committed by two racing writers lands once, whatever the timing.
        Returns the new version, or None when every row was already there.
        """
        parts = [p for p in parts if p.table == spec.name]
        if not parts:
            return None
        unique = [tuple(u) for u in (unique or [(spec.key,)])]
        pieces = []
        for part in parts:
            fs, path = filesystem(f"{self.uri(spec.name)}/{part.path}", self.storage_options)
            with fs.open(path, "rb") as fh:
                pieces.append((part, tables.conform(pq.read_table(fh), spec)))
        incoming = pa.concat_tables([t for _, t in pieces])
        _refuse_null_keys(spec.name, incoming, unique[0])
        if base is None:
            self.ensure(spec)
        written: list[str] = []
        referenced: set[str] = set()
        version = self._commit_unique(
            spec, pieces, incoming, unique, operation, written, referenced, base, refuse_present
        )
        if base is not None:
            base.own.update(referenced)
        # Parts this commit did not reference (rows already present, filtered copies of a lost
        # attempt) can never become visible: delete them now rather than leave orphans. Only after
        # a clear outcome: after an error the commit may have landed, so they stay for the grace.
        self._delete_parts(spec.name, [*(p.path for p, _ in pieces), *written], keep=referenced)
        return version

    def _delete_parts(self, name: str, paths: Iterable[str], keep: set[str]) -> None:
        for rel in paths:
            if rel in keep:
                continue
            fs, path = filesystem(f"{self.uri(name)}/{rel}", self.storage_options)
            with contextlib.suppress(FileNotFoundError):
                fs.rm_file(path)

    def _commit_unique(
        self,
        spec: TableSpec,
        pieces: list[tuple[PartFile, pa.Table]],
        incoming: pa.Table,
        unique: list[tuple[str, ...]],
        operation: str,
        written: list[str],
        referenced: set[str],
        base: CommitBase | None = None,
        refuse_present: bool = False,
    ) -> int | None:
        """The compare-and-swap loop of :meth:`commit_parts`; fills `written` and `referenced`."""
        for attempt in range(COMMIT_ATTEMPTS):
            if base is None:
                dt = self.table(spec.name)
                assert dt is not None
                present = [self._present(dt, incoming, cols) for cols in unique]
            else:
                dt = base.dt
                try:
                    dt.update_incremental()  # only the log entries since it was last loaded
                except Exception:  # noqa: BLE001 - entries it would replay were cleaned up: reload
                    dt = base.dt = self.table(spec.name)
                present = self._present_since(base, incoming, unique)
            if refuse_present and any(present):
                raise KeysPresentError(
                    f"table {spec.name!r}: {sum(map(len, present))} key(s) already present"
                )
            actions = []
            now_ms = int(time.time() * 1000)
            offset = 0
            mask_all = self._keep_mask(incoming, unique, present)
            for part, data in pieces:
                mask = mask_all[offset : offset + data.num_rows]
                offset += data.num_rows
                if not any(mask):
                    continue
                if not all(mask):
                    data = data.filter(pa.array(mask))
                    part = write_part(self.root, spec, data, "dedup", self.storage_options)
                    written.append(part.path)
                actions.append(_add_action(part, data, now_ms))
            if not actions:
                return None
            landed = _commit_at_next_version(dt, spec, actions, {"egocurate.operation": operation})
            if landed is None:
                backoff(attempt)
                continue
            referenced.update(a.path for a in actions)
            return landed
        raise CommitConflictError(
            f"table {spec.name!r}: commit lost the race {COMMIT_ATTEMPTS} times; too many writers at once?"
        )

    def upsert(
        self,
        spec: TableSpec,
        data: pa.Table,
        operation: str = "upsert",
        fold: Any | None = None,
    ) -> int | None:
        """Insert new keys and replace rows whose key exists, in one compare-and-swap transaction.

        Written as a Delta overwrite with a key predicate (not a MERGE, whose writer turns `string`
        into `string_view`). `fold(existing, incoming)` combines rows of the same key; it is re-run
        on every attempt against the version the commit lands on top of. A fold that changes
        nothing commits nothing. Returns the new version, or None when nothing changed.
        """
        self.ensure(spec)
        incoming = tables.conform(data, spec)
        keys = pc.unique(incoming.column(spec.key))
        for attempt in range(COMMIT_ATTEMPTS):
            dt = self.table(spec.name)
            assert dt is not None
            existing = tables.conform(
                dt.to_pyarrow_dataset().to_table(filter=pc.field(spec.key).isin(keys)), spec
            )
            rows = tables.conform(fold(existing, incoming), spec) if fold is not None else incoming
            if _same_rows(existing, rows, spec.key):
                return None
            predicate = f"{spec.key} IN ({_sql_list(keys.to_pylist())})"
            try:
                write_deltalake(
                    dt,
                    rows,
                    mode="overwrite",
                    predicate=predicate,
                    storage_options=self.storage_options or None,
                    commit_properties=CommitProperties(
                        custom_metadata={"egocurate.operation": operation}, max_commit_retries=0
                    ),
                )
            except CommitFailedError:
                backoff(attempt)
                continue
            return int(self.version(spec.name))
        raise CommitConflictError(
            f"table {spec.name!r}: commit lost the race {COMMIT_ATTEMPTS} times; too many writers at once?"
        )

    def replace(
        self,
        spec: TableSpec,
        data: pa.Table | pa.RecordBatchReader,
        operation: str = "replace",
        metadata: dict[str, str] | None = None,
    ) -> int:
        """Replace the whole table in one transaction (a Delta overwrite; older versions stay readable).

        For corpus-level results that change as a whole (dedup groups). `data` may be a streaming
        reader, so memory stays bounded; `metadata` lands in the commit's history entry.
        """
        self.ensure(spec)
        if isinstance(data, pa.Table):
            data = tables.conform(data, spec)
        else:  # a stream: cast batch by batch, memory stays bounded
            source = data
            data = pa.RecordBatchReader.from_batches(
                spec.schema,
                (
                    out
                    for batch in source
                    for out in tables.conform(pa.Table.from_batches([batch]), spec).to_batches()
                ),
            )
        write_deltalake(
            self.uri(spec.name),
            data,
            mode="overwrite",
            storage_options=self.storage_options or None,
            commit_properties=CommitProperties(
                custom_metadata={"egocurate.operation": operation, **(metadata or {})}
            ),
        )
        return int(self.version(spec.name))

    def rewrite_files(
        self,
        spec: TableSpec,
        plan: Callable[[DeltaTable], dict[str, pa.Table | None]],
        operation: str,
        metadata: dict[str, str] | None = None,
    ) -> int | None:
        """Replace some data files of a table in one compare-and-swap commit, like every other commit.

        `plan(dt)` is re-run on each attempt against the version the commit builds on; it maps the
        path (relative to the table) of each file to drop to the rows that replace it (None or no
        rows: drop it). The commit removes exactly those files and adds the new rows, at exactly
        V+1; a writer that committed meanwhile makes the attempt start again on the new version.
        Rows in files the plan does not name are never touched. Returns the new version, or None
        when the plan found nothing to do.
        """
        self.ensure(spec)
        for attempt in range(COMMIT_ATTEMPTS):
            dt = self.table(spec.name)
            assert dt is not None
            replacements = plan(dt)
            if not replacements:
                return None
            sizes = dict(zip(*_add_paths_and_sizes(dt), strict=True))
            now_ms = int(time.time() * 1000)
            actions: list[AddAction | RemoveAction] = [
                RemoveAction(
                    path=path,
                    data_change=True,
                    deletion_timestamp=now_ms,
                    size=sizes.get(path),
                    partition_values={},
                )  # fmt: skip
                for path in replacements
            ]
            written = []
            for rows in replacements.values():
                if rows is None or rows.num_rows == 0:
                    continue
                rows = tables.conform(rows, spec)
                part = write_part(self.root, spec, rows, "rewrite", self.storage_options)
                written.append(part.path)
                actions.append(_add_action(part, rows, now_ms))
            landed = _commit_at_next_version(
                dt, spec, actions, {"egocurate.operation": operation, **(metadata or {})}
            )
            if landed is None:
                self._delete_parts(spec.name, written, keep=set())
                backoff(attempt)
                continue
            return landed
        raise CommitConflictError(
            f"table {spec.name!r}: commit lost the race {COMMIT_ATTEMPTS} times; too many writers at once?"
        )

    def discard_parts(self, parts: Iterable[PartFile]) -> None:
        """Delete worker parts whose rows were committed by other means (a keyed overwrite)."""
        for part in parts:
            self._delete_parts(part.table, [part.path], keep=set())

    def read_parts(self, parts: Iterable[PartFile]) -> pa.Table | None:
        """Read uncommitted parts back (used when a commit must merge instead of append)."""
        pieces = []
        for part in parts:
            fs, path = filesystem(f"{self.uri(part.table)}/{part.path}", self.storage_options)
            with fs.open(path, "rb") as fh:
                pieces.append(pq.read_table(fh))
        return pa.concat_tables(pieces) if pieces else None

    def remove_orphans(self, name: str, older_than_s: float = 3600.0) -> list[str]:
        """Delete Parquet parts of table `name` that no log entry ever referenced, if old enough.

        A killed run leaves parts its driver never committed. A live writer commits its parts
        within minutes (every ``commit_every`` rows, and engines end a stage that stops making
        progress), so a never-referenced part older than `older_than_s` has no writer left. Files
        that some version added or removed stay (time travel); ``vacuum`` is for those.
        """
        dt = self.table(name)
        if dt is None:
            return []
        fs, root = filesystem(self.uri(name), self.storage_options)
        removed = []
        for path in self.orphan_parts(name, older_than_s):
            fs.rm_file(f"{root}/{path}")
            removed.append(path)
        return removed

    def orphan_parts(self, name: str, older_than_s: float) -> list[str]:
        """Parquet parts in a table folder that no log entry ever referenced, older than `older_than_s`."""
        fs, root = filesystem(self.uri(name), self.storage_options)
        referenced = logged_paths(fs, f"{root}/{LOG_DIR}")
        now, out = time.time(), []
        for info in fs.ls(root, detail=True):
            base = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info.get("type") != "file" or not base.endswith(".parquet") or base in referenced:
                continue
            mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
            if mtime is None:
                continue
            mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
            if now - mtime > older_than_s:
                out.append(base)
        return out

    def vacuum(self, name: str, retention_hours: int = 168, dry_run: bool = True) -> list[str]:
        """Delete files no version references: replaced files and orphan parts of killed runs.

        Only files older than `retention_hours` go. It may not be shorter than
        ``MIN_VACUUM_RETENTION_HOURS``: a running job reads the snapshot it planned from, and
        commits parts it wrote, for as long as it runs; deleting files younger than that turns
        its reads and commits into lost files.
        """
        if retention_hours < MIN_VACUUM_RETENTION_HOURS:
            raise VacuumRetentionError(
                f"refusing to vacuum with a retention of {retention_hours} h: a running job may still "
                f"read files a newer version replaced, or commit parts it wrote, for up to "
                f"{MIN_VACUUM_RETENTION_HOURS} h; use --retention-hours {MIN_VACUUM_RETENTION_HOURS} or more "
                f"(`catalog repair` removes killed runs' parts after {ORPHAN_GRACE_HOURS} h)"
            )
        dt = self.table(name)
        if dt is None:
            return []
        return dt.vacuum(
            retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False, full=True
        )
