"""``egocurate export dreamdojo|lerobot``: the layouts the DreamDojo trainer and LeRobot read as they are."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from egocurate.catalog.store import Catalog
from egocurate.cli.options import (
    CatalogOption,
    ProgressOption,
    QueryOption,
    TaskOption,
    ThresholdOption,
    WorkersOption,
    console,
    fail,
    first_reasons,
    parse_thresholds,
)


class LowFps(StrEnum):
    """What to do with a source slower than the target rate (frames are never duplicated)."""

    native = "native"
    refuse = "refuse"


LowFpsOption = Annotated[
    LowFps,
    typer.Option(
        "--low-fps",
        help="A source slower than --fps: keep its own rate (native) or leave it out (refuse). "
        "Frames are never duplicated.",
    ),
]

app = typer.Typer(help="Exports the DreamDojo trainer reads as they are.", no_args_is_help=True)


ReplaceOption = Annotated[
    bool,
    typer.Option(
        help="Accept a re-export that drops more than half of the previous export's clips "
        "(without it such an export is refused and the previous one kept)."
    ),
]


@app.command("dreamdojo")
def export_dreamdojo_cmd(
    catalog: CatalogOption,
    out: Annotated[str, typer.Option("--out", "-o", help="Dataset root for DreamDojo's human-video loader.")],
    query: QueryOption = None,
    task: TaskOption = None,
    fps: Annotated[
        float | None,
        typer.Option(
            help="Render clips at this rate, 1 to 240 (downsampling only). Default: the latent-action "
            "model's rate (native / LAM stride), the rate shards use."
        ),
    ] = None,
    low_fps: LowFpsOption = LowFps.native,
    min_frames: Annotated[int, typer.Option(min=14, help="The loader needs at least 14 frames.")] = 14,
    width: Annotated[int, typer.Option(min=16)] = 640,
    height: Annotated[int, typer.Option(min=16)] = 480,
    threshold: ThresholdOption = None,
    workers: WorkersOption = None,
    progress: ProgressOption = True,
    replace: ReplaceOption = False,
) -> None:
    """Write an MP4 tree DreamDojo's human-video loader accepts as it is (plus clips.parquet)."""
    from egocurate.export.dreamdojo import export_dreamdojo

    _check_fps(fps)
    _run_export(
        export_dreamdojo,
        Catalog(catalog, create=False),
        out,
        query=query,
        task=task,
        fps=fps,
        low_fps=str(low_fps),
        min_frames=min_frames,
        width=width,
        height=height,
        thresholds=parse_thresholds(threshold),
        workers=workers,
        progress=progress,
        replace=replace,
    )


@app.command("lerobot")
def export_lerobot_cmd(
    catalog: CatalogOption,
    out: Annotated[str, typer.Option("--out", "-o", help="LeRobot v2.1 dataset folder.")],
    query: QueryOption = None,
    task: TaskOption = None,
    fps: Annotated[
        float,
        typer.Option(
            help="Dataset frame rate, 1 to 240: faster clips are resampled down to it, slower ones left out."
        ),
    ] = 10.0,
    width: Annotated[int, typer.Option(min=16)] = 640,
    height: Annotated[int, typer.Option(min=16)] = 480,
    val_fraction: Annotated[float, typer.Option(min=0.0, max=1.0)] = 0.0,
    robot_type: Annotated[str, typer.Option(help="info.json robot_type.")] = "human_egocentric",
    action_source: Annotated[
        str,
        typer.Option(
            help="Where `action` comes from, in order of preference: real (recorded), idm "
            "(pseudo-actions), latent, zeros. A clip with none of them is left out and counted."
        ),
    ] = "latent,zeros",
    origin: Annotated[
        str | None, typer.Option(help="Only real (recorded) or only generated (rollout) clips.")
    ] = None,
    threshold: ThresholdOption = None,
    workers: WorkersOption = None,
    progress: ProgressOption = True,
    replace: ReplaceOption = False,
) -> None:
    """Write a LeRobot v2.1 dataset: one episode per clip, `action` from --action-source.

    info.json (`egocurate_action`) and meta/episodes.jsonl (`action_source`) say which source,
    model and checkpoint hash each episode's actions came from.

    Read by lerobot's LeRobotDataset (v2.1). NOT by DreamDojo's robot loader: it accepts only its
    embodiment tags (gr1, g1, agibot, yam), hard-codes their video keys and needs `state` columns,
    which egocentric video lacks. For DreamDojo use `export dreamdojo` or shards with
    egocurate.integrations.dreamdojo.
    """
    from egocurate.export.lerobot import export_lerobot

    _check_fps(fps)
    _run_export(
        export_lerobot,
        Catalog(catalog, create=False),
        out,
        query=query,
        task=task,
        fps=fps,
        width=width,
        height=height,
        val_fraction=val_fraction,
        robot_type=robot_type,
        action_source=action_source,
        origin=origin,
        thresholds=parse_thresholds(threshold),
        workers=workers,
        progress=progress,
        replace=replace,
    )


@app.command("recover")
def export_recover_cmd(
    out: Annotated[str, typer.Option("--out", "-o", help="The export folder to check.")],
) -> None:
    """Put back an export that a killed export left renamed away, and drop dead exports' leftovers.

    Every export does this first on its own; run it when a reader finds --out missing.
    """
    from egocurate.export.common import recover_export

    try:
        restored = recover_export(out)
    except OSError as exc:
        fail(f"cannot recover {out}: {exc}")
    console.print(f"restored the previous export at {out}" if restored else f"nothing to recover at {out}")


def _check_fps(fps: float | None) -> None:
    """A frame rate no export can render is one ``error:`` line (exit 2) before anything is opened."""
    from egocurate.export.common import check_fps

    try:
        check_fps(fps)
    except ValueError as exc:
        fail(str(exc))


def _run_export(export, *args, **kwargs) -> None:
    """Run one export command: a bad query, an existing output or a refused publish is one error line
    (exit 2); a refused export still lists the clips it left out and why."""
    from egocurate.export.common import ExportRefused

    try:
        report = export(*args, **kwargs)
    except ExportRefused as exc:
        if exc.report is not None and exc.report.skipped:
            _print_left_out(exc.report.skipped)
        fail(str(exc))
    except (ValueError, FileExistsError) as exc:
        fail(str(exc))
    _print_report(report)
    if report.written == 0 and report.skipped:  # no silent no-op: nothing selected could be written
        fail(f"none of the {len(report.skipped)} selected clip(s) could be written")


def _print_report(report) -> None:
    console.print(f"wrote {report.written} clip(s) to [bold]{report.out}[/] ({report.seconds:.1f} s)")
    if report.renamed:
        console.print("renamed for the loader's path filter: " + json.dumps(report.renamed))
    if report.skipped:
        _print_left_out(report.skipped)


def _print_left_out(skipped: dict[str, str]) -> None:
    console.print(f"[yellow]left out {len(skipped)} clip(s)[/]: " + first_reasons(skipped))
