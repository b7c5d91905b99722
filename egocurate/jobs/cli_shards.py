"""``egocurate shards write`` and ``egocurate export dreamdojo|lerobot``.

Mounted on the main app as ``app.add_typer(shards_app, name="shards")`` and
``app.add_typer(export_app, name="export")``.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from egocurate.catalog.store import Catalog

shards_app = typer.Typer(help="Training shards for streaming loaders.", no_args_is_help=True)
export_app = typer.Typer(help="Exports the DreamDojo trainer reads as they are.", no_args_is_help=True)
console = Console()

CatalogOption = Annotated[
    str, typer.Option("--catalog", "-c", envvar="EGOCURATE_CATALOG", help="Catalog root: a path or URL.")
]
QueryOption = Annotated[
    str | None,
    typer.Option("--query", "-q", help="SQL over clip_view returning clip_id (default: kept clips)."),
]
TaskOption = Annotated[str | None, typer.Option("--task", help='Glob on the clip task label, e.g. "pour*".')]
WorkersOption = Annotated[int | None, typer.Option(min=1, help="Parallel clip renders (default: CPU count).")]
ProgressOption = Annotated[bool, typer.Option(help="Show progress bars.")]


def _thresholds(values: list[str] | None) -> dict[str, float]:
    out = {}
    for item in values or []:
        name, _, value = item.partition("=")
        if not value:
            raise typer.BadParameter(f"threshold {item!r} is not NAME=VALUE")
        out[name.strip()] = float(value)
    return out


ThresholdOption = Annotated[
    list[str] | None, typer.Option("--threshold", "-t", help="Read-time threshold NAME=VALUE (repeatable).")
]


@shards_app.command("write")
def shards_write(
    catalog: CatalogOption,
    out: Annotated[str, typer.Option("--out", "-o", help="Shard folder URL (local, s3://, hf://).")],
    query: QueryOption = None,
    task: TaskOption = None,
    fps: Annotated[
        float | None, typer.Option(help="Clip frame rate (default: the latent-action model's).")
    ] = None,
    width: Annotated[int, typer.Option(min=16)] = 640,
    height: Annotated[int, typer.Option(min=16)] = 480,
    target_mb: Annotated[float, typer.Option(min=0.01, help="Target shard size in MiB.")] = 512,
    row_group_mb: Annotated[float, typer.Option(min=0.01, help="Row-group size in MiB.")] = 32,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of videos in val.")] = 0.05,
    min_frames: Annotated[int, typer.Option(min=1)] = 13,
    seed: Annotated[int, typer.Option(help="Seed of the row order inside shards.")] = 0,
    threshold: ThresholdOption = None,
    workers: WorkersOption = None,
    progress: ProgressOption = True,
) -> None:
    """Write Parquet training shards of the selected clips, a manifest.json, and register them."""
    from egocurate.catalog.shards import MB, ShardParams, write_shards

    params = ShardParams(
        fps=fps,
        width=width,
        height=height,
        min_frames=min_frames,
        target_bytes=int(target_mb * MB),
        row_group_bytes=int(row_group_mb * MB),
        val_fraction=val_fraction,
        seed=seed,
    )
    report = write_shards(
        Catalog(catalog),
        out,
        query=query,
        task=task,
        params=params,
        thresholds=_thresholds(threshold),
        workers=workers,
        progress=progress,
    )
    for split, info in report.manifest.splits.items():
        console.print(
            f"{split}: {info['rows']} clips from {info['videos']} videos in {info['shards']} shard(s)"
        )
    if report.skipped:
        console.print(f"[yellow]left out {len(report.skipped)} clip(s)[/]: " + _first_reasons(report.skipped))
    console.print(f"manifest: [bold]{report.manifest_url}[/] ({report.seconds:.1f} s)")


@export_app.command("dreamdojo")
def export_dreamdojo_cmd(
    catalog: CatalogOption,
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset root for DreamDojo's human-video loader.")],
    query: QueryOption = None,
    task: TaskOption = None,
    fps: Annotated[
        float, typer.Option(help="Resample clips to this rate (post-training uses 10 Hz).")
    ] = 10.0,
    min_frames: Annotated[int, typer.Option(min=14, help="The loader needs at least 14 frames.")] = 14,
    width: Annotated[int, typer.Option(min=16)] = 640,
    height: Annotated[int, typer.Option(min=16)] = 480,
    threshold: ThresholdOption = None,
    workers: WorkersOption = None,
    progress: ProgressOption = True,
) -> None:
    """Write an MP4 tree DreamDojo's human-video loader accepts as it is (plus clips.parquet)."""
    from egocurate.catalog.export import export_dreamdojo

    _run_export(
        export_dreamdojo,
        Catalog(catalog),
        out,
        query=query,
        task=task,
        fps=fps,
        min_frames=min_frames,
        width=width,
        height=height,
        thresholds=_thresholds(threshold),
        workers=workers,
        progress=progress,
    )


@export_app.command("lerobot")
def export_lerobot_cmd(
    catalog: CatalogOption,
    out: Annotated[str, typer.Option("--out", "-o", help="LeRobot v2.1 dataset folder.")],
    query: QueryOption = None,
    task: TaskOption = None,
    fps: Annotated[float, typer.Option(help="Dataset frame rate (clips are resampled to it).")] = 10.0,
    width: Annotated[int, typer.Option(min=16)] = 640,
    height: Annotated[int, typer.Option(min=16)] = 480,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    robot_type: Annotated[str, typer.Option(help="info.json robot_type.")] = "human_egocentric",
    threshold: ThresholdOption = None,
    workers: WorkersOption = None,
    progress: ProgressOption = True,
) -> None:
    """Write a LeRobot v2.1 dataset: one episode per clip, latent actions as `action`."""
    from egocurate.catalog.lerobot import export_lerobot

    _run_export(
        export_lerobot,
        Catalog(catalog),
        out,
        query=query,
        task=task,
        fps=fps,
        width=width,
        height=height,
        val_fraction=val_fraction,
        robot_type=robot_type,
        thresholds=_thresholds(threshold),
        workers=workers,
        progress=progress,
    )


def _run_export(export, *args, **kwargs) -> None:
    """Run one export command: a bad query or an existing output is a clear error, exit code 2."""
    try:
        report = export(*args, **kwargs)
    except (ValueError, FileExistsError) as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    _print_report(report)


def _first_reasons(skipped: dict[str, str], limit: int = 3) -> str:
    items = list(skipped.items())[:limit]
    return "; ".join(f"{cid}: {why}" for cid, why in items) + (" ..." if len(skipped) > limit else "")


def _print_report(report) -> None:
    console.print(f"wrote {report.written} clip(s) to [bold]{report.out}[/] ({report.seconds:.1f} s)")
    if report.renamed:
        console.print("renamed for the loader's path filter: " + json.dumps(report.renamed))
    if report.skipped:
        console.print(f"[yellow]left out {len(report.skipped)} clip(s)[/]: " + _first_reasons(report.skipped))


def demo_exports(catalog: Catalog, out, progress: bool = False) -> dict[str, str]:
    """Shards, the DreamDojo MP4 tree and the LeRobot dataset of a demo catalog, under `out`.

    What ``egocurate demo`` runs after its pipeline; clips too short for an export are reported,
    not fatal. Returns where each output went.
    """
    from pathlib import Path

    from egocurate.catalog.export import export_dreamdojo
    from egocurate.catalog.lerobot import export_lerobot
    from egocurate.catalog.shards import MB, ShardParams, write_shards

    out = Path(out)
    shards = write_shards(
        catalog, str(out / "shards"), params=ShardParams(target_bytes=64 * MB, row_group_bytes=8 * MB),
        progress=progress,
    )  # fmt: skip
    dreamdojo = export_dreamdojo(catalog, str(out / "dreamdojo_export"), progress=progress)
    lerobot = export_lerobot(catalog, str(out / "lerobot_export"), progress=progress)
    return {
        "shards": shards.manifest_url,
        "dreamdojo": f"{dreamdojo.out} ({dreamdojo.written} clips, {len(dreamdojo.skipped)} too short)",
        "lerobot": f"{lerobot.out} ({lerobot.written} episodes)",
    }
