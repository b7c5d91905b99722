"""`egocurate shots ...`: shot boundaries and the clips they give, for one video, without a catalog.

The pipeline stage (``shots`` in a pipeline YAML, run by ``egocurate run``) is what fills the
`clips` table; these commands are for looking at one file and tuning parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, get_args

import typer

from egocurate.ingest.clips import ClipPolicy, plan_clips
from egocurate.ingest.shots import DetectorName, detect_transitions, shots_from_transitions

app = typer.Typer(help="Shot boundaries and clips of single videos.", no_args_is_help=True)


def _params(pairs: list[str]) -> dict:
    """KEY=VALUE pairs, values parsed as JSON when they parse (numbers, booleans, lists)."""
    out: dict = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


@app.command("detect")
def detect(
    video: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A video file.")],
    detector: Annotated[str, typer.Option(help="content, cascade, transnet or fixed.")] = "content",
    param: Annotated[list[str], typer.Option("--param", "-p", help="Detector parameter KEY=VALUE.")] = [],  # noqa: B006
    min_clip_s: Annotated[float, typer.Option(help="Shortest clip kept (s).")] = 2.0,
    max_clip_s: Annotated[float, typer.Option(help="Longer shots are split evenly (s).")] = 20.0,
) -> None:
    """Print the transitions, shots and planned clips of VIDEO as one JSON object."""
    if detector not in get_args(DetectorName):
        allowed = ", ".join(get_args(DetectorName))
        raise typer.BadParameter(f"unknown detector {detector!r}; allowed: {allowed}")
    name: DetectorName = detector  # type: ignore[assignment]
    transitions, timing = detect_transitions(str(video), detector=name, **_params(param))
    shots = shots_from_transitions(transitions, timing.num_frames)
    clips = plan_clips(shots, timing, ClipPolicy(min_s=min_clip_s, max_s=max_clip_s))
    report = {
        "video": str(video),
        "frames": timing.num_frames,
        "fps": round(timing.fps, 6),
        "decoded_frames": timing.decoded_frames,
        "transitions": [{"kind": t.kind, "start": t.start_frame, "end": t.end_frame} for t in transitions],
        "shots": [{"kind": s.kind, "start": s.start_frame, "end": s.end_frame} for s in shots],
        "clips": [
            {
                "start": c.start_frame,
                "end": c.end_frame,
                "start_s": c.start_s,
                "end_s": c.end_s,
                "kind": c.kind,
            }
            for c in clips
        ],  # fmt: skip
    }
    typer.echo(json.dumps(report))
