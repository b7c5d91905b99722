"""The `egocurate` command line (Typer)."""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.table import Table

from egocurate.catalog.store import Catalog
from egocurate.jobs.cli_annotate import register as register_annotate
from egocurate.jobs.cli_lam import app as lam_app
from egocurate.jobs.cli_shards import demo_exports, export_app, shards_app
from egocurate.jobs.cli_shots import app as shots_app
from egocurate.jobs.config import ConfigError, PipelineConfig, StageConfig, load_config
from egocurate.jobs.pipeline import run_pipeline

app = typer.Typer(help="Curate egocentric video into world-model training data.", no_args_is_help=True)
catalog_app = typer.Typer(help="Inspect and query the Delta catalog.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(shards_app, name="shards")
app.add_typer(export_app, name="export")
app.add_typer(lam_app, name="lam")
app.add_typer(shots_app, name="shots")
register_annotate(app)  # report, query, stats
console = Console(width=None if sys.stdout.isatty() else 160)

CatalogOption = Annotated[
    str, typer.Option("--catalog", "-c", envvar="EGOCURATE_CATALOG", help="Catalog root: a path or URL.")
]


class EngineChoice(StrEnum):
    local = "local"
    ray = "ray"
    spark = "spark"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(2)


def _print_arrow(data, fmt: OutputFormat = OutputFormat.table, limit: int | None = None) -> None:
    if limit is not None:
        data = data.slice(0, limit)
    if fmt is OutputFormat.json:
        for row in data.to_pylist():
            sys.stdout.write(json.dumps(row, default=str) + "\n")
        return
    if fmt is OutputFormat.csv:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        for i, field in enumerate(data.schema):  # CSV has no nested or binary types: JSON-encode them
            if pa.types.is_nested(field.type) or pa.types.is_binary(field.type):
                values = [
                    None if v is None else json.dumps(v, default=str) for v in data.column(i).to_pylist()
                ]
                data = data.set_column(i, field.name, pa.array(values, pa.string()))
        sys.stdout.flush()
        pacsv.write_csv(data, sys.stdout.buffer)
        sys.stdout.buffer.flush()
        return
    table = Table(show_lines=False)
    for name in data.column_names:
        table.add_column(name, overflow="fold")
    for row in data.to_pylist():
        table.add_row(*[_cell(v) for v in row.values()])
    console.print(table)
    console.print(f"[dim]{data.num_rows} row(s)[/]")


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


@app.command()
def ingest(
    sources: Annotated[
        list[str], typer.Argument(help="Folders, globs, fsspec URLs or manifests (CSV/JSONL).")
    ],
    catalog: CatalogOption,
    engine: Annotated[EngineChoice, typer.Option(help="Where to run.")] = EngineChoice.local,
    backend: Annotated[str, typer.Option(help="Probe backend: auto, ffprobe or pyav.")] = "auto",
    spark_master: Annotated[str | None, typer.Option(help="Spark master URL (engine spark).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="ray.init address (engine ray).")] = None,
    commit_every: Annotated[int, typer.Option(min=1, help="Input rows per Delta commit.")] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Files per worker batch.")] = 8,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
) -> None:
    """Discover, probe and fingerprint videos into the `videos` table; bad files go to `quarantine`."""
    try:
        config = PipelineConfig.model_validate(
            {
                "catalog": catalog,
                "engine": engine.value,
                "sources": list(sources),
                "stages": [{"name": "ingest", "params": {"backend": backend, "batch_size": batch_size}}],
                "commit_every": commit_every,
                "spark": {"master": spark_master},
                "ray": {"address": ray_address},
                "progress": progress,
            }
        )
        run_pipeline(config, console)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"catalog: [bold]{Catalog(catalog).root}[/]")


@app.command()
def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML: catalog, engine, sources, stages.")],
    catalog: Annotated[str | None, typer.Option("--catalog", "-c", help="Override the catalog root.")] = None,
    engine: Annotated[EngineChoice | None, typer.Option(help="Override the default engine.")] = None,
) -> None:
    """Run a pipeline file end to end; every stage resumes from what the catalog holds."""
    overrides = {}
    if catalog:
        overrides["catalog"] = catalog
    if engine:
        overrides["engine"] = engine.value
    try:
        config = load_config(pipeline, overrides)
        run_pipeline(config, console)
    except (ConfigError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"catalog: [bold]{config.catalog}[/]")


def demo_config(out: Path, engine: str | None = None) -> PipelineConfig:
    """The demo pipeline (packaged `pipelines/demo.yaml`) pointed at generated samples under `out`."""
    from egocurate.synthetic import make_sample_set

    manifest = make_sample_set(out / "samples")
    raw = yaml.safe_load(resources.files("egocurate.pipelines").joinpath("demo.yaml").read_text())
    raw["catalog"] = str((out / "catalog").resolve())
    raw["sources"] = [str(manifest)]
    if engine:
        raw["engine"] = engine
        for stage in raw.get("stages", []):
            stage.pop("engine", None)
    raw["stages"] = [StageConfig.model_validate(s).model_dump() for s in raw.get("stages", [])]
    return PipelineConfig.model_validate(raw)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Where samples and the catalog go.")] = Path("demo_output"),
    engine: Annotated[EngineChoice | None, typer.Option(help="Run every stage on this engine.")] = None,
) -> None:
    """Generate sample egocentric videos (and one corrupt file) and run the demo pipeline on them."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console.print("[bold]egocurate demo[/]: generating sample videos ...")
    config = demo_config(out, engine.value if engine else None)
    run_pipeline(config, console)
    cat = Catalog(config.catalog)
    exports = demo_exports(cat, out.resolve())
    summary = Table(title="catalog tables")
    summary.add_column("table")
    summary.add_column("rows", justify="right")
    summary.add_column("version", justify="right")
    for name in cat.tables():
        summary.add_row(name, str(cat.count(name)), str(cat.version(name)))
    console.print(summary)
    for name, where in exports.items():
        console.print(f"{name}: {where}")
    console.print(f"catalog: [bold]{cat.root}[/]")
    console.print(f'try: egocurate catalog sql --catalog {cat.root} "SELECT uri, error_kind FROM quarantine"')


@catalog_app.command("tables")
def catalog_tables(catalog: CatalogOption) -> None:
    """List tables with row counts and Delta versions."""
    cat = Catalog(catalog)
    table = Table()
    for column in ("table", "rows", "version"):
        table.add_column(column)
    for name in cat.tables():
        table.add_row(name, str(cat.count(name)), str(cat.version(name)))
    console.print(table)


@catalog_app.command("show")
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
        _fail(f"no table {table!r} in {cat.root}; tables: {', '.join(cat.tables()) or '(none)'}")
    data = cat.read(table, version=version)
    heavy = [n for n in data.column_names if n in ("vector", "latent_actions", "latent_logvar")]
    _print_arrow(data.drop_columns(heavy) if fmt is OutputFormat.table else data, fmt, limit)


@catalog_app.command("sql")
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
        _fail(f"SQL error: {exc}")
    _print_arrow(result, fmt, limit)


@catalog_app.command("history")
def catalog_history(table: Annotated[str, typer.Argument()], catalog: CatalogOption) -> None:
    """Delta history of a table: version, time, operation, metrics."""
    cat = Catalog(catalog)
    rows = cat.history(table)
    if not rows:
        _fail(f"no table {table!r} in {cat.root}")
    out = Table()
    for column in ("version", "timestamp", "operation", "egocurate.operation", "rows added"):
        out.add_column(column)
    for row in rows:
        metrics = row.get("operationMetrics") or {}
        added = metrics.get("num_added_rows", metrics.get("num_target_rows_inserted", ""))
        out.add_row(str(row.get("version")), str(row.get("timestamp")), str(row.get("operation")),
                    str(row.get("egocurate.operation", "")), str(added))  # fmt: skip
    console.print(out)


@catalog_app.command("vacuum")
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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
