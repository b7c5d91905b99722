"""``egocurate ingest`` and ``egocurate run``: the commands that fill the catalog."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from egocurate.catalog.store import Catalog
from egocurate.cli.options import (
    CatalogOption,
    EngineOption,
    ProgressTimeoutOption,
    RayAddressOption,
    SparkConfOption,
    SparkMasterOption,
    console,
    engine_options,
    fail,
    note_locations,
)
from egocurate.jobs.config import ConfigError, PipelineConfig, load_config, with_engine_options
from egocurate.jobs.pipeline import run_pipeline
from egocurate.jobs.runners import EngineError


def register(app: typer.Typer) -> None:
    """Mount ``ingest`` and ``run`` as top-level commands of `app`."""
    app.command()(ingest)
    app.command()(run)


def ingest(
    sources: Annotated[
        list[str], typer.Argument(help="Folders, globs, fsspec URLs or manifests (CSV/JSONL).")
    ],
    catalog: CatalogOption,
    engine: EngineOption = None,
    backend: Annotated[str, typer.Option(help="Probe backend: auto, ffprobe or pyav.")] = "auto",
    spark_master: SparkMasterOption = None,
    ray_address: RayAddressOption = None,
    spark_conf: SparkConfOption = None,
    progress_timeout: ProgressTimeoutOption = None,
    commit_every: Annotated[int, typer.Option(min=1, help="Input rows per Delta commit.")] = 256,
    batch_size: Annotated[int, typer.Option(min=1, help="Files per worker batch.")] = 8,
    progress: Annotated[bool, typer.Option(help="Show progress bars.")] = True,
    allow_empty: Annotated[bool, typer.Option(help="Succeed even if the sources match no file.")] = False,
    camera: Annotated[
        str | None, typer.Option(help="LeRobot datasets: the video key to ingest (default: the first).")
    ] = None,
) -> None:
    """Discover, probe and fingerprint videos into the `videos` table; bad files go to `quarantine`.

    A LeRobot v2.x dataset folder or URL is a source too: one video per episode, and its actions
    and states go to `episode_actions`."""
    try:
        config = PipelineConfig.model_validate(
            {
                "catalog": catalog,
                "sources": list(sources),
                "stages": [{"name": "ingest", "params": {"backend": backend, "batch_size": batch_size}}],
                "commit_every": commit_every,
                "progress": progress,
                "allow_empty": allow_empty,
                "camera": camera,
            }
        )
        config = with_engine_options(
            config, **engine_options(engine, ray_address, spark_master, spark_conf, progress_timeout)
        )
        note_locations(*sources)
        run_pipeline(config, console)
    except (ConfigError, ValueError, EngineError) as exc:
        fail(str(exc))
    console.print(f"catalog: [bold]{Catalog(catalog).root}[/]")


def run(
    pipeline: Annotated[Path, typer.Argument(help="Pipeline YAML: catalog, engine, sources, stages.")],
    catalog: Annotated[str | None, typer.Option("--catalog", "-c", help="Override the catalog root.")] = None,
    engine: EngineOption = None,
    ray_address: RayAddressOption = None,
    spark_master: SparkMasterOption = None,
    spark_conf: SparkConfOption = None,
    progress_timeout: ProgressTimeoutOption = None,
    allow_empty: Annotated[bool, typer.Option(help="Succeed even if the sources match no file.")] = False,
) -> None:
    """Run a pipeline file end to end; every stage resumes from what the catalog holds."""
    overrides = {}
    if catalog:
        overrides["catalog"] = catalog
    if allow_empty:
        overrides["allow_empty"] = True
    try:
        config = load_config(pipeline, overrides)
        config = with_engine_options(
            config, **engine_options(engine, ray_address, spark_master, spark_conf, progress_timeout)
        )
        note_locations(config.catalog, *config.sources)
        run_pipeline(config, console)
    except (ConfigError, ValueError, EngineError) as exc:
        fail(str(exc))
    console.print(f"catalog: [bold]{config.catalog}[/]")
