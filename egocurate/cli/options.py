"""What every command shares: the console, the common options, one-line errors and table output."""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from enum import StrEnum
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

# Piped output (logs, CI, tests) is not wrapped: a long path stays on one line whatever the width.
console = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=not sys.stdout.isatty())
# Errors go to stderr, so a command's output (`--format json`, a piped table) is only its result.
error_console = Console(stderr=True, soft_wrap=True)

DEBUG_ENV = "EGOCURATE_DEBUG"  # set by `egocurate --debug`: errors show their traceback
# The catalog and source URLs this command works on, so that a storage error whose message names
# none (botocore's NoCredentialsError) can still name the URL (see `egocurate.storage.storage_error`).
LOCATIONS: list[str] = []


def note_locations(*urls: str | None) -> None:
    """Remember the catalog or source URLs the running command works on (see :data:`LOCATIONS`)."""
    LOCATIONS.extend(str(u) for u in urls if u and str(u) not in LOCATIONS)


def _note_catalog(value: str | None) -> str | None:
    note_locations(value)
    return value


CatalogOption = Annotated[
    str,
    typer.Option(
        "--catalog",
        "-c",
        envvar="EGOCURATE_CATALOG",
        help="Catalog root: a path or URL.",
        callback=_note_catalog,
    ),
]
ThresholdOption = Annotated[
    list[str] | None,
    typer.Option(
        "--threshold", "-t", help="Read-time filter NAME=VALUE for the view's keep flag (repeatable)."
    ),
]
ProgressOption = Annotated[bool, typer.Option(help="Show progress bars.")]
QueryOption = Annotated[
    str | None,
    typer.Option("--query", "-q", help="SQL over clip_view returning clip_id (default: kept clips)."),
]
TaskOption = Annotated[str | None, typer.Option("--task", help='Glob on the clip task label, e.g. "pour*".')]
WorkersOption = Annotated[int | None, typer.Option(min=1, help="Parallel clip renders (default: CPU count).")]


class EngineChoice(StrEnum):
    local = "local"
    ray = "ray"
    spark = "spark"


# One set of engine options on every command that computes. Precedence: command line, then the
# environment variable, then the pipeline file (a value left unset here leaves the file's).
EngineOption = Annotated[
    EngineChoice | None,
    typer.Option(
        "--engine", envvar="EGOCURATE_ENGINE", help="Where to run (overrides every stage not engine_locked)."
    ),
]
RayAddressOption = Annotated[
    str | None,
    typer.Option(
        "--ray-address", envvar="EGOCURATE_RAY_ADDRESS", help="Ray cluster: host:port of the head, or auto."
    ),
]
SparkMasterOption = Annotated[
    str | None,
    typer.Option(
        "--spark-master", envvar="EGOCURATE_SPARK_MASTER", help="Spark master URL, e.g. spark://host:7077."
    ),
]
ProgressTimeoutOption = Annotated[
    float | None,
    typer.Option(
        "--progress-timeout",
        envvar="EGOCURATE_PROGRESS_TIMEOUT",
        min=0.001,
        help="Ray/Spark: end a stage when no batch finished for this many seconds (default 300).",
    ),
]
SparkConfOption = Annotated[
    list[str] | None,
    typer.Option("--spark-conf", envvar="EGOCURATE_SPARK_CONF", help="Spark setting KEY=VALUE (repeatable)."),
]


def parse_spark_conf(items: list[str] | None) -> dict[str, str]:
    """``KEY=VALUE`` items as a mapping; anything else is a user error."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            fail(f"--spark-conf wants KEY=VALUE, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def engine_options(
    engine: EngineChoice | None,
    ray_address: str | None,
    spark_master: str | None,
    spark_conf: list[str] | None,
    progress_timeout: float | None = None,
) -> dict:
    """The keyword arguments of :func:`egocurate.jobs.config.with_engine_options` from the options."""
    return {
        "engine": engine.value if engine else None,
        "ray_address": ray_address,
        "spark_master": spark_master,
        "spark_conf": parse_spark_conf(spark_conf),
        "progress_timeout": progress_timeout,
    }


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def first_reasons(skipped: dict[str, str], limit: int = 3) -> str:
    """The first few ``clip: why`` pairs of a skipped-clips mapping, for one summary line."""
    items = list(skipped.items())[:limit]
    return "; ".join(f"{cid}: {why}" for cid, why in items) + (" ..." if len(skipped) > limit else "")


def fail(message: str) -> NoReturn:
    """Print ``error: message`` on one line of stderr (never parsed as markup) and exit 2: every user
    error. Under ``--debug``, the traceback of the exception being handled comes first."""
    if os.environ.get(DEBUG_ENV) and sys.exc_info()[1] is not None:
        traceback.print_exc()
    line = re.sub(r"\s*\n\s*", " ", str(message).strip())
    error_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False)
    raise typer.Exit(2)


def parse_thresholds(items: list[str] | None) -> dict[str, float]:
    """``NAME=NUMBER`` items as a mapping; anything else is a user error."""
    out = {}
    for item in items or []:
        name, sep, value = item.partition("=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            fail(f"--threshold wants NAME=NUMBER, got {item!r}")
    return out


def print_arrow(data, fmt: OutputFormat = OutputFormat.table, limit: int | None = None) -> None:
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
        table.add_row(*[cell(v) for v in row.values()])
    console.print(table)
    console.print(f"[dim]{data.num_rows} row(s)[/]")


def cell(value) -> str:
    """One table cell: short floats, byte sizes instead of bytes, lists joined, long text cut."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def start_ray_for_training(catalog: str) -> None:
    """Start (or join, with ``EGOCURATE_RAY_ADDRESS``) Ray the way the pipeline's engine does before
    Ray Train runs: on loopback when local, and with Ray's own output in the catalog's ``_logs/``."""
    import os

    from egocurate.jobs.config import PipelineConfig, RayConfig
    from egocurate.jobs.pipeline import make_engine
    from egocurate.jobs.runners import EngineError

    address = os.environ.get("EGOCURATE_RAY_ADDRESS")
    try:
        make_engine("ray", PipelineConfig(catalog=catalog, ray=RayConfig(address=address)))
    except EngineError as exc:
        fail(str(exc))


def ray_train_summary(result: object, checkpoint: str) -> str:
    """One JSON line for a Ray Train run: the checkpoint written, or the error."""
    error = getattr(result, "error", None)
    return json.dumps({"engine": "ray", "checkpoint": checkpoint, "error": str(error) if error else None})


def load_yaml_config(path: object, overrides: dict | None, config_cls: type, what: str) -> object:
    """``config_cls.from_dict`` of a YAML mapping at `path` (None: defaults) with command-line
    `overrides` (None values ignored); a missing file or a bad value is one ``error:`` line."""
    import yaml

    raw: dict = {}
    if path is not None:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            fail(f"config not found: {path}")
        if not isinstance(raw, dict):
            fail(f"{path}: expected a mapping of {what}")
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return config_cls.from_dict(raw)
    except (TypeError, ValueError) as exc:
        fail(str(exc))
