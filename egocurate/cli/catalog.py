"""``egocurate catalog …``: list, show, query, inspect the history of and vacuum the Delta tables."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from egocurate.annotate.stats import iso_time
from egocurate.catalog.store import MIN_VACUUM_RETENTION_HOURS, Catalog, VacuumRetentionError
from egocurate.cli.options import CatalogOption, OutputFormat, console, fail, print_arrow

app = typer.Typer(help="Inspect and query the Delta catalog.", no_args_is_help=True)


@app.command("tables")
def catalog_tables(catalog: CatalogOption) -> None:
    """List tables with row counts and Delta versions."""
    cat = Catalog(catalog, create=False)
    table = Table()
    for column in ("table", "rows", "version"):
        table.add_column(column)
    for name in cat.tables():
        table.add_row(name, str(cat.count(name)), str(cat.version(name)))
    console.print(table)


@app.command("show")
def catalog_show(
    table: Annotated[str, typer.Argument(help="Table name.")],
    catalog: CatalogOption,
    limit: Annotated[int, typer.Option(min=1)] = 20,
    version: Annotated[int | None, typer.Option(help="Time travel to this Delta version.")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
) -> None:
    """Show rows of a table (at a version, with --version)."""
    cat = Catalog(catalog, create=False)
    if table not in cat.tables():
        fail(f"no table {table!r} in {cat.root}; tables: {', '.join(cat.tables()) or '(none)'}")
    data = cat.read(table, version=version)
    heavy = [n for n in data.column_names if n in ("vector", "latent_actions", "latent_logvar")]
    print_arrow(data.drop_columns(heavy) if fmt is OutputFormat.table else data, fmt, limit)


@app.command("sql")
def catalog_sql(
    query: Annotated[str, typer.Argument(help="SQL over the tables and `clip_view` (DuckDB).")],
    catalog: CatalogOption,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    limit: Annotated[int | None, typer.Option(min=1)] = None,
) -> None:
    """Run SQL over the catalog with DuckDB (tables by name, plus the joined `clip_view`)."""
    import duckdb

    from egocurate.catalog.query import sql

    try:
        result = sql(Catalog(catalog, create=False), query)
    except duckdb.Error as exc:
        fail(f"SQL error: {exc}")
    print_arrow(result, fmt, limit)


@app.command("history")
def catalog_history(table: Annotated[str, typer.Argument()], catalog: CatalogOption) -> None:
    """Delta history of a table: version, time, operation, metrics."""
    cat = Catalog(catalog, create=False)
    rows = cat.history(table)
    if not rows:
        fail(f"no table {table!r} in {cat.root}")
    out = Table()
    for column in ("version", "timestamp", "operation", "egocurate.operation", "rows added"):
        out.add_column(column)
    for row in rows:
        metrics = row.get("operationMetrics") or {}
        added = metrics.get("num_added_rows", metrics.get("num_target_rows_inserted", ""))
        out.add_row(str(row.get("version")), iso_time(row.get("timestamp")), str(row.get("operation")),
                    str(row.get("egocurate.operation", "")), str(added))  # fmt: skip
    console.print(out)


@app.command("vacuum")
def catalog_vacuum(
    table: Annotated[str, typer.Argument()],
    catalog: CatalogOption,
    retention_hours: Annotated[
        int, typer.Option(help=f"Keep files younger than this (at least {MIN_VACUUM_RETENTION_HOURS}).")
    ] = MIN_VACUUM_RETENTION_HOURS,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be deleted.")] = True,
) -> None:
    """Delete unreferenced files of a table (orphan parts of killed runs included)."""
    try:
        files = Catalog(catalog, create=False).vacuum(table, retention_hours=retention_hours, dry_run=dry_run)
    except VacuumRetentionError as exc:
        fail(str(exc))
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {len(files)} file(s)")
    for path in files:
        console.print(f"  {path}")


@app.command("optimize")
def catalog_optimize(
    catalog: CatalogOption,
    table: Annotated[str | None, typer.Argument(help="One table (default: every table).")] = None,
) -> None:
    """Compact small files (Delta OPTIMIZE) as a commit of its own; rows do not change.

    Safe beside running jobs: it is compare-and-swap like every commit, and its files carry
    `dataChange: false`, so racing writers' key checks skip them. Runs also compact on their own
    every EGOCURATE_OPTIMIZE_EVERY commits (default 100). `catalog vacuum` deletes the replaced files
    once they are older than the retention.
    """
    cat = Catalog(catalog, create=False)
    names = [table] if table else cat.tables()
    for name in names:
        if name not in cat.tables():
            fail(f"no table {name!r} in {cat.root}; tables: {', '.join(cat.tables()) or '(none)'}")
        metrics = cat.optimize(name) or {}
        console.print(
            f"{name}: {metrics.get('numFilesRemoved', 0)} file(s) compacted into "
            f"{metrics.get('numFilesAdded', 0)}",
            highlight=False,
        )


def _outputs_for(stages):
    """Output tables of the stages the ledger names (so `check` can match ledger rows to output)."""
    from egocurate.jobs.registry import stage_outputs

    return stage_outputs(sorted(stages))


def _print_findings(findings) -> None:
    for f in findings:
        console.print(f"{f.table}: {f.kind}: {escape(f.detail)}", highlight=False)


@app.command("check")
def catalog_check(catalog: CatalogOption) -> None:
    """Verify every table: a readable log, every data file present and castable to the declared
    schema, no duplicate keys, no stale parts, ledger rows matched by output, no dangling references.

    Exits 0 when the catalog is clean, 1 when it found faults (fix them with `catalog repair`).
    """
    from egocurate.catalog.health import check

    cat = Catalog(catalog, create=False)
    findings = check(cat, _outputs_for)
    _print_findings(findings)
    if findings:
        console.print(f"{len(findings)} fault(s); run `egocurate catalog repair -c {escape(cat.root)}`")
        raise typer.Exit(1)
    console.print(f"catalog {escape(cat.root)} is clean ({len(cat.tables())} tables)")


@app.command("repair")
def catalog_repair(catalog: CatalogOption) -> None:
    """Fix what `check` finds, keeping every row whose data still exists: replace damaged log
    entries, rebuild a lost log from the data files, drop lost files, cast drifted files, keep one
    row per key (the oldest commit's), delete stale parts, drop ledger rows whose output is missing
    (a rerun redoes them). Every change is a compare-and-swap commit, safe beside running jobs."""
    from egocurate.catalog.health import check
    from egocurate.catalog.repair import fixable, repair

    cat = Catalog(catalog, create=False)
    changes = repair(cat, _outputs_for)
    for change in changes:
        console.print(escape(json.dumps(change)), highlight=False)
    left = check(cat, _outputs_for)
    stuck = [f for f in left if fixable(f.kind)]
    if stuck:
        remaining = "; ".join(f"{f.table}: {f.kind}: {f.detail}" for f in stuck)
        fail(f"{len(stuck)} fault(s) remain after repair: {remaining}")
    _print_findings(left)
    rerun = f"; {len(left)} need a rerun of the pipeline to restore lost rows" if left else ""
    console.print(f"repaired {len(changes)} table change(s){rerun}")
