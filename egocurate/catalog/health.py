"""``catalog check`` and ``catalog repair``: find and fix what a crash, a race or a bug left behind.

Faults looked for, per table: a log that cannot be read (a truncated or corrupt ``_delta_log``
entry), files whose physical schema differs from the declared one (``string_view`` for
``string``), duplicate keys, and ledger rows that claim output the stage's table does not hold.

Repair rules (each repair is a Delta commit whose history entry says what changed):
- unreadable log: the entries after the last readable version are moved to
  ``_delta_log/_corrupt/``, so the table is back at that version, then an empty commit records it;
- duplicate keys / schema drift: the table is rewritten, every file cast to the declared schema,
  one row per key kept: the row of the oldest commit (file modification time, then file order):
  the first writer's row, which is what every reader saw before the duplicate landed;
- ledger rows whose output is missing are removed, so the next run redoes that work.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from deltalake import DeltaTable
from deltalake.transaction import CommitProperties

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog, CatalogReadError, filesystem

# Tables whose rows are unique per several columns (one row per stage and input key).
UNIQUE_BY: dict[str, tuple[str, ...]] = {"_ledger": ("stage", "key"), "quarantine": ("stage", "key")}
DEDUP_RULE = "one row per key: the row of the oldest commit (file modification time, then file order)"


@dataclass(frozen=True)
class Finding:
    """One fault: the table, its kind and what exactly is wrong."""

    table: str
    kind: str  # unreadable | schema_drift | duplicate_keys | ledger_missing_output
    detail: str
    count: int = 1


@dataclass(frozen=True)
class StageOutput:
    """Where a stage's finished keys show up: its table and the columns holding input keys."""

    table: str
    columns: tuple[str, ...]


def _table_names(catalog: Catalog) -> list[str]:
    """Every folder with a ``_delta_log``, readable or not."""
    return catalog.tables()


def _unique_columns(name: str) -> tuple[str, ...] | None:
    if name in UNIQUE_BY:
        return UNIQUE_BY[name]
    spec = tables.SPECS.get(name)
    return (spec.key,) if spec is not None else None


def _files_in_commit_order(dt: DeltaTable) -> list[str]:
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    actions.sort(key=lambda a: (a["modification_time"], a["path"]))
    root = dt.table_uri.rstrip("/")
    return [a["path"] if "://" in a["path"] else f"{root}/{a['path']}" for a in actions]


def _read_file(catalog: Catalog, uri: str) -> pa.Table:
    fs, path = filesystem(uri, catalog.storage_options)
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh)


def _duplicates(data: pa.Table, columns: Sequence[str]) -> tuple[int, int]:
    """(keys that repeat, surplus rows) of `data` over `columns`."""
    if data.num_rows == 0:
        return 0, 0
    counts = data.group_by(list(columns)).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
    surplus = int(pc.sum(repeated.column("count_all")).as_py() or 0) - repeated.num_rows
    return repeated.num_rows, surplus


def _drift(catalog: Catalog, name: str, dt: DeltaTable) -> list[str]:
    spec = tables.SPECS.get(name)
    if spec is None:
        return []
    out = []
    for uri in _files_in_commit_order(dt):
        fs, path = filesystem(uri, catalog.storage_options)
        with fs.open(path, "rb") as fh:
            schema = pq.read_schema(fh)
        for fld in spec.schema:
            if fld.name in schema.names and schema.field(fld.name).type != fld.type:
                got = schema.field(fld.name).type
                out.append(f"{uri.rsplit('/', 1)[-1]}: column {fld.name!r} is {got}, declared {fld.type}")
    return out


def check(catalog: Catalog, stage_outputs: Mapping[str, StageOutput] | None = None) -> list[Finding]:
    """Every fault found in the catalog (an empty list: the catalog is clean)."""
    findings: list[Finding] = []
    readable: dict[str, pa.Table] = {}
    for name in _table_names(catalog):
        try:
            dt = catalog.table(name)
            assert dt is not None
            drift = _drift(catalog, name, dt)
            data = (
                pa.concat_tables(
                    [
                        tables.conform(_read_file(catalog, u), tables.SPECS[name])
                        if name in tables.SPECS
                        else _read_file(catalog, u)
                        for u in _files_in_commit_order(dt)
                    ]
                )
                if dt.file_uris()
                else None
            )
        except (CatalogReadError, OSError, pa.ArrowException) as exc:
            findings.append(Finding(name, "unreadable", str(exc)))
            continue
        for line in drift:
            findings.append(Finding(name, "schema_drift", line))
        columns = _unique_columns(name)
        if data is not None and columns:
            keys, surplus = _duplicates(data, columns)
            if keys:
                findings.append(
                    Finding(
                        name,
                        "duplicate_keys",
                        f"{keys} key(s) over {columns} have {surplus} extra row(s)",
                        surplus,
                    )
                )
            readable[name] = data
        elif data is None and name in tables.SPECS:
            readable[name] = tables.SPECS[name].schema.empty_table()
    findings.extend(_ledger_findings(readable, stage_outputs or {}))
    return findings


def _missing_ledger_keys(
    readable: Mapping[str, pa.Table], stage_outputs: Mapping[str, StageOutput]
) -> pa.Table:
    """Ledger rows (stage, key) with rows_out > 0 whose key neither the output nor the quarantine holds."""
    ledger = readable.get(tables.LEDGER.name)
    if ledger is None or ledger.num_rows == 0:
        return tables.LEDGER.schema.empty_table()
    quarantined = readable.get(tables.QUARANTINE.name)
    masks = []
    rows = ledger.to_pylist()
    done: dict[str, set[str]] = {}
    for stage, out in stage_outputs.items():
        have: set[str] = set()
        table = readable.get(out.table)
        if table is None:  # absent or unreadable: that is reported on its own, not as ledger rows
            continue
        for column in out.columns:
            if column not in table.column_names:
                continue
            col = table.column(column)
            if pa.types.is_list(col.type):
                col = pc.list_flatten(col)
            have.update(v for v in col.to_pylist() if v is not None)
        if quarantined is not None:
            mine = quarantined.filter(pc.equal(quarantined.column("stage"), stage))
            have.update(mine.column("key").to_pylist())
        done[stage] = have
    for row in rows:
        known = row["stage"] in done and out_claimed(row)
        masks.append(bool(known and row["key"] not in done[row["stage"]]))
    return ledger.filter(pa.array(masks, pa.bool_()))


def out_claimed(row: dict) -> bool:
    """A ledger row claims output when it says the key produced rows."""
    return bool(row.get("rows_out") or 0)


def _ledger_findings(
    readable: Mapping[str, pa.Table], stage_outputs: Mapping[str, StageOutput]
) -> list[Finding]:
    missing = _missing_ledger_keys(readable, stage_outputs)
    if missing.num_rows == 0:
        return []
    sample = ", ".join(f"{r['stage']}:{r['key']}" for r in missing.slice(0, 3).to_pylist())
    return [
        Finding(
            tables.LEDGER.name,
            "ledger_missing_output",
            f"{missing.num_rows} ledger row(s) claim output that is missing ({sample})",
            missing.num_rows,
        )
    ]


# ----------------------------------------------------------------------------------------- repair
def _last_readable_version(catalog: Catalog, name: str) -> int | None:
    latest = catalog.log_version(name)
    for version in range(latest if latest is not None else -1, -1, -1):
        try:
            dt = DeltaTable(
                catalog.uri(name), version=version, storage_options=catalog.storage_options or None
            )
            dt.to_pyarrow_dataset().count_rows()
            return version
        except Exception:  # noqa: BLE001 - this version is broken too: look further back
            continue
    return None


def _record(dt: DeltaTable, spec_schema: pa.Schema, note: dict) -> None:
    """An empty commit whose history entry records a repair."""
    dt.create_write_transaction(
        [],
        mode="append",
        schema=spec_schema,
        commit_properties=CommitProperties(
            custom_metadata={"egocurate.operation": "repair", "egocurate.repair": json.dumps(note)}
        ),
    )


def restore_readable(catalog: Catalog, name: str) -> dict:
    """Move log entries after the last readable version aside and record it; returns what changed."""
    good = _last_readable_version(catalog, name)
    if good is None:
        raise CatalogReadError(name, catalog.root, catalog.log_version(name), "no version can be read")
    latest = catalog.log_version(name) or 0
    fs, log = filesystem(f"{catalog.uri(name)}/_delta_log", catalog.storage_options)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for version in range(good + 1, latest + 1):
        src = f"{log}/{version:020d}.json"
        if fs.exists(src):
            fs.makedirs(f"{log}/_corrupt", exist_ok=True)
            fs.mv(src, f"{log}/_corrupt/{version:020d}.json.{stamp}")
            moved.append(version)
    for extra in ("_last_checkpoint",):
        if fs.exists(f"{log}/{extra}"):
            fs.mv(f"{log}/{extra}", f"{log}/_corrupt/{extra}.{stamp}")
    dt = DeltaTable(catalog.uri(name), storage_options=catalog.storage_options or None)
    note = {"restored_to_version": good, "moved_log_versions": moved}
    _record(dt, pa.schema(dt.schema().to_arrow()), note)
    return {"table": name, **note}


def rewrite_unique(catalog: Catalog, name: str) -> dict:
    """Rewrite a table cast to its declared schema, one row per key (DEDUP_RULE)."""
    spec = tables.spec_for(name)
    dt = catalog.table(name)
    assert dt is not None
    pieces = [tables.conform(_read_file(catalog, u), spec) for u in _files_in_commit_order(dt)]
    data = pa.concat_tables(pieces) if pieces else spec.schema.empty_table()
    columns = list(_unique_columns(name) or (spec.key,))
    seen: set[tuple] = set()
    keep = []
    key_values = [data.column(c).to_pylist() for c in columns]
    for i in range(data.num_rows):
        key = tuple(v[i] for v in key_values)
        keep.append(key not in seen)
        seen.add(key)
    kept = data.filter(pa.array(keep, pa.bool_()))
    note = {
        "removed_duplicate_rows": data.num_rows - kept.num_rows,
        "rule": DEDUP_RULE,
        "cast_to_schema": True,
    }
    catalog.replace(spec, kept, operation="repair", metadata={"egocurate.repair": json.dumps(note)})
    return {"table": name, **note}


def drop_ledger_rows(catalog: Catalog, missing: pa.Table) -> dict:
    """Remove ledger rows whose output is missing, so the next run redoes that work."""
    ledger = tables.conform(catalog.read(tables.LEDGER.name), tables.LEDGER)
    gone = {(r["stage"], r["key"]) for r in missing.to_pylist()}
    keep = [
        (s, k) not in gone
        for s, k in zip(ledger.column("stage").to_pylist(), ledger.column("key").to_pylist(), strict=True)
    ]
    kept = ledger.filter(pa.array(keep, pa.bool_()))
    note = {"removed_ledger_rows": ledger.num_rows - kept.num_rows, "why": "their output is missing"}
    catalog.replace(tables.LEDGER, kept, operation="repair", metadata={"egocurate.repair": json.dumps(note)})
    return {"table": tables.LEDGER.name, **note}


def repair(catalog: Catalog, stage_outputs: Mapping[str, StageOutput] | None = None) -> list[dict]:
    """Fix every finding of :func:`check`, in dependency order; returns one record per change."""
    changes = []
    for finding in check(catalog, stage_outputs):
        if finding.kind == "unreadable":
            changes.append(restore_readable(catalog, finding.table))
    findings = check(catalog, stage_outputs)
    for name in sorted({f.table for f in findings if f.kind in ("duplicate_keys", "schema_drift")}):
        changes.append(rewrite_unique(catalog, name))
    if any(f.kind == "ledger_missing_output" for f in check(catalog, stage_outputs)):
        readable = {n: catalog.read(n) for n in catalog.tables() if n in tables.SPECS}
        changes.append(drop_ledger_rows(catalog, _missing_ledger_keys(readable, stage_outputs or {})))
    return changes
