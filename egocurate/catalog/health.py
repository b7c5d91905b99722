"""``catalog check``: find what a crash, a race, a lost file or a bug left behind in the catalog.

Faults looked for, per table (each a :class:`Finding` of one kind):

- ``damaged_log``: an entry of the log a reader replays is 0 bytes or not JSON (deltalake reads a
  0-byte entry as an empty commit, so that commit's rows would silently be missing);
- ``missing_log``: data files, or an empty log folder, and no log entry;
- ``unreadable``: the log cannot be loaded for another reason;
- ``lost_file``: the current version names a data file that does not exist;
- ``uncastable_file``: a data file holds a column whose values cannot be cast to the declared type;
- ``schema_drift``: a data file stores a column in another (castable) type, e.g. ``string_view``;
- ``duplicate_keys``: a key (or (stage, key) for ``_ledger`` and ``quarantine``) has several rows;
- ``orphan_files``: parts no log entry ever referenced, older than the driver's grace period;
- ``ledger_missing_output``: ledger rows that claim output the stage's table does not hold;
- ``dangling_reference``: clips whose video, or clip rows whose clip, is not in the catalog.

What ``catalog repair`` does about each is in :mod:`egocurate.catalog.repair`. Cost: check reads
the log entries after the last checkpoint, one footer per data file, and the key columns of every
table (not the payload columns), so it grows with rows and files, never with history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from egocurate.catalog import tables
from egocurate.catalog.log import LOG_DIR, last_checkpoint, list_entries, parse_problem, read_entry
from egocurate.catalog.store import (
    ORPHAN_GRACE_HOURS,
    Catalog,
    CatalogReadError,
    filesystem,
)

# Tables whose rows are unique per several columns (one row per stage and input key).
UNIQUE_BY: dict[str, tuple[str, ...]] = {"_ledger": ("stage", "key"), "quarantine": ("stage", "key")}
DEDUP_RULE = "one row per key: the row of the oldest commit (file modification time, then file order)"


@dataclass(frozen=True)
class Finding:
    """One fault: the table, its kind and what exactly is wrong."""

    table: str
    kind: str
    detail: str
    count: int = 1


@dataclass(frozen=True)
class StageOutput:
    """Where a stage's finished keys show up: its table and the columns holding input keys."""

    table: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class DataFile:
    """One data file of a table's current version."""

    path: str  # relative to the table root
    uri: str
    size: int
    mtime: int
    rows: int


@dataclass
class TableState:
    """What check learned of one table: its findings, files and the columns it read."""

    name: str
    findings: list[Finding] = field(default_factory=list)
    files: list[DataFile] = field(default_factory=list)  # current version, in commit order
    lost: list[DataFile] = field(default_factory=list)
    uncastable: dict[str, str] = field(default_factory=dict)  # path -> why
    drifted: dict[str, str] = field(default_factory=dict)  # path -> what
    keys: pa.Table | None = None  # the check columns of every readable file, with `_file`, `_row`

    @property
    def readable(self) -> bool:
        return self.keys is not None


OutputsFor = Callable[[Iterable[str]], Mapping[str, StageOutput]]


def unique_columns(name: str) -> tuple[str, ...] | None:
    """The columns a table's rows are unique by (None: a table of unknown shape)."""
    if name in UNIQUE_BY:
        return UNIQUE_BY[name]
    spec = tables.SPECS.get(name)
    return (spec.key,) if spec is not None else None


def table_names(catalog: Catalog) -> list[str]:
    """Every folder with a log, plus folders of known tables that hold data but lost their log."""
    names = set(catalog.tables())
    fs, root = filesystem(catalog.root, catalog.storage_options)
    if fs.exists(root):
        for entry in fs.ls(root, detail=False):
            name = entry.rstrip("/").rsplit("/", 1)[-1]
            if name in tables.SPECS and name not in names and catalog.lost_log(name):
                names.add(name)
    return sorted(names)


def log_damage(catalog: Catalog, name: str) -> list[tuple[int, str]]:
    """(version, why) of each entry a reader replays (after the last checkpoint) that is not a commit."""
    fs, log_dir = filesystem(f"{catalog.uri(name)}/{LOG_DIR}", catalog.storage_options)
    start = (last_checkpoint(fs, log_dir) or -1) + 1
    out = []
    for entry in list_entries(fs, log_dir):
        if entry.version >= start:
            problem = parse_problem(read_entry(fs, log_dir, entry.version))
            if problem:
                out.append((entry.version, problem))
    return out


def current_files(catalog: Catalog, dt) -> list[DataFile]:
    """The data files of a loaded table version, oldest commit first (modification time, path)."""
    actions = pa.table(dt.get_add_actions(flatten=True)).to_pylist()
    actions.sort(key=lambda a: (a["modification_time"], a["path"]))
    root = dt.table_uri.rstrip("/")
    return [
        DataFile(
            path=a["path"],
            uri=a["path"] if "://" in a["path"] else f"{root}/{a['path']}",
            size=int(a["size_bytes"] or 0),
            mtime=int(a["modification_time"] or 0),
            rows=int(a.get("num_records") or 0),
        )
        for a in actions
    ]


def read_data_file(catalog: Catalog, uri: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = filesystem(uri, catalog.storage_options)
    with fs.open(path, "rb") as fh:
        return pq.read_table(fh, columns=columns)


def _file_schema(catalog: Catalog, uri: str) -> pa.Schema:
    fs, path = filesystem(uri, catalog.storage_options)
    with fs.open(path, "rb") as fh:
        return pq.read_schema(fh)


def _type_faults(catalog: Catalog, name: str, data_file: DataFile) -> tuple[str | None, str | None]:
    """(why the file cannot be cast, what drifted) for one file; each None when it does not apply."""
    spec = tables.SPECS.get(name)
    if spec is None:
        return None, None
    schema = _file_schema(catalog, data_file.uri)
    drift = []
    for fld in spec.schema:
        if fld.name not in schema.names or schema.field(fld.name).type == fld.type:
            continue
        got = schema.field(fld.name).type
        column = read_data_file(catalog, data_file.uri, [fld.name]).column(0)
        try:
            column.cast(fld.type)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
            why = str(exc).split("\n")[0]
            return f"column {fld.name!r} is {got} and cannot be cast to {fld.type} ({why})", None
        drift.append(f"column {fld.name!r} is {got}, declared {fld.type}")
    return None, ("; ".join(drift) or None)


def check_columns(name: str, outputs: Mapping[str, StageOutput]) -> list[str]:
    """The columns check reads of a table: its unique key, references and ledger bookkeeping."""
    spec = tables.SPECS.get(name)
    wanted = list(unique_columns(name) or ())
    if spec is not None:
        wanted += [
            c for c in ("video_id", "clip_id", "uri", "rows_out", "quarantined") if c in spec.schema.names
        ]
    for out in outputs.values():
        if out.table == name:
            wanted += list(out.columns)
    return list(dict.fromkeys(wanted))


def _read_keys(catalog: Catalog, state: TableState, columns: list[str]) -> pa.Table:
    """The `columns` of every readable file (in commit order) plus `_file` and `_row`."""
    spec = tables.SPECS.get(state.name)
    pieces = []
    skip = {f.path for f in state.lost} | set(state.uncastable)
    for data_file in state.files:
        if data_file.path in skip:
            continue
        have = _file_schema(catalog, data_file.uri)
        present = [c for c in columns if c in have.names]
        data = read_data_file(catalog, data_file.uri, present)
        cols = {}
        for column in columns:
            if column in data.column_names:
                col = data.column(column)
                declared = spec.schema.field(column).type if spec and column in spec.schema.names else None
                cols[column] = col.cast(declared) if declared is not None and col.type != declared else col
            elif spec is not None and column in spec.schema.names:
                cols[column] = pa.nulls(data.num_rows, spec.schema.field(column).type)
            else:
                cols[column] = pa.nulls(data.num_rows, pa.string())
        cols["_file"] = pa.array([data_file.path] * data.num_rows, pa.string())
        cols["_row"] = pa.array(range(data.num_rows), pa.int64())
        pieces.append(pa.table(cols))
    if not pieces:
        fields = [
            spec.schema.field(c) if spec and c in spec.schema.names else pa.field(c, pa.string())
            for c in columns
        ]
        return pa.schema([*fields, ("_file", pa.string()), ("_row", pa.int64())]).empty_table()
    return pa.concat_tables(pieces)


def orphan_files(catalog: Catalog, name: str, older_than_s: float) -> list[str]:
    """Parquet parts in a table folder that no log entry ever referenced, older than the grace."""
    return catalog.orphan_parts(name, older_than_s)


def inspect_table(
    catalog: Catalog, name: str, outputs: Mapping[str, StageOutput], orphan_grace_s: float
) -> TableState:
    """Every fault of one table, and its check columns when they can be read."""
    state = TableState(name)
    lost_log = catalog.lost_log(name) if catalog.log_version(name) is None else None
    if lost_log:
        state.findings.append(Finding(name, "missing_log", lost_log))
        return state
    damage = log_damage(catalog, name)
    if damage:
        for version, why in damage:
            state.findings.append(Finding(name, "damaged_log", f"log entry of version {version}: {why}"))
        return state
    try:
        dt = catalog.table(name)
    except CatalogReadError as exc:
        state.findings.append(Finding(name, "unreadable", str(exc)))
        return state
    if dt is None:
        return state
    state.files = current_files(catalog, dt)
    fs, root = filesystem(catalog.uri(name), catalog.storage_options)
    fs.invalidate_cache(root)
    present = {p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False)}
    state.lost = [f for f in state.files if f.path.rsplit("/", 1)[-1] not in present and "://" not in f.path]
    if state.lost:
        rows = sum(f.rows for f in state.lost)
        names = ", ".join(f.path for f in state.lost[:3]) + (" ..." if len(state.lost) > 3 else "")
        state.findings.append(
            Finding(
                name,
                "lost_file",
                f"{len(state.lost)} data file(s) missing ({rows} row(s)): {names}",
                len(state.lost),
            )
        )
    for data_file in state.files:
        if data_file in state.lost:
            continue
        uncastable, drift = _type_faults(catalog, name, data_file)
        if uncastable:
            state.uncastable[data_file.path] = uncastable
            state.findings.append(Finding(name, "uncastable_file", f"{data_file.path}: {uncastable}"))
        elif drift:
            state.drifted[data_file.path] = drift
            state.findings.append(Finding(name, "schema_drift", f"{data_file.path}: {drift}"))
    state.keys = _read_keys(catalog, state, check_columns(name, outputs))
    columns = unique_columns(name)
    if columns:
        keys, surplus = _duplicates(state.keys, columns)
        if keys:
            detail = f"{keys} key(s) over {columns} have {surplus} extra row(s)"
            state.findings.append(Finding(name, "duplicate_keys", detail, surplus))
    orphans = orphan_files(catalog, name, orphan_grace_s)
    if orphans:
        detail = f"{len(orphans)} part(s) no commit references, older than {orphan_grace_s / 3600:g} h"
        state.findings.append(Finding(name, "orphan_files", detail, len(orphans)))
    return state


def _duplicates(data: pa.Table, columns: Iterable[str]) -> tuple[int, int]:
    """(keys that repeat, surplus rows) of `data` over `columns`."""
    if data.num_rows == 0:
        return 0, 0
    counts = data.group_by(list(columns)).aggregate([([], "count_all")])
    repeated = counts.filter(pc.greater(counts.column("count_all"), 1))
    surplus = int(pc.sum(repeated.column("count_all")).as_py() or 0) - repeated.num_rows
    return repeated.num_rows, surplus


def ledger_stages(states: Mapping[str, TableState]) -> list[str]:
    ledger = states.get(tables.LEDGER.name)
    if ledger is None or not ledger.readable or ledger.keys.num_rows == 0:
        return []
    return sorted(v for v in pc.unique(ledger.keys.column("stage")).to_pylist() if v is not None)


def _trusted(state: TableState | None) -> bool:
    """Whether a table's keys are complete enough to say that a key is missing from it."""
    return state is not None and state.readable and not state.lost and not state.uncastable


def _key_counts(state: TableState | None, columns: tuple[str, ...]) -> pa.Table:
    """(key, found): how many rows of a stage's table hold each input key (in any of `columns`)."""
    names = state.keys.column_names if state is not None and state.keys is not None else []
    pieces = [_flat(state.keys.column(c)).cast(pa.string()) for c in columns if c in names]
    values = pa.concat_arrays(pieces) if pieces else pa.array([], pa.string())
    counts = pc.value_counts(values) if len(values) else pa.StructArray.from_arrays(
        [pa.array([], pa.string()), pa.array([], pa.int64())], ["values", "counts"])  # fmt: skip
    return pa.table({"key": counts.field("values"), "found": counts.field("counts").cast(pa.int64())})


LEDGER_FINDING_COLUMNS = ["stage", "key", "_file", "_row", "rows_out", "found"]


def missing_ledger_keys(states: Mapping[str, TableState], outputs: Mapping[str, StageOutput]) -> pa.Table:
    """Ledger rows whose work is not (all) in the catalog: a row that claims `rows_out` output rows
    while the stage's table holds fewer for its key (`found`; 0 < found: part of a unit survived),
    or that claims a quarantine row the quarantine lacks. Damaged tables are reported on their
    own, not as ledger rows."""
    ledger_state = states.get(tables.LEDGER.name)
    if ledger_state is None or not ledger_state.readable or ledger_state.keys.num_rows == 0:
        schema = [
            (c, pa.int64() if c in ("_row", "rows_out", "found") else pa.string())
            for c in LEDGER_FINDING_COLUMNS
        ]
        return pa.schema(schema).empty_table()
    quarantine = states.get(tables.QUARANTINE.name)
    quarantine_ok = quarantine is None or _trusted(quarantine)
    pieces = []
    for stage, out in outputs.items():
        state = states.get(out.table)
        rows = ledger_state.keys.filter(pc.equal(ledger_state.keys.column("stage"), stage))
        if rows.num_rows == 0:
            continue
        counts = _key_counts(state, out.columns if _trusted(state) else ())
        rows = rows.join(counts, keys="key", join_type="left outer")
        found = pc.fill_null(rows.column("found"), 0)
        rows = rows.set_column(rows.column_names.index("found"), "found", found)
        short = pc.less(found, pc.fill_null(rows.column("rows_out"), 0))
        bad = short if _trusted(state) else pa.array([False] * rows.num_rows, pa.bool_())
        if quarantine_ok:
            held = pa.array([], pa.string())
            if quarantine is not None and quarantine.keys.num_rows:
                mine = quarantine.keys.filter(pc.equal(quarantine.keys.column("stage"), stage))
                held = mine.column("key").combine_chunks()
            lost = pc.and_(pc.fill_null(rows.column("quarantined"), False),
                           pc.invert(pc.is_in(rows.column("key"), value_set=held)))  # fmt: skip
            bad = pc.or_(bad, pc.and_(lost, pc.equal(found, 0)))
        pieces.append(rows.filter(bad).select(LEDGER_FINDING_COLUMNS))
    if not pieces:
        return missing_ledger_keys({}, {})
    return pa.concat_tables(pieces)


def _flat(column: pa.ChunkedArray) -> pa.Array:
    column = column.combine_chunks()
    if pa.types.is_list(column.type) or pa.types.is_large_list(column.type):
        column = pc.list_flatten(column)
    return column.drop_null()


# (table, column) -> the table whose key it references.
REFERENCES = {"clips": ("video_id", "videos")}


def dangling(states: Mapping[str, TableState]) -> list[Finding]:
    """Rows that name a video or clip the catalog does not hold (a lost file, not yet rerun)."""
    out = []
    for name, state in states.items():
        if not state.readable or state.keys.num_rows == 0:
            continue
        spec = tables.SPECS.get(name)
        if name in REFERENCES:
            column, target = REFERENCES[name]
        elif spec is not None and spec.key == "clip_id" and name != "clips":
            column, target = "clip_id", "clips"
        else:
            continue
        target_state = states.get(target)
        if target_state is None or not target_state.readable or column not in state.keys.column_names:
            continue
        target_keys = target_state.keys.column(tables.SPECS[target].key).combine_chunks()
        values = state.keys.column(column)
        missing = pc.and_(pc.is_valid(values), pc.invert(pc.is_in(values, value_set=target_keys)))
        count = int(pc.sum(missing.cast(pa.int64())).as_py() or 0)
        if count:
            sample = ", ".join(map(str, pc.unique(values.filter(missing)).to_pylist()[:3]))
            detail = (
                f"{count} row(s) name a {column} that {target} does not hold ({sample}); "
                f"rerun the pipeline to restore them"
            )
            out.append(Finding(name, "dangling_reference", detail, count))
    return out


def inspect(
    catalog: Catalog, outputs_for: OutputsFor | None = None, orphan_grace_s: float | None = None
) -> tuple[dict[str, TableState], Mapping[str, StageOutput]]:
    """Inspect every table; returns the states and the stage outputs the ledger names."""
    grace = ORPHAN_GRACE_HOURS * 3600.0 if orphan_grace_s is None else orphan_grace_s
    names = table_names(catalog)
    states: dict[str, TableState] = {}
    if tables.LEDGER.name in names:
        states[tables.LEDGER.name] = inspect_table(catalog, tables.LEDGER.name, {}, grace)
    outputs = outputs_for(ledger_stages(states)) if outputs_for else {}
    for name in names:
        if name not in states:
            states[name] = inspect_table(catalog, name, outputs, grace)
    return states, outputs


def check(
    catalog: Catalog, outputs_for: OutputsFor | None = None, orphan_grace_s: float | None = None
) -> list[Finding]:
    """Every fault found in the catalog (an empty list: the catalog is clean)."""
    states, outputs = inspect(catalog, outputs_for, orphan_grace_s)
    findings = [f for state in states.values() for f in state.findings]
    missing = missing_ledger_keys(states, outputs)
    if missing.num_rows:
        sample = ", ".join(f"{r['stage']}:{r['key']}" for r in missing.slice(0, 3).to_pylist())
        detail = f"{missing.num_rows} ledger row(s) claim output that is missing ({sample})"
        findings.append(Finding(tables.LEDGER.name, "ledger_missing_output", detail, missing.num_rows))
    findings.extend(dangling(states))
    return findings
