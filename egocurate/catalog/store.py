"""The catalog: Delta tables under one root (a local path or any fsspec/object-store URL).

The catalog is the only state of a run (DESIGN.md). Workers write Parquet parts next to a table;
the driver makes them visible in one Delta transaction, so a killed run leaves orphan files that no
reader sees, never partial data.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from deltalake import DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError
from deltalake.transaction import AddAction, CommitProperties

from egocurate.catalog import tables
from egocurate.catalog.tables import TableSpec
from egocurate.storage import fsspec_options


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


def _filesystem(uri: str, storage_options: dict | None) -> tuple[fsspec.AbstractFileSystem, str]:
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
    fs, path = _filesystem(uri, storage_options)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    with fs.open(path, "wb") as fh:
        pq.write_table(table, fh, compression="zstd")
    size = fs.size(path)
    return PartFile(table=spec.name, path=name, size=int(size), num_rows=table.num_rows)


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


def _logged_paths(fs: fsspec.AbstractFileSystem, log_dir: str) -> set[str]:
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


class Catalog:
    """Delta tables under one root, with atomic commits, time travel and SQL over a clip view."""

    def __init__(self, root: str | os.PathLike[str], storage_options: dict[str, str] | None = None):
        self.root = _normalise_root(root)
        self.storage_options = dict(storage_options or {})
        if "://" not in self.root:
            os.makedirs(self.root, exist_ok=True)

    # ------------------------------------------------------------------ tables
    def uri(self, name: str) -> str:
        return table_uri(self.root, name)

    def table(self, name: str, version: int | str | None = None) -> DeltaTable | None:
        """The Delta table `name` (at `version`, an int or an ISO timestamp), or None if absent."""
        try:
            dt = DeltaTable(self.uri(name), storage_options=self.storage_options or None)
        except TableNotFoundError:
            return None
        if version is not None:
            dt.load_as_version(version)
        return dt

    def exists(self, name: str) -> bool:
        return self.table(name) is not None

    def ensure(self, spec: TableSpec) -> DeltaTable:
        """Create `spec`'s table if it does not exist yet (an empty version 0)."""
        dt = self.table(spec.name)
        if dt is not None:
            return dt
        try:
            return DeltaTable.create(
                self.uri(spec.name),
                schema=spec.schema,
                mode="ignore",
                partition_by=list(spec.partition_by) or None,
                name=spec.name,
                description=spec.description or None,
                storage_options=self.storage_options or None,
            )
        except Exception:
            # Another process created it between our check and create.
            existing = self.table(spec.name)
            if existing is None:
                raise
            return existing

    def tables(self) -> list[str]:
        """Names of the Delta tables present under the root."""
        fs, path = _filesystem(self.root, self.storage_options)
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
        dt = self.table(name, version)
        return None if dt is None else dt.to_pyarrow_dataset(filesystem=native_filesystem(dt.table_uri))

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
        return ds.to_table(columns=list(columns) if columns else None, filter=filter)

    def count(self, name: str) -> int:
        ds = self.dataset(name)
        return 0 if ds is None else ds.count_rows()

    def distinct(self, name: str, column: str, filter: Any | None = None) -> set[str]:
        """Distinct values of one column (list columns are flattened), read in batches."""
        ds = self.dataset(name)
        if ds is None or column not in ds.schema.names:
            return set()
        out: set[str] = set()
        for batch in ds.to_batches(columns=[column], filter=filter):
            col = batch.column(0)
            if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                col = col.flatten()
            out.update(v for v in col.to_pylist() if v is not None)
        return out

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

    def commit_parts(
        self, spec: TableSpec, parts: Iterable[PartFile], operation: str = "stage"
    ) -> int | None:
        """Make worker-written Parquet parts visible in a single Delta transaction."""
        parts = [p for p in parts if p.table == spec.name]
        if not parts:
            return None
        dt = self.ensure(spec)
        actions = []
        now_ms = int(time.time() * 1000)
        for part in parts:
            fs, path = _filesystem(f"{self.uri(spec.name)}/{part.path}", self.storage_options)
            with fs.open(path, "rb") as fh:
                stats = _column_stats(pq.read_table(fh))
            actions.append(
                AddAction(
                    path=part.path,
                    size=part.size,
                    partition_values={},
                    modification_time=now_ms,
                    data_change=True,
                    stats=stats,
                )
            )
        dt.create_write_transaction(
            actions,
            mode="append",
            schema=spec.schema,
            partition_by=list(spec.partition_by) or None,
            commit_properties=CommitProperties(custom_metadata={"egocurate.operation": operation}),
        )
        return int(self.version(spec.name))

    def upsert(self, spec: TableSpec, data: pa.Table, operation: str = "upsert") -> int:
        """Insert new keys and replace rows whose key exists, in one transaction (Delta MERGE)."""
        dt = self.ensure(spec)
        data = tables.conform(data, spec)
        (
            dt.merge(
                source=data,
                predicate=f"t.{spec.key} = s.{spec.key}",
                source_alias="s",
                target_alias="t",
                commit_properties=CommitProperties(custom_metadata={"egocurate.operation": operation}),
            )
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute()
        )
        return int(self.version(spec.name))

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

    def read_parts(self, parts: Iterable[PartFile]) -> pa.Table | None:
        """Read uncommitted parts back (used when a commit must merge instead of append)."""
        pieces = []
        for part in parts:
            fs, path = _filesystem(f"{self.uri(part.table)}/{part.path}", self.storage_options)
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
        fs, root = _filesystem(self.uri(name), self.storage_options)
        referenced = _logged_paths(fs, f"{root}/_delta_log")
        now, removed = time.time(), []
        for info in fs.ls(root, detail=True):
            base = info["name"].rstrip("/").rsplit("/", 1)[-1]
            if info.get("type") != "file" or not base.endswith(".parquet") or base in referenced:
                continue
            mtime = info.get("mtime") or info.get("LastModified") or info.get("last_modified")
            if mtime is None:
                continue
            mtime = mtime.timestamp() if hasattr(mtime, "timestamp") else float(mtime)
            if now - mtime > older_than_s:
                fs.rm_file(info["name"])
                removed.append(base)
        return removed

    def vacuum(self, name: str, retention_hours: int = 168, dry_run: bool = True) -> list[str]:
        """Delete files no version references: replaced files and orphan parts of killed runs.

        Only files older than `retention_hours` go, so parts a running job has written but not
        committed yet are safe with the default of a week.
        """
        dt = self.table(name)
        if dt is None:
            return []
        return dt.vacuum(
            retention_hours=retention_hours, dry_run=dry_run, enforce_retention_duration=False, full=True
        )
