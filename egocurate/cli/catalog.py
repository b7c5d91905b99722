"""``egocurate catalog …``: list, show, query, inspect the history of and vacuum the Delta tables."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from egocurate.annotate.stats import iso_time
from egocurate.catalog.store import Catalog
from egocurate.cli.options import CatalogOption, OutputFormat, console, fail, print_arrow

app = typer.Typer(help="Inspect and query the Delta catalog.", no_args_is_help=True)


@app.command("tables")
def catalog_tables(catalog: CatalogOption) -> None:
    """List tables with row counts and Delta versions."""
    cat = Catalog(catalog)
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
    cat = Catalog(catalog)
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
        result = sql(Catalog(catalog), query)
    except duckdb.Error as exc:
        fail(f"SQL error: {exc}")
    print_arrow(result, fmt, limit)


@app.command("history")
def catalog_history(table: Annotated[str, typer.Argument()], catalog: CatalogOption) -> None:
    """Delta history of a table: version, time, operation, metrics."""
    cat = Catalog(catalog)
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
    retention_hours: Annotated[int, typer.Option(min=0, help="Keep files younger than this.")] = 168,
    dry_run: Annotated[bool, typer.Option(help="Only list what would be deleted.")] = True,
) -> None:
    """Delete unreferenced files of a table (orphan parts of killed runs included)."""
    files = Catalog(catalog).vacuum(table, retention_hours=retention_hours, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {len(files)} file(s)")
    for path in files:
        console.print(f"  {path}")
