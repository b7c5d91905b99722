"""The stage contracts, and the one function every engine calls on a worker.

Two kinds of stage, both declared in full here so that engines and the driver call declared hooks
and never probe with ``getattr``:

- :class:`Stage`: per-row work (``process(batch) -> batch``) that any engine maps over the rows a
  stage has not done yet. Stage packages implement it by subclassing
  :class:`egocurate.stage_base.BaseStage`, which holds the defaults of every optional hook and the
  typed :class:`~egocurate.stage_base.Resources`; they never import this module (DESIGN.md: stages
  know nothing of engines).
- :class:`CorpusStage`: whole-corpus work (dedup, statistics, report) that the driver runs once
  over the catalog (``jobs.corpus``).

A row a stage cannot handle is returned with ``_error_kind`` and ``_error_message`` set (see
``catalog.tables``); :func:`run_on_worker` routes it to quarantine.
"""

from __future__ import annotations

import time
import traceback
import uuid
from typing import ClassVar, Protocol, runtime_checkable

import pyarrow as pa
import pyarrow.compute as pc

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog, PartFile, write_part
from egocurate.jobs.summary import StageSummary
from egocurate.stage_base import BaseStage, Resources

__all__ = ["MANIFEST_SCHEMA", "BaseStage", "CorpusStage", "Resources", "Stage", "run_on_worker"]

# Manifest rows travel from workers to the driver: one row per Parquet part a worker wrote.
MANIFEST_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("num_rows", pa.int64()),
        ("keys", pa.list_(pa.string())),
        ("rows_in", pa.int64()),
        ("video_seconds", pa.float64()),
        ("worker_seconds", pa.float64()),
    ]
)


@runtime_checkable
class Stage(Protocol):
    """A per-row stage (see :class:`egocurate.stage_base.BaseStage` for what each member means)."""

    name: str
    input_key: str
    output_table: str
    reads: tuple[str, ...]
    resources: Resources
    prepare_resources: Resources | None
    has_prepare: bool
    merges_duplicates: bool

    def setup(self) -> None: ...

    def process(self, batch: pa.Table) -> pa.Table: ...

    def prepare(self, batch: pa.Table) -> pa.Table: ...

    def merge_duplicates(self, existing: pa.Table, incoming: pa.Table) -> pa.Table: ...

    def done_columns(self) -> tuple[str, ...]: ...


@runtime_checkable
class CorpusStage(Protocol):
    """A whole-corpus stage: reads the catalog, writes its table in one commit, returns a summary.

    ``run_corpus`` must make a rerun over unchanged inputs do nothing (dedup compares the input
    versions it recorded; statistics and report are cheap and recomputed).
    """

    name: str
    output_table: str
    corpus: ClassVar[bool]

    def run_corpus(self, catalog: Catalog, progress: bool = True) -> StageSummary: ...


def _video_seconds(table: pa.Table) -> float:
    if "duration_s" in table.column_names and table.num_rows:
        total = pc.sum(table.column("duration_s")).as_py()
        return float(total or 0.0)
    return 0.0


def _as_strings(column: pa.ChunkedArray) -> list[str]:
    return [str(v) for v in column.to_pylist()]


def quarantine_rows(stage: Stage, batch: pa.Table, kind: str, message: str) -> pa.Table:
    """Quarantine rows for a whole batch (used when ``process`` itself raised)."""
    keys = _as_strings(batch.column(stage.input_key))
    uris = _as_strings(batch.column("uri")) if "uri" in batch.column_names else keys
    now = pa.scalar(time.time_ns() // 1000, type=pa.timestamp("us", tz="UTC"))
    n = batch.num_rows
    return pa.table(
        {
            "uri": pa.array(uris, pa.string()),
            "stage": pa.array([stage.name] * n, pa.string()),
            "key": pa.array(keys, pa.string()),
            "error_kind": pa.array([kind] * n, pa.string()),
            "message": pa.array([message] * n, pa.string()),
            "time": pa.array([now.as_py()] * n, pa.timestamp("us", tz="UTC")),
        }
    )


def split_errors(stage: Stage, out: pa.Table) -> tuple[pa.Table, pa.Table]:
    """Split a stage's output into good rows (error columns dropped) and quarantine rows."""
    if tables.ERROR_KIND not in out.column_names:
        return out, quarantine_rows(stage, out.slice(0, 0), "", "")
    bad_mask = pc.is_valid(out.column(tables.ERROR_KIND))
    good = out.filter(pc.invert(bad_mask)).drop_columns([tables.ERROR_KIND, tables.ERROR_MESSAGE])
    bad = out.filter(bad_mask)
    if bad.num_rows == 0:
        return good, quarantine_rows(stage, bad, "", "")
    quarantined = quarantine_rows(stage, bad, "", "")
    quarantined = quarantined.set_column(
        quarantined.schema.get_field_index("error_kind"), "error_kind", bad.column(tables.ERROR_KIND)
    )
    messages = bad.column(tables.ERROR_MESSAGE).cast(pa.string())
    quarantined = quarantined.set_column(quarantined.schema.get_field_index("message"), "message", messages)
    return good, quarantined


def run_on_worker(stage: Stage, batch: pa.Table, catalog_root: str, storage_options: dict | None) -> pa.Table:
    """Process one batch on a worker, write its Parquet parts, return manifest rows for the driver.

    Nothing becomes visible here: the driver commits the parts in one Delta transaction.
    """
    start = time.perf_counter()
    keys = _as_strings(batch.column(stage.input_key))
    try:
        out = stage.process(batch)
        good, bad = split_errors(stage, out)
    except Exception as exc:  # a bug or an unexpected input must not kill the run
        message = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
        good = None
        bad = quarantine_rows(stage, batch, tables.STAGE_EXCEPTION, message)
    elapsed = time.perf_counter() - start
    parts: list[tuple[PartFile, list[str]]] = []
    tag = uuid.uuid4().hex
    if good is not None and good.num_rows:
        spec = tables.spec_for(stage.output_table)
        part = write_part(catalog_root, spec, tables.conform(good, spec), tag, storage_options)
        parts.append((part, _as_strings(good.column(stage.input_key))))
    if bad.num_rows:
        part = write_part(
            catalog_root, tables.QUARANTINE, tables.conform(bad, tables.QUARANTINE), tag, storage_options
        )
        parts.append((part, _as_strings(bad.column("key"))))
    rows = {name: [] for name in MANIFEST_SCHEMA.names}
    # The first manifest row carries the batch bookkeeping (all input keys, timing); the rest are parts.
    rows["table"].append("")
    rows["path"].append("")
    rows["size"].append(0)
    rows["num_rows"].append(0)
    rows["keys"].append(keys)
    rows["rows_in"].append(batch.num_rows)
    rows["video_seconds"].append(_video_seconds(good) if good is not None else 0.0)
    rows["worker_seconds"].append(elapsed)
    for part, part_keys in parts:
        rows["table"].append(part.table)
        rows["path"].append(part.path)
        rows["size"].append(part.size)
        rows["num_rows"].append(part.num_rows)
        rows["keys"].append(part_keys)
        rows["rows_in"].append(0)
        rows["video_seconds"].append(0.0)
        rows["worker_seconds"].append(0.0)
    return pa.table(rows, schema=MANIFEST_SCHEMA)
