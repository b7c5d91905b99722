"""``egocurate shards write``: Parquet training shards of the selected clips, plus their manifest."""

from __future__ import annotations

from typing import Annotated

import typer

from egocurate.catalog.store import Catalog
from egocurate.cli import options
from egocurate.cli.export import LowFps, LowFpsOption

app = typer.Typer(help="Training shards for streaming loaders.", no_args_is_help=True)


@app.command("write")
def shards_write(
    catalog: options.CatalogOption,
    out: Annotated[str, typer.Option("--out", "-o", help="Shard folder URL (local, s3://, hf://).")],
    query: options.QueryOption = None,
    task: options.TaskOption = None,
    fps: Annotated[
        float | None, typer.Option(help="Clip frame rate (default: the latent-action model's).")
    ] = None,
    low_fps: LowFpsOption = LowFps.native,
    width: Annotated[int, typer.Option(min=16)] = 640,
    height: Annotated[int, typer.Option(min=16)] = 480,
    target_mb: Annotated[float, typer.Option(min=0.01, help="Target shard size in MiB.")] = 512,
    row_group_mb: Annotated[float, typer.Option(min=0.01, help="Row-group size in MiB.")] = 32,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of videos in val.")] = 0.05,
    min_frames: Annotated[int, typer.Option(min=1)] = 13,
    seed: Annotated[int, typer.Option(help="Seed of the row order inside shards.")] = 0,
    threshold: options.ThresholdOption = None,
    workers: options.WorkersOption = None,
    progress: options.ProgressOption = True,
) -> None:
    """Write Parquet training shards of the selected clips, a manifest.json, and register them."""
    from egocurate.shards.write import MB, ShardParams, write_shards

    params = ShardParams(
        fps=fps,
        low_fps=str(low_fps),
        width=width,
        height=height,
        min_frames=min_frames,
        target_bytes=int(target_mb * MB),
        row_group_bytes=int(row_group_mb * MB),
        val_fraction=val_fraction,
        seed=seed,
    )
    report = write_shards(
        Catalog(catalog, create=False),
        out,
        query=query,
        task=task,
        params=params,
        thresholds=options.parse_thresholds(threshold),
        workers=workers,
        progress=progress,
    )
    for split, info in report.manifest.splits.items():
        options.console.print(
            f"{split}: {info['rows']} clips from {info['videos']} videos in {info['shards']} shard(s)"
        )
    if report.skipped:
        left_out = options.first_reasons(report.skipped)
        options.console.print(f"[yellow]left out {len(report.skipped)} clip(s)[/]: {left_out}")
    options.console.print(f"manifest: [bold]{report.manifest_url}[/] ({report.seconds:.1f} s)")
