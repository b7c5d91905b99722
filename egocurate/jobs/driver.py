"""The driver side of a stage run: anti-join for resumption, engine map, commits, summary.

Engines (local, Ray, Spark) only move batches to workers and manifests back; everything that
touches the catalog happens here, on the driver, so every engine commits the same way.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog, PartFile
from egocurate.jobs.stage import Stage
from egocurate.jobs.summary import StageSummary


class Engine(Protocol):
    """Runs a stage over rows and yields manifest tables (see ``jobs.stage.MANIFEST_SCHEMA``)."""

    name: str

    def map(self, stage: Stage, rows: pa.Table, catalog: Catalog) -> Iterator[pa.Table]: ...

    def close(self) -> None: ...


def done_keys(stage: Stage, catalog: Catalog) -> tuple[set[str], set[str]]:
    """(ledgered keys, keys done but not ledgered) for this stage.

    A key is done when the ledger has it, or when the stage's own table or the quarantine already
    holds it: a run killed between committing output and committing the ledger leaves the latter.
    """
    ledgered = catalog.distinct(tables.LEDGER.name, "key", filter=pc.field("stage") == stage.name)
    unledgered: set[str] = set()
    for column in stage.done_columns():
        unledgered |= catalog.distinct(stage.output_table, column)
    unledgered |= catalog.distinct(tables.QUARANTINE.name, "key", filter=pc.field("stage") == stage.name)
    return ledgered, unledgered - ledgered


def _ledger_rows(
    stage: Stage, keys: list[str], run_id: str, rows_out: dict[str, int] | None = None
) -> pa.Table:
    now = time.time_ns() // 1000
    return pa.table(
        {
            "stage": pa.array([stage.name] * len(keys), pa.string()),
            "key": pa.array(keys, pa.string()),
            "run_id": pa.array([run_id] * len(keys), pa.string()),
            "rows_out": pa.array([(rows_out or {}).get(k, 0) for k in keys], pa.int64()),
            "time": pa.array([now] * len(keys), pa.timestamp("us", tz="UTC")),
        }
    )


def pending_rows(stage: Stage, catalog: Catalog, rows: pa.Table, run_id: str = "repair") -> pa.Table:
    """Anti-join `rows` against what the stage already did; this is what makes reruns free.

    Keys found done in the stage's tables but missing from the ledger (a kill between the two
    commits) are ledgered now, so the ledger stays a complete record of finished work.
    """
    if rows.num_rows == 0:
        return rows
    ledgered, unledgered = done_keys(stage, catalog)
    done = ledgered | unledgered
    if not done:
        return rows
    keys = rows.column(stage.input_key).cast(pa.string())
    repair = sorted(set(keys.to_pylist()) & unledgered)
    if repair:
        catalog.append(
            tables.LEDGER, _ledger_rows(stage, repair, run_id), operation=f"ledger-repair:{stage.name}"
        )
    mask = pc.invert(pc.is_in(keys, value_set=pa.array(sorted(done), pa.string())))
    return rows.filter(mask)


def _parts(manifest: pa.Table) -> list[PartFile]:
    out = []
    for row in manifest.filter(pc.not_equal(manifest.column("table"), "")).to_pylist():
        out.append(PartFile(table=row["table"], path=row["path"], size=row["size"], num_rows=row["num_rows"]))
    return out


class _Committer:
    """Collects manifests and commits them: output parts, quarantine parts, then the ledger."""

    def __init__(self, stage: Stage, catalog: Catalog, run_id: str, summary: StageSummary):
        self.stage, self.catalog, self.run_id, self.summary = stage, catalog, run_id, summary
        self.spec = tables.spec_for(stage.output_table)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def add(self, manifest: pa.Table) -> None:
        self.pending.append(manifest)
        self.pending_rows += int(pc.sum(manifest.column("rows_in")).as_py() or 0)

    def _commit_output(self, parts: list[PartFile]) -> None:
        if not self.stage.merges_duplicates:
            version = self.catalog.commit_parts(self.spec, parts, operation=self.stage.name)
        else:
            # Stages whose output key is not their input key (many uris -> one video) may collide
            # with rows already committed; those commits go through a MERGE instead of an append.
            incoming = self.catalog.read_parts(parts)
            if incoming is None:
                return
            keys = incoming.column(self.spec.key)
            existing = self.catalog.read(self.spec.name, filter=pc.field(self.spec.key).isin(keys))
            collides = existing.num_rows > 0 or len(pc.unique(keys)) < incoming.num_rows
            if collides:
                folded = self.stage.merge_duplicates(existing, incoming)
                version = self.catalog.upsert(self.spec, folded, operation=self.stage.name)
            else:
                version = self.catalog.commit_parts(self.spec, parts, operation=self.stage.name)
        if version is not None:
            self.summary.versions[self.spec.name] = version

    def commit(self) -> None:
        if not self.pending:
            return
        manifest = pa.concat_tables(self.pending)
        self.pending, self.pending_rows = [], 0
        parts = _parts(manifest)
        output_parts = [p for p in parts if p.table == self.spec.name]
        quarantine_parts = [p for p in parts if p.table == tables.QUARANTINE.name]
        self._commit_output(output_parts)
        if quarantine_parts:
            version = self.catalog.commit_parts(
                tables.QUARANTINE, quarantine_parts, operation=self.stage.name
            )
            self.summary.versions[tables.QUARANTINE.name] = int(version or 0)
        bookkeeping = manifest.filter(pc.equal(manifest.column("table"), ""))
        keys = pc.list_flatten(bookkeeping.column("keys")).to_pylist()
        out_counts: dict[str, int] = {}
        for part_row in manifest.filter(pc.equal(manifest.column("table"), self.spec.name)).to_pylist():
            for key in part_row["keys"]:
                out_counts[key] = out_counts.get(key, 0) + 1
        ledger = _ledger_rows(self.stage, keys, self.run_id, out_counts)
        self.catalog.append(tables.LEDGER, ledger, operation=f"ledger:{self.stage.name}")
        self.summary.rows_out += sum(p.num_rows for p in output_parts)
        self.summary.quarantined += sum(p.num_rows for p in quarantine_parts)
        self.summary.video_seconds += float(pc.sum(bookkeeping.column("video_seconds")).as_py() or 0.0)
        self.summary.commits += 1


def check_inputs(stage: Stage, rows: pa.Table) -> None:
    """Fail before any work when the rows lack a column the stage declares it reads."""
    missing = [c for c in (stage.input_key, *stage.reads) if c not in rows.column_names]
    if missing:
        raise ValueError(
            f"stage {stage.name!r} reads column(s) {missing} that its input lacks; "
            f"the input has {rows.column_names}"
        )


ORPHAN_GRACE_S = 3600.0


def remove_orphans(catalog: Catalog, names: tuple[str, ...]) -> None:
    """Delete parts that killed runs left in these tables (older than ``EGOCURATE_ORPHAN_GRACE_S``).

    Best effort: a cleanup that fails never stops the stage; the parts stay invisible either way.
    """
    grace = float(os.environ.get("EGOCURATE_ORPHAN_GRACE_S", ORPHAN_GRACE_S))
    for name in names:
        with contextlib.suppress(Exception):
            catalog.remove_orphans(name, older_than_s=grace)


def run_stage(
    stage: Stage,
    rows: pa.Table,
    catalog: Catalog,
    engine: Engine,
    commit_every: int = 256,
    progress: bool = True,
    run_id: str | None = None,
) -> StageSummary:
    """Run `stage` over the `rows` it has not done yet, committing every `commit_every` input rows."""
    check_inputs(stage, rows)
    catalog.ensure(tables.spec_for(stage.output_table))
    summary = StageSummary(stage=stage.name, engine=engine.name)
    start = time.perf_counter()
    remove_orphans(catalog, (stage.output_table, tables.QUARANTINE.name))
    run_id = run_id or uuid.uuid4().hex[:12]
    todo = pending_rows(stage, catalog, rows, run_id)
    summary.rows_in = todo.num_rows
    summary.rows_skipped = rows.num_rows - todo.num_rows
    if todo.num_rows:
        committer = _Committer(stage, catalog, run_id, summary)
        bar = tqdm(
            total=todo.num_rows, desc=f"{stage.name} [{engine.name}]", unit="row", disable=not progress
        )
        try:
            for manifest in engine.map(stage, todo, catalog):
                committer.add(manifest)
                bar.update(int(pc.sum(manifest.column("rows_in")).as_py() or 0))
                if committer.pending_rows >= commit_every:
                    committer.commit()
            committer.commit()
        except Exception:
            # An engine that gives up (lost nodes, no progress) keeps what its workers finished.
            with contextlib.suppress(Exception):
                committer.commit()
            raise
        finally:
            bar.close()
    summary.seconds = time.perf_counter() - start
    return summary
