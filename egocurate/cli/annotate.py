"""Annotation commands: ``egocurate report``, ``egocurate query`` and ``egocurate stats``.

Mount on the main app with ``register(app)`` (adds the three as top-level commands), or use ``app``
here on its own.
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from egocurate.annotate.label_query import LabelQuery
from egocurate.annotate.stats import format_duration
from egocurate.catalog.store import Catalog, CatalogPathError
from egocurate.cli.options import (
    CatalogOption,
    EngineChoice,
    EngineOption,
    RayAddressOption,
    SparkConfOption,
    SparkMasterOption,
    ThresholdOption,
    cell,
    console,
    fail,
    parse_spark_conf,
    parse_thresholds,
)

app = typer.Typer(help="Labels, corpus statistics and the HTML report.", no_args_is_help=True)


def _stats_engine(
    cat: Catalog, engine: EngineChoice | None, spark_master: str | None, spark_conf: list[str] | None
) -> tuple[str, dict]:
    """Where statistics run: ``spark`` (a session with the master and conf, reused by the job) or
    ``local`` (DuckDB on this machine; also for ``ray``, which has no SQL engine of its own)."""
    if engine is not EngineChoice.spark:
        return "local", {}
    from egocurate.jobs.engine_logs import route_engine_output
    from egocurate.jobs.runners import EngineError
    from egocurate.jobs.runners.spark import spark_session

    route_engine_output(cat.root, cat.storage_options)
    try:
        spark = spark_session(spark_master, app_name="egocurate-stats", conf=parse_spark_conf(spark_conf))
    except EngineError as exc:
        fail(str(exc))
    return "spark", {"spark": spark, "master": spark_master}


def _open(catalog: str) -> Catalog:
    try:
        cat = Catalog(catalog, create=False)
    except CatalogPathError as exc:
        fail(str(exc))
    if "clips" not in cat.tables():
        fail(f"no clips table in {cat.root}; run the pipeline first")
    return cat


@app.command("report")
def report(
    catalog: CatalogOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    engine: EngineOption = None,
    threshold: ThresholdOption = None,
    top: Annotated[int, typer.Option(min=1, help="Labels shown per plot.")] = 12,
    thumbnails: Annotated[int, typer.Option(min=0, help="Sample frames per top task and scene.")] = 3,
    store: Annotated[bool, typer.Option(help="Store the statistics in the catalog's stats table.")] = True,
    ray_address: RayAddressOption = None,
    spark_master: SparkMasterOption = None,
    spark_conf: SparkConfOption = None,
) -> None:
    """Write one self-contained HTML report: statistics, plots, sample frames, funnel, dedup groups."""
    from egocurate.jobs.corpus.report import build_report

    cat = _open(catalog)
    kind, spark = _stats_engine(cat, engine, spark_master, spark_conf)
    path, run_id, stats = build_report(
        cat, out, kind, parse_thresholds(threshold), top, thumbnails, store, spark_master=spark.get("master")
    )
    console.print(
        f"report: [bold]{path}[/] ({path.stat().st_size / 1024:.0f} KiB) · "
        f"{stats.summary.get('clips', 0)} clips, "
        f"{format_duration(stats.summary.get('ms', 0))} · statistics run {run_id or '(not stored)'}"
    )


@app.command("stats")
def stats(
    catalog: CatalogOption,
    engine: EngineOption = None,
    threshold: ThresholdOption = None,
    store: Annotated[bool, typer.Option(help="Store them in the catalog's stats table.")] = True,
    ray_address: RayAddressOption = None,
    spark_master: SparkMasterOption = None,
    spark_conf: SparkConfOption = None,
) -> None:
    """Compute corpus statistics and print the summary and the long tail (spark, or DuckDB here)."""
    from egocurate.jobs.corpus.stats import commit_stats, compute

    cat = _open(catalog)
    thresholds = parse_thresholds(threshold)
    kind, spark = _stats_engine(cat, engine, spark_master, spark_conf)
    result = compute(cat, kind, thresholds, **({"spark": spark["spark"]} if spark else {}))
    run_id = commit_stats(cat, result, kind, thresholds)[0] if store else None
    table = Table(title=f"statistics ({kind}) run {run_id or '(not stored)'}")
    table.add_column("statistic")
    table.add_column("value", justify="right")
    for key, value in result.summary.items():
        if key == "ms" or key.endswith("_ms"):  # stored in milliseconds; shown as a duration
            label = "duration" if key == "ms" else key[: -len("_ms")].replace("_", " ") + " duration"
            table.add_row(label, format_duration(value))
        else:
            table.add_row(key.replace("_", " "), str(value))
    for kind, cover in result.long_tail.items():
        table.add_row(f"{kind}s covering 50/90/99% of hours", f"{cover['50']}/{cover['90']}/{cover['99']}")
    console.print(table)


class Origin(StrEnum):
    real = "real"
    generated = "generated"


class ManifestFormat(StrEnum):
    auto = "auto"
    parquet = "parquet"
    jsonl = "jsonl"


@app.command("query")
def query(
    catalog: CatalogOption,
    task: Annotated[str | None, typer.Option(help="Task glob, e.g. 'pour*' (case-insensitive).")] = None,
    scene: Annotated[str | None, typer.Option(help="Scene glob, e.g. 'kitchen'.")] = None,
    object_: Annotated[
        list[str] | None, typer.Option("--object", help="Object glob (repeatable: all must match).")
    ] = None,
    source: Annotated[str | None, typer.Option(help="Dataset/source glob.")] = None,
    label_source: Annotated[str | None, typer.Option(help="given, caption or zeroshot.")] = None,
    min_seconds: Annotated[float | None, typer.Option(help="Minimum clip duration.")] = None,
    max_seconds: Annotated[float | None, typer.Option(help="Maximum clip duration.")] = None,
    min_task_score: Annotated[float | None, typer.Option(help="Minimum task label score.")] = None,
    keep: Annotated[
        bool | None, typer.Option("--keep/--filtered", help="Only kept (or only filtered) clips.")
    ] = None,
    origin: Annotated[
        Origin | None, typer.Option(help="Only recorded (real) or only generated (rollout) clips.")
    ] = None,
    threshold: ThresholdOption = None,
    limit: Annotated[int | None, typer.Option(min=1, help="At most this many clips.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write a manifest (.parquet or .jsonl).")
    ] = None,
    fmt: Annotated[
        ManifestFormat, typer.Option("--format", help="Manifest format (auto: by suffix).")
    ] = ManifestFormat.auto,
    show: Annotated[int, typer.Option(min=0, help="Rows to print.")] = 20,
    print_sql: Annotated[
        bool, typer.Option("--sql", help="Print the equivalent SQL over clip_view.")
    ] = False,
) -> None:
    """Clips by task, scene, object and duration: print them and optionally write a manifest."""
    from egocurate.catalog.query import connect

    cat = _open(catalog)
    spec = LabelQuery(
        task=task, scene=scene, objects=list(object_ or []), source=source, label_source=label_source,
        min_seconds=min_seconds, max_seconds=max_seconds, min_task_score=min_task_score,
        keep=keep, limit=limit, origin=origin.value if origin else None,
    )  # fmt: skip
    sql, params = spec.sql()
    con = connect(cat, parse_thresholds(threshold))
    try:
        result = con.sql(sql, params=params).to_arrow_table()
    finally:
        con.close()
    if print_sql:
        typer.echo(spec.inline_sql())
    if show:
        table = Table()
        columns = ["clip_id", "task", "scene", "objects", "duration_s", "keep", "label_source", "origin"]
        for name in columns:
            table.add_column(name, overflow="fold")
        for row in result.slice(0, show).to_pylist():
            table.add_row(*[cell(row.get(c)) for c in columns])
        console.print(table)
    hours = sum(v or 0 for v in result.column("duration_s").to_pylist()) / 3600 if result.num_rows else 0.0
    console.print(f"{result.num_rows} clip(s), {hours:.3f} h")
    if out is not None:
        write_manifest(result, out, fmt.value)
        console.print(f"manifest: [bold]{out}[/]")


def write_manifest(result, out: Path, fmt: str = "auto") -> None:
    """Matching clips as Parquet or JSON lines (one clip per row), for export and shard building."""
    kind = fmt if fmt != "auto" else ("jsonl" if out.suffix.lower() in (".jsonl", ".json") else "parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    if kind == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(result, tmp)
    else:
        with open(tmp, "w", encoding="utf-8") as fh:
            for row in result.to_pylist():
                fh.write(json.dumps(row, default=str) + "\n")
    os.replace(tmp, out)


def register(main_app: typer.Typer) -> None:
    """Add ``report``, ``query`` and ``stats`` as top-level commands of the main app."""
    main_app.command("report")(report)
    main_app.command("query")(query)
    main_app.command("stats")(stats)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
