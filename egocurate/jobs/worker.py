"""The worker side of a stage run: process a batch, write Parquet parts, hand back a manifest.

Every engine calls :func:`run_on_worker` on its workers (a local loop, a Ray actor, a Spark
``mapInArrow`` task); only the small manifest travels back to the driver, which commits.
"""

from __future__ import annotations

import time
import traceback
import uuid

import pyarrow as pa
import pyarrow.compute as pc

from egocurate.catalog import tables
from egocurate.catalog.store import PartFile, write_part
from egocurate.jobs.fused import FusedStage
from egocurate.jobs.stage import Stage

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
        ("stage", pa.string()),  # which stage the row belongs to (a fused group runs several)
    ]
)


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


PREPARE_SECONDS = b"egocurate.prepare_seconds"  # schema metadata: time a prepare step took


def timed_prepare(stage: Stage | FusedStage, batch: pa.Table) -> pa.Table:
    """``stage.prepare(batch)``, its seconds carried in the schema so the worker counts them as the
    stage's own work (a CPU task or the actor itself may prepare, ahead of ``run_on_worker``)."""
    start = time.perf_counter()
    out = stage.prepare(batch)
    seconds = time.perf_counter() - start + _prepare_seconds(batch)
    return out.replace_schema_metadata({**(out.schema.metadata or {}), PREPARE_SECONDS: repr(seconds)})


def _prepare_seconds(batch: pa.Table) -> float:
    return float((batch.schema.metadata or {}).get(PREPARE_SECONDS, b"0"))


def run_on_worker(
    stage: Stage | FusedStage, batch: pa.Table, catalog_root: str, storage_options: dict | None
) -> pa.Table:
    """Process one batch on a worker, write its Parquet parts, return manifest rows for the driver.

    Nothing becomes visible here: the driver commits the parts in one Delta transaction. A fused
    group decodes each clip once (unless a prepare step did already) and runs each member on the
    rows that member still has to do; every member gets its own manifest rows.
    """
    prepared_seconds = _prepare_seconds(batch)  # decode done ahead, by a CPU task or the actor
    if isinstance(stage, FusedStage):
        start = time.perf_counter()
        prepared = stage.prepare(batch)
        decode_seconds = time.perf_counter() - start + prepared_seconds
        units = stage.member_batches(prepared)
        rows: list[dict] = []
        share = decode_seconds / len(units)  # the shared decode, split evenly between the members
        for member, sub in units:
            rows += _member_manifest(member, sub, catalog_root, storage_options, share)
        return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    rows = _member_manifest(stage, batch, catalog_root, storage_options, prepared_seconds)
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def _member_manifest(
    stage: Stage, batch: pa.Table, catalog_root: str, storage_options: dict | None, extra_seconds: float = 0.0
) -> list[dict]:
    """Run one stage on `batch`: its parts, then its manifest rows (bookkeeping first)."""
    start = time.perf_counter()
    keys = _as_strings(batch.column(stage.input_key))
    good: pa.Table | None = None
    if batch.num_rows == 0:
        bad = quarantine_rows(stage, batch, "", "")
    else:
        try:
            out = stage.process(batch)
            good, bad = split_errors(stage, out)
        except Exception as exc:  # a bug or an unexpected input must not kill the run
            message = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"
            bad = quarantine_rows(stage, batch, tables.STAGE_EXCEPTION, message)
    elapsed = time.perf_counter() - start + extra_seconds
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
    # The first manifest row carries the batch bookkeeping (all input keys, timing); the rest are parts.
    rows = [
        {"table": "", "path": "", "size": 0, "num_rows": 0, "keys": keys, "rows_in": batch.num_rows,
         "video_seconds": _video_seconds(good) if good is not None else 0.0, "worker_seconds": elapsed,
         "stage": stage.name}
    ]  # fmt: skip
    for part, part_keys in parts:
        rows.append(
            {"table": part.table, "path": part.path, "size": part.size, "num_rows": part.num_rows,
             "keys": part_keys, "rows_in": 0, "video_seconds": 0.0, "worker_seconds": 0.0,
             "stage": stage.name}
        )  # fmt: skip
    return rows
