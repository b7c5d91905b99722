"""``catalog repair``: fix what :mod:`egocurate.catalog.health` finds, keeping every good row.

Every change is a commit on the latest version under the same compare-and-swap rule as every other
commit (``Catalog.rewrite_files``: built on version V, lands at exactly V+1 or is rebuilt), so a
repair never undoes a writer's commit and two repairs at once do the work once. Rules:

- ``damaged_log``: the damaged entry is copied to ``_delta_log/_corrupt/`` (a name of its own) and
  replaced in place, atomically, by a commit with no data actions that records the repair; every
  later commit stays. The damaged commit's rows are lost; the ledger rule below redoes them.
- ``missing_log``: the table is rebuilt from the data files in its folder (one row per key, the
  newest file's), as a new version 0 written with put-if-absent.
- ``lost_file``: the missing files are removed from the table (their rows are lost), nothing else.
- ``uncastable_file``: the file is replaced by its rows whose values cast; the other rows' keys
  are listed in the repair record.
- ``schema_drift``: the file is replaced by the same rows cast to the declared schema.
- ``duplicate_keys``: files holding a later copy of a key are replaced without it (DEDUP_RULE).
- ``orphan_files``: deleted (they were never visible).
- ``ledger_missing_output``: those ledger rows are removed, so the next run redoes that work; the
  keys are listed in the repair record.
- ``dangling_reference``: left for a rerun, which restores the lost rows the references name.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from egocurate.catalog import tables
from egocurate.catalog.health import (
    DEDUP_RULE,
    OutputsFor,
    StageOutput,
    TableState,
    current_files,
    inspect,
    inspect_table,
    log_damage,
    missing_ledger_keys,
    read_data_file,
    unique_columns,
)
from egocurate.catalog.log import LOG_DIR, entry_name, read_entry, repair_entry, replace_damaged_entry
from egocurate.catalog.store import ORPHAN_GRACE_HOURS, Catalog, filesystem

KEYS_SHOWN = 20  # keys listed per repair record (the count is always exact)


def _version0_payload(spec: tables.TableSpec, note: dict) -> bytes:
    """A version-0 entry (protocol, metadata of `spec`'s schema, a repair note) for a table whose
    first entry is damaged: deltalake writes one for an empty table, which is copied."""
    from deltalake import DeltaTable

    with tempfile.TemporaryDirectory() as tmp:
        DeltaTable.create(tmp, schema=spec.schema, name=spec.name)
        with open(os.path.join(tmp, LOG_DIR, entry_name(0)), encoding="utf-8") as fh:
            lines = [ln for ln in fh.read().splitlines() if ln.strip() and "commitInfo" not in ln]
    return ("\n".join(lines) + "\n").encode() + repair_entry(int(time.time() * 1000), note)


def replace_damaged_entries(catalog: Catalog, name: str) -> dict | None:
    """Replace each damaged entry of the replayed log by a repair commit; later commits stay."""
    fs, log_dir = filesystem(f"{catalog.uri(name)}/{LOG_DIR}", catalog.storage_options)
    replaced, copies = [], []
    for version, why in log_damage(catalog, name):
        damaged = read_entry(fs, log_dir, version)
        note = {
            "replaced_damaged_log_version": version,
            "why": why,
            "lost": "that commit's rows; the next run redoes them",
        }
        if version == 0:
            payload = _version0_payload(tables.spec_for(name), note)
        else:
            mtime = _mtime(fs.info(f"{log_dir}/{entry_name(version)}")) or time.time()
            payload = repair_entry(int(mtime * 1000), note)
        copies.append(replace_damaged_entry(fs, log_dir, version, damaged, payload).rsplit("/", 1)[-1])
        replaced.append(version)
    if not replaced:
        return None
    return {"table": name, "replaced_damaged_log_versions": replaced, "kept_copies": copies}


def _mtime(info: Mapping) -> float:
    """A listing entry's modification time in seconds (local and object-store spellings)."""
    value = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or 0
    return value.timestamp() if hasattr(value, "timestamp") else float(value)


def rebuild_from_files(catalog: Catalog, name: str) -> dict | None:
    """Write a new log for a table that lost it, from the data files in its folder."""
    from deltalake import write_deltalake

    spec = tables.spec_for(name)
    fs, root = filesystem(catalog.uri(name), catalog.storage_options)
    infos = [
        i for i in fs.ls(root, detail=True) if i.get("type") == "file" and i["name"].endswith(".parquet")
    ]
    infos.sort(key=lambda i: -_mtime(i))
    pieces, skipped = [], []
    for info in infos:  # newest first: the first copy of a key kept is the newest file's
        try:
            pieces.append(salvage(read_data_file(catalog, info["name"]), spec)[0])
        except (OSError, pa.ArrowException) as exc:
            skipped.append(f"{info['name'].rsplit('/', 1)[-1]}: {exc}")
    data = pa.concat_tables(pieces) if pieces else spec.schema.empty_table()
    data = first_per_key(data, list(unique_columns(name) or (spec.key,)))
    note = {"rebuilt_log_from_files": len(infos), "rows": data.num_rows, "unreadable_files": skipped}
    try:
        write_deltalake(
            catalog.uri(name),
            data,
            mode="error",
            storage_options=catalog.storage_options or None,
            commit_properties=_props(note),
        )
    except Exception:  # noqa: BLE001 - another repair wrote version 0 first: its rebuild stands
        if catalog.log_version(name) is None:
            raise
        return None
    return {"table": name, **note}


def _props(note: dict):
    from deltalake.transaction import CommitProperties

    return CommitProperties(
        custom_metadata={"egocurate.operation": "repair", "egocurate.repair": json.dumps(note)},
        max_commit_retries=0,
    )


def salvage(
    data: pa.Table, spec: tables.TableSpec, drop: set[int] | None = None
) -> tuple[pa.Table, pa.Table]:
    """(`data` cast to `spec`'s schema without the rows in `drop` and the rows whose values cannot
    be cast, those uncastable rows)."""
    drop = drop or set()
    wanted = pa.array([i not in drop for i in range(data.num_rows)], pa.bool_())
    castable = pa.array([True] * data.num_rows, pa.bool_())
    for fld in spec.schema:
        if fld.name not in data.column_names or data.column(fld.name).type == fld.type:
            continue
        index = data.column_names.index(fld.name)
        column = data.column(fld.name)
        try:  # cast first: some kernels (filter on string_view) exist only for the declared type
            data = data.set_column(index, fld.name, column.cast(fld.type))
            continue
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            pass
        castable = pc.and_(
            castable, pa.array([_casts(v, column.type, fld.type) for v in column.to_pylist()], pa.bool_())
        )
    good = data.filter(pc.and_(wanted, castable))
    bad = data.filter(pc.and_(wanted, pc.invert(castable)))
    return tables.conform(good, spec), bad


def _casts(value: object, source: pa.DataType, target: pa.DataType) -> bool:
    try:
        pa.array([value], type=source).cast(target)
        return True
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return False


def first_per_key(data: pa.Table, columns: list[str]) -> pa.Table:
    """The first row of each key (in `data`'s order)."""
    if data.num_rows == 0:
        return data
    indexed = data.select(columns).append_column("_i", pa.array(range(data.num_rows), pa.int64()))
    first = indexed.group_by(columns, use_threads=False).aggregate([("_i", "min")])
    rows = first.column("_i_min").combine_chunks()
    return data.take(pc.take(rows, pc.sort_indices(rows)))


def _later_copies(state: TableState) -> pa.Table:
    """(`_file`, `_row`) of every row that repeats a key an earlier row (commit order) holds."""
    columns = list(unique_columns(state.name) or ())
    keys = state.keys
    indexed = keys.append_column("_i", pa.array(range(keys.num_rows), pa.int64()))
    first = indexed.group_by(columns, use_threads=False).aggregate([("_i", "min")])
    is_first = pc.is_in(indexed.column("_i"), value_set=first.column("_i_min"))
    return keys.filter(pc.invert(is_first)).select(["_file", "_row"])


class _FilePlan:
    """The files one repair commit replaces, re-planned on each attempt from a fresh inspection."""

    def __init__(self, catalog: Catalog, name: str, outputs_for: OutputsFor | None, ledger_drop: bool):
        self.catalog, self.name, self.outputs_for, self.ledger_drop = catalog, name, outputs_for, ledger_drop
        self.note: dict = {}

    def __call__(self, dt) -> dict[str, pa.Table | None]:
        if self.name == tables.LEDGER.name:  # which ledger rows lack output needs every table
            states, outputs = inspect(self.catalog, self.outputs_for)
            state = states[self.name]
        else:
            grace = ORPHAN_GRACE_HOURS * 3600.0
            states, outputs = {}, {}
            state = inspect_table(self.catalog, self.name, {}, grace)
        spec = tables.spec_for(self.name)
        out: dict[str, pa.Table | None] = {f.path: None for f in state.lost}
        drop_rows: dict[str, set[int]] = {}
        note: dict = {
            "lost_files": [f.path for f in state.lost],
            "lost_rows": sum(f.rows for f in state.lost),
        }
        if state.readable and unique_columns(self.name):
            for row in _later_copies(state).to_pylist():
                drop_rows.setdefault(row["_file"], set()).add(row["_row"])
            note["removed_duplicate_rows"] = sum(len(v) for v in drop_rows.values())
            note["rule"] = DEDUP_RULE
        if self.ledger_drop and self.name == tables.LEDGER.name:
            missing = missing_ledger_keys(states, outputs)
            for row in missing.to_pylist():
                drop_rows.setdefault(row["_file"], set()).add(row["_row"])
            note["removed_ledger_rows"] = missing.num_rows
            note["redo_keys"] = [f"{r['stage']}:{r['key']}" for r in missing.slice(0, KEYS_SHOWN).to_pylist()]
        uncast_keys: list = []
        for data_file in state.files:
            path = data_file.path
            if path in out or not (path in state.uncastable or path in state.drifted or path in drop_rows):
                continue
            rows = read_data_file(self.catalog, data_file.uri)
            good, bad = salvage(rows, spec, drop_rows.get(path, set()))
            if bad.num_rows and spec.key in bad.column_names:
                uncast_keys += bad.column(spec.key).to_pylist()
            out[path] = good
        if uncast_keys:
            note["dropped_uncastable_rows"] = len(uncast_keys)
            note["dropped_keys"] = [str(k) for k in uncast_keys[:KEYS_SHOWN]]
        if state.drifted or state.uncastable:
            note["cast_to_schema"] = sorted({*state.drifted, *state.uncastable})
        self.note = {k: v for k, v in note.items() if v}
        return out


def repair_files(
    catalog: Catalog, name: str, outputs_for: OutputsFor | None, ledger_drop: bool = False
) -> dict | None:
    """One compare-and-swap commit replacing the lost, uncastable, drifted and duplicate-holding
    files of a table (and, for the ledger, dropping rows whose output is missing)."""
    plan = _FilePlan(catalog, name, outputs_for, ledger_drop)
    version = catalog.rewrite_files(
        tables.spec_for(name),
        plan,
        operation="repair",
        metadata={"egocurate.repair": "see the commit's remove and add actions"},
    )
    if version is None:
        return None
    return {"table": name, "version": version, **plan.note}


def _unit_rows(out: StageOutput, keys: pa.Array, data: pa.Table) -> set[int]:
    """Indices of the rows of `data` that belong to one of the input `keys` (any done column)."""
    hit = pa.array([False] * data.num_rows, pa.bool_())
    for column in out.columns:
        if column not in data.column_names:
            continue
        col = data.column(column)
        if pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            parents = pc.list_parent_indices(col)
            inside = pc.is_in(pc.list_flatten(col).cast(pa.string()), value_set=keys)
            rows = set(pc.filter(parents, inside).to_pylist())
            hit = pc.or_(hit, pa.array([i in rows for i in range(data.num_rows)], pa.bool_()))
        else:
            hit = pc.or_(hit, pc.fill_null(pc.is_in(col.cast(pa.string()), value_set=keys), False))
    return {i for i, v in enumerate(hit.to_pylist()) if v}


def drop_partial_units(catalog: Catalog, outputs_for: OutputsFor | None) -> list[dict]:
    """Remove what is left of a unit of work that lost some of its rows (a video that kept 3 of its
    5 clips), so the ledger rule below redoes it whole: the rerun recomputes the same rows, while a
    part kept would count as done and leave the unit short forever."""
    states, outputs = inspect(catalog, outputs_for)
    missing = missing_ledger_keys(states, outputs)
    partial = missing.filter(pc.greater(missing.column("found"), 0))
    changes = []
    for stage, out in outputs.items():
        mine = partial.filter(pc.equal(partial.column("stage"), stage))
        keys = pc.unique(mine.column("key").combine_chunks())
        if len(keys) == 0:
            continue
        spec = tables.spec_for(out.table)

        def plan(dt, out=out, keys=keys, spec=spec) -> dict[str, pa.Table | None]:
            replacements: dict[str, pa.Table | None] = {}
            for data_file in current_files(catalog, dt):
                rows = read_data_file(catalog, data_file.uri)
                drop = _unit_rows(out, keys, rows)
                if drop:
                    replacements[data_file.path] = salvage(rows, spec, drop)[0]
            return replacements

        version = catalog.rewrite_files(spec, plan, operation="repair",
                                        metadata={"egocurate.repair": "drop partial units"})  # fmt: skip
        if version is not None:
            shown = [str(k) for k in keys.to_pylist()[:KEYS_SHOWN]]
            changes.append({"table": out.table, "version": version, "stage": stage,
                            "redo_partial_units": len(keys), "redo_keys": shown})  # fmt: skip
    return changes


def repair(catalog: Catalog, outputs_for: OutputsFor | None = None) -> list[dict]:
    """Fix every finding :func:`~egocurate.catalog.health.check` can fix; one record per change."""
    changes: list[dict] = []
    states, _ = inspect(catalog, outputs_for)
    for name, state in states.items():
        kinds = {f.kind for f in state.findings}
        if "damaged_log" in kinds:
            _add(changes, replace_damaged_entries(catalog, name))
        if "missing_log" in kinds:
            _add(changes, rebuild_from_files(catalog, name))
    states, _ = inspect(catalog, outputs_for)
    file_kinds = {"lost_file", "uncastable_file", "schema_drift", "duplicate_keys"}
    for name, state in states.items():
        if name != tables.LEDGER.name and file_kinds & {f.kind for f in state.findings}:
            _add(changes, repair_files(catalog, name, outputs_for))
        if any(f.kind == "orphan_files" for f in state.findings):
            removed = catalog.remove_orphans(name, older_than_s=ORPHAN_GRACE_HOURS * 3600.0)
            _add(changes, {"table": name, "removed_orphan_parts": len(removed)} if removed else None)
    if tables.LEDGER.name in states:  # last: it needs every output table repaired first
        changes.extend(drop_partial_units(catalog, outputs_for))
        _add(changes, repair_files(catalog, tables.LEDGER.name, outputs_for, ledger_drop=True))
    return changes


def _add(changes: list[dict], change: dict | None) -> None:
    if change:
        changes.append(change)


def fixable(kind: str) -> bool:
    """Whether repair fixes findings of this kind (dangling references need a rerun)."""
    return kind != "dangling_reference"
