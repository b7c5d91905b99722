"""The driver side of a stage run: anti-join for resumption, engine map, commits, summary.

Engines (local, Ray, Spark) only move batches to workers and manifests back; everything that
touches the catalog happens here, on the driver, so every engine commits the same way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Protocol

import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from egocurate.catalog import tables
from egocurate.catalog.commit_base import CommitBase
from egocurate.catalog.store import Catalog, PartFile
from egocurate.jobs.fused import FusedStage, todo_column
from egocurate.jobs.stage import Stage
from egocurate.jobs.summary import StageSummary

log = logging.getLogger(__name__)


class Engine(Protocol):
    """Runs a stage over rows and yields manifest tables (see ``jobs.worker.MANIFEST_SCHEMA``)."""

    name: str

    def map(self, stage: Stage, rows: pa.Table, catalog: Catalog) -> Iterator[pa.Table]: ...

    def close(self) -> None: ...


def found_among(stage: Stage, catalog: Catalog, among: pa.Array) -> pa.Array:
    """The keys of `among` (not ledgered) that the stage's table or the quarantine already holds:
    a run killed between committing output and committing the ledger leaves these. Streams each
    done column in record batches against `among` (small in a rerun), so memory stays bounded."""
    mine = pc.field("stage") == stage.name
    found = [catalog.values_among(stage.output_table, column, among) for column in stage.done_columns()]
    found.append(catalog.values_among(tables.QUARANTINE.name, "key", among, filter=mine))
    return pc.unique(pa.concat_arrays(found))


# Ledger and quarantine rows are unique per (stage, key): a key two racing runs both finished is
# recorded once (Catalog.commit_parts drops what the table already holds, compare-and-swap).
LEDGER_KEY = [("key", "stage")]
QUARANTINE_KEY = [("key", "stage")]


def _ledger_rows(
    stage: Stage,
    keys: list[str],
    run_id: str,
    rows_out: dict[str, int] | None = None,
    quarantined: set[str] | None = None,
) -> pa.Table:
    now = time.time_ns() // 1000
    return pa.table(
        {
            "stage": pa.array([stage.name] * len(keys), pa.string()),
            "key": pa.array(keys, pa.string()),
            "run_id": pa.array([run_id] * len(keys), pa.string()),
            "rows_out": pa.array([(rows_out or {}).get(k, 0) for k in keys], pa.int64()),
            "time": pa.array([now] * len(keys), pa.timestamp("us", tz="UTC")),
            "quarantined": pa.array([k in (quarantined or set()) for k in keys], pa.bool_()),
        }
    )


def pending_rows(stage: Stage, catalog: Catalog, rows: pa.Table, run_id: str = "repair") -> pa.Table:
    """Anti-join `rows` against what the stage already did; this is what makes reruns free.

    One hash lookup of the input keys in the stage's ledger keys (Arrow, ~20 bytes a key, no Python
    set); only the keys not ledgered are looked up in the stage's table and the quarantine, streamed.
    Keys found done there but missing from the ledger (a kill between the two commits) are
    ledgered now, so the ledger stays a complete record of finished work.
    """
    if rows.num_rows == 0:
        return rows
    keys = rows.column(stage.input_key).cast(pa.string()).combine_chunks()
    ledgered = catalog.key_column(tables.LEDGER.name, "key", filter=pc.field("stage") == stage.name)
    todo = pc.invert(pc.is_in(keys, value_set=ledgered)) if len(ledgered) else None
    del ledgered  # the one array of every finished key: gone before the next read
    candidates = pc.unique(keys if todo is None else keys.filter(todo))
    unledgered = found_among(stage, catalog, candidates) if len(candidates) else candidates
    if len(unledgered):
        counts, quarantined = _what_was_done(stage, catalog, unledgered)
        catalog.append_unique(
            tables.LEDGER,
            _ledger_rows(stage, sorted(unledgered.to_pylist()), run_id, counts, quarantined),
            unique=LEDGER_KEY,
            operation=f"ledger-repair:{stage.name}",
        )
        undone = pc.invert(pc.is_in(keys, value_set=unledgered))
        todo = undone if todo is None else pc.and_(todo, undone)
    return rows if todo is None else rows.filter(todo)


def _what_was_done(stage: Stage, catalog: Catalog, keys: pa.Array) -> tuple[dict[str, int], set[str]]:
    """(output rows per key, keys in the quarantine) for keys found done but not ledgered, so the
    ledger row written for them says what the finished run would have said (`catalog check`
    compares it with the tables)."""
    counts: dict[str, int] = {}
    for column in stage.done_columns():
        values = catalog.read(stage.output_table, columns=[column]).column(0).combine_chunks()
        if pa.types.is_list(values.type) or pa.types.is_large_list(values.type):
            values = pc.list_flatten(values)
        values = values.cast(pa.string())
        hits = pc.value_counts(values.filter(pc.fill_null(pc.is_in(values, value_set=keys), False)))
        for key, count in zip(
            hits.field("values").to_pylist(), hits.field("counts").to_pylist(), strict=True
        ):
            counts[key] = counts.get(key, 0) + int(count)
    mine = pc.field("stage") == stage.name
    held = catalog.values(tables.QUARANTINE.name, "key", filter=mine)
    quarantined = set(keys.filter(pc.is_in(keys, value_set=held)).to_pylist())
    return counts, quarantined


def _parts(manifest: pa.Table) -> list[PartFile]:
    out = []
    for row in manifest.filter(pc.not_equal(manifest.column("table"), "")).to_pylist():
        out.append(PartFile(table=row["table"], path=row["path"], size=row["size"], num_rows=row["num_rows"]))
    return out


class _Committer:
    """Collects manifests and commits them: output parts, quarantine parts, then the ledger."""

    def __init__(
        self,
        stage: Stage,
        catalog: Catalog,
        run_id: str,
        summary: StageSummary,
        bases: dict[str, CommitBase] | None = None,
        optimize_every: int = 0,
    ):
        self.stage, self.catalog, self.run_id, self.summary = stage, catalog, run_id, summary
        self.spec = tables.spec_for(stage.output_table)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0
        self.bases = bases or {}  # table -> what this run's plan was checked against
        self.optimize_every = optimize_every

    @staticmethod
    def _part_keys(manifest: pa.Table, part: PartFile) -> list[str]:
        rows = manifest.filter(pc.equal(manifest.column("path"), part.path))
        return pc.list_flatten(rows.column("keys")).to_pylist()

    def add(self, manifest: pa.Table) -> None:
        manifest = manifest.filter(pc.equal(manifest.column("stage"), self.stage.name))  # fused groups
        self.pending.append(manifest)
        self.pending_rows += int(pc.sum(manifest.column("rows_in")).as_py() or 0)

    def _commit_output(self, parts: list[PartFile]) -> None:
        # Idempotent by key: rows whose output key, or whose input key (done columns), the table
        # already holds are dropped at commit time, so a racing writer's copy is never doubled.
        unique = [(self.spec.key,), *((c,) for c in self.stage.done_columns() if c != self.spec.key)]
        if not self.stage.merges_duplicates:
            version = self.catalog.commit_parts(
                self.spec,
                parts,
                operation=self.stage.name,
                unique=unique,
                base=self.bases.get(self.spec.name),
            )
        else:
            # Stages whose output key is not their input key (many uris -> one video) may collide
            # with rows already committed; those fold into the existing row (a keyed overwrite,
            # re-folded on top of whatever version the commit lands on).
            # Without a colliding key the parts are appended (the cost of a plain commit).
            version = self.catalog.commit_or_fold(
                self.spec, parts, self.stage.merge_duplicates, self.stage.name, self.bases.get(self.spec.name)
            )
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
                tables.QUARANTINE, quarantine_parts, operation=self.stage.name, unique=QUARANTINE_KEY,
                base=self.bases.get(tables.QUARANTINE.name),
            )  # fmt: skip
            self.summary.versions[tables.QUARANTINE.name] = int(version or 0)
        bookkeeping = manifest.filter(pc.equal(manifest.column("table"), ""))
        keys = pc.list_flatten(bookkeeping.column("keys")).to_pylist()
        out_counts: dict[str, int] = {}
        for part_row in manifest.filter(pc.equal(manifest.column("table"), self.spec.name)).to_pylist():
            for key in part_row["keys"]:
                out_counts[key] = out_counts.get(key, 0) + 1
        quarantined_keys = {k for p in quarantine_parts for k in self._part_keys(manifest, p)}
        ledger = _ledger_rows(self.stage, keys, self.run_id, out_counts, quarantined_keys)
        self.summary.no_output += len(set(keys) - set(out_counts) - quarantined_keys)
        self.catalog.append_unique(
            tables.LEDGER, ledger, unique=LEDGER_KEY, operation=f"ledger:{self.stage.name}",
            base=self.bases.get(tables.LEDGER.name),
        )  # fmt: skip
        self.summary.rows_out += sum(p.num_rows for p in output_parts)
        self.summary.quarantined += sum(p.num_rows for p in quarantine_parts)
        self.summary.video_seconds += float(pc.sum(bookkeeping.column("video_seconds")).as_py() or 0.0)
        self.summary.worker_seconds += float(pc.sum(bookkeeping.column("worker_seconds")).as_py() or 0.0)
        self.summary.commits += 1
        if self.optimize_every and self.summary.commits % self.optimize_every == 0:
            self.compact()

    def compact(self) -> None:
        """Compact the stage's table and the ledger (a commit of their own; rows unchanged), so
        the file count, and with it the cost of loading a snapshot, stays bounded."""
        for name in (self.spec.name, tables.LEDGER.name):
            try:
                self.catalog.optimize(name)
            except Exception as exc:  # noqa: BLE001 - compaction is upkeep: the run's work goes on
                log.warning("compaction of %s skipped: %s", name, " ".join(str(exc).split())[:300])


def check_inputs(stage: Stage, rows: pa.Table) -> None:
    """Fail before any work when the rows lack a column the stage declares it reads."""
    missing = [c for c in (stage.input_key, *stage.reads) if c not in rows.column_names]
    if missing:
        raise ValueError(
            f"stage {stage.name!r} reads column(s) {missing} that its input lacks; "
            f"the input has {rows.column_names}"
        )


def ensure_tables(catalog: Catalog, names: tuple[str, ...]) -> None:
    """Create a stage's tables before any worker writes a part into their folders: a table folder
    that holds parts but no log reads as a table that lost its log (`Catalog.lost_log`)."""
    for name in (*names, tables.QUARANTINE.name, tables.LEDGER.name):
        catalog.ensure(tables.spec_for(name))


def commit_bases(catalog: Catalog, stage: Stage) -> dict[str, CommitBase]:
    """What the stage's commits check keys against: the versions its anti-join is about to read.

    Taken before the anti-join, so any key committed after it is in a file the commits will read.
    Merging stages (ingest's fold) keep their table's keys at the base, so they fold (a keyed
    overwrite) only when a key exists and append otherwise.
    """
    fixed = {"stage": stage.name}
    bases = {
        tables.LEDGER.name: catalog.commit_base(tables.LEDGER.name, fixed),
        tables.QUARANTINE.name: catalog.commit_base(tables.QUARANTINE.name, fixed),
    }
    key = tables.spec_for(stage.output_table).key if stage.merges_duplicates else None
    bases[stage.output_table] = catalog.commit_base(stage.output_table, key_column=key)
    return bases


OPTIMIZE_EVERY = 100  # commits of one stage between compactions of its table and the ledger


def optimize_every() -> int:
    """Commits between automatic compactions (``EGOCURATE_OPTIMIZE_EVERY``; 0 turns them off)."""
    return int(os.environ.get("EGOCURATE_OPTIMIZE_EVERY", OPTIMIZE_EVERY))


ORPHAN_GRACE_S = 3600.0


def remove_orphans(catalog: Catalog, names: tuple[str, ...]) -> None:
    """Delete parts that killed runs left in these tables (older than ``EGOCURATE_ORPHAN_GRACE_S``).

    Best effort: a cleanup that fails never stops the stage; the parts stay invisible either way.
    """
    grace = float(os.environ.get("EGOCURATE_ORPHAN_GRACE_S", ORPHAN_GRACE_S))
    for name in names:
        with contextlib.suppress(Exception):
            catalog.remove_orphans(name, older_than_s=grace)


def _drive(
    engine: Engine,
    stage: Stage | FusedStage,
    todo: pa.Table,
    catalog: Catalog,
    committers: list[_Committer],
    commit_every: int,
    progress: bool,
) -> None:
    """Map `stage` over `todo` on `engine`; commit all committers every `commit_every` input rows."""
    bar = tqdm(total=todo.num_rows, desc=f"{stage.name} [{engine.name}]", unit="row", disable=not progress)
    try:
        for manifest in engine.map(stage, todo, catalog):
            for committer in committers:
                committer.add(manifest)
            bookkeeping = manifest.filter(pc.equal(manifest.column("table"), ""))
            bar.update(len(set(pc.list_flatten(bookkeeping.column("keys")).to_pylist())))
            if max(c.pending_rows for c in committers) >= commit_every:
                for committer in committers:
                    committer.commit()
        for committer in committers:
            committer.commit()
    except Exception:
        # An engine that gives up (lost nodes, no progress) keeps what its workers finished.
        for committer in committers:
            with contextlib.suppress(Exception):
                committer.commit()
        raise
    finally:
        bar.close()


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
    rows = stage.select_inputs(rows)
    ensure_tables(catalog, (stage.output_table,))
    summary = StageSummary(stage=stage.name, engine=engine.name, no_output_note=stage.no_output_note())
    start = time.perf_counter()
    remove_orphans(catalog, (stage.output_table, tables.QUARANTINE.name))
    run_id = run_id or uuid.uuid4().hex[:12]
    bases = commit_bases(catalog, stage)  # before the anti-join reads the tables
    todo = pending_rows(stage, catalog, rows, run_id)
    summary.rows_in = todo.num_rows
    summary.rows_skipped = rows.num_rows - todo.num_rows
    if todo.num_rows:
        committers = [_Committer(stage, catalog, run_id, summary, bases, optimize_every())]
        _drive(engine, stage, todo, catalog, committers, commit_every, progress)
    summary.seconds = time.perf_counter() - start
    return summary


def run_fused(
    fused: FusedStage,
    rows: pa.Table,
    catalog: Catalog,
    engine: Engine,
    commit_every: int = 256,
    progress: bool = True,
    run_id: str | None = None,
) -> list[StageSummary]:
    """Run a fused group of stages in one pass (one decode per clip); one summary per member.

    Each member resumes on its own: a row goes through the pass when any member still has to do it,
    flagged per member, and each member commits and ledgers only its own rows.
    """
    run_id = run_id or uuid.uuid4().hex[:12]
    start = time.perf_counter()
    key = fused.input_key
    remove_orphans(catalog, (*(m.output_table for m in fused.members), tables.QUARANTINE.name))
    flags, summaries, committers = {}, [], []
    for member in fused.members:
        check_inputs(member, rows)
        ensure_tables(catalog, (member.output_table,))
        bases = commit_bases(catalog, member)
        todo = pending_rows(member, catalog, rows, run_id)
        summary = StageSummary(
            stage=member.name, engine=f"{engine.name} (fused)", no_output_note=member.no_output_note()
        )
        summary.rows_in, summary.rows_skipped = todo.num_rows, rows.num_rows - todo.num_rows
        flags[member.name] = pc.is_in(rows.column(key), value_set=todo.column(key).combine_chunks())
        summaries.append(summary)
        committers.append(_Committer(member, catalog, run_id, summary, bases, optimize_every()))
    for member in fused.members:
        rows = rows.append_column(todo_column(member.name), flags[member.name])
    any_todo = flags[fused.members[0].name]
    for member in fused.members[1:]:
        any_todo = pc.or_(any_todo, flags[member.name])
    todo_rows = rows.filter(any_todo)
    if todo_rows.num_rows:
        _drive(engine, fused, todo_rows, catalog, committers, commit_every, progress)
    for summary in summaries:
        summary.seconds = time.perf_counter() - start
    return summaries
