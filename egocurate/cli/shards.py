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
    """Write Parquet training shards of the selected clips, a manifest.json, and register them.

    Writes and deletes only inside --out: it refuses a non-empty folder that holds no shard manifest
    (or a foreign one) and a split name that is not a plain folder name (letters, digits, _ . -);
    after publishing it deletes the shard files of ours that the manifest does not list (an earlier
    write's, a concurrent writer's that lost, a killed one's), never a running writer's."""
    import duckdb

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
    thresholds = options.parse_thresholds(threshold)
    try:
        report = write_shards(
            Catalog(catalog, create=False),
            out,
            query=query,
            task=task,
            params=params,
            thresholds=thresholds,
            workers=workers,
            progress=progress,
        )
    except duckdb.Error as exc:  # the --query (or --task) does not run: the user's to fix, one line
        options.fail(f"SQL error in the shard selection: {exc}")
    for split, info in report.manifest.splits.items():
        options.console.print(
            f"{split}: {info['rows']} clips from {info['videos']} videos in {info['shards']} shard(s)"
        )
    if report.skipped:
        left_out = options.first_reasons(report.skipped)
        options.console.print(f"[yellow]left out {len(report.skipped)} clip(s)[/]: {left_out}")
    options.console.print(f"manifest: [bold]{report.manifest_url}[/] ({report.seconds:.1f} s)")
