"""Two pipeline benchmarks: throughput of the CPU stages at 1x/4x/16x, and shared decode.

Usage:
    .venv/bin/python benchmarks/pipeline.py [--mode throughput] [--base 8] [--segment-s 4]
        [--scales 1,4,16] [--engines local,ray,spark] [--cores 2] [--tiny]
    .venv/bin/python benchmarks/pipeline.py --mode shared-decode [--videos 6] [--clip-s 4] [--tiny]

``throughput`` (see ``benchmarks/throughput.py``) runs ingest, shots, quality+embed (one fused
pass), dedup and labels on ``base`` x each scale distinct 640x480 segments derived from
``--source`` (cached under ``benchmarks/.cache/``), on each engine (Spark runs ingest only, the
stage our pipelines put on it), after one untimed local warm-up. Per stage and overall it prints
video-hours per core-hour, the engine overhead (share of the workers' wall time not spent inside
``process``) and the exponent of wall time vs data size fitted over the scales. BLAS/OpenMP run
one thread per worker, so the local loop uses one core and Ray/Spark ``--cores``.

The yardstick: before the runs, each input is decoded once the plainest way (PyAV, one thread,
every frame, nothing done with the frames), timed in CPU seconds of the decoding thread. That is
the floor of any CPU pipeline that looks at every frame. One ``decode_yardstick`` line per scale
gives its CPU seconds and video-hours per CPU-hour, and every run's ``overall`` line gives its CPU
time as a multiple of it (``x_decode``) beside ``video_h_per_cpu_h``.

``shared-decode``: quality + embed + latent actions on the same clips, one pass vs one pass per stage.
The clips come from real recordings (``../shared/data``, 1080p EgoDex and Aria footage among them),
ingested and cut into fixed windows once. Then the three per-clip stages that read frames run twice
on copies of that catalog, in one process, on the local engine, after one untimed warm-up run:
``separate`` (``shared_decode: false``: each stage decodes each clip itself) and ``shared`` (one
fused pass, one decode per clip, each decoded picture scaled to each stage's size the way the
stage's own decode scales it, so the score shifts below read 0). The labels stage reads
embeddings and text, not frames, so it has nothing to share and is left out.

Decode time is measured where every decode path goes through: ``media.decode._get`` (decord or
PyAV, seek + decode + scale), summed over calls. The last lines compare the scores of the two runs:
resampling from a larger decode changes resolution-sensitive scores (blur most), so a catalog should
be built with one setting.

``--tiny`` runs either mode on small generated videos in seconds (tests run it that way).
Each line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
# Ray workers and Spark executors import this checkout too, not whatever egocurate is installed.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):  # one core per worker
    os.environ.setdefault(_var, "1")

from egocurate.catalog.store import Catalog  # noqa: E402
from egocurate.jobs.config import PipelineConfig  # noqa: E402
from egocurate.jobs.pipeline import run_pipeline  # noqa: E402
from egocurate.media import decode  # noqa: E402

LAM = {"lam_config": {"model_dim": 64, "enc_blocks": 2, "dec_blocks": 2, "num_heads": 4}, "stride": 2}
CLIP_STAGES = [
    {"name": "quality"},
    {"name": "embed", "params": {"model": "egocurate-tiny-clip", "pretrained": None}},
    {"name": "latent_actions", "params": LAM},
]
SCORES = ("motion", "blur", "brightness", "static_fraction")


class DecodeClock:
    """Wraps ``media.decode._get``: decoder calls and the seconds spent in them."""

    def __init__(self) -> None:
        self.calls, self.seconds, self._real = 0, 0.0, decode._get

    def __enter__(self) -> DecodeClock:
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return self._real(*args, **kwargs)
            finally:
                self.calls += 1
                self.seconds += time.perf_counter() - start

        decode._get = timed
        return self

    def __exit__(self, *exc) -> None:
        decode._get = self._real


def sources(args: argparse.Namespace, work: Path) -> list[str]:
    if args.tiny:
        from egocurate.testing.videos import make_video

        paths = []
        for i in range(2):
            path = work / f"tiny_{i}.mp4"
            make_video(path, seed=i, scenes=2, scene_seconds=2.0, fps=10.0, width=320, height=240)
            paths.append(str(path))
        return paths
    found = sorted(Path(args.source).glob("*.mp4"))[: args.videos]
    if not found:
        raise SystemExit(f"no .mp4 in {args.source}")
    return [str(p) for p in found]


def config(root: Path, srcs: list[str], stages: list[dict], shared: bool) -> PipelineConfig:
    return PipelineConfig(
        catalog=str(root), sources=srcs, stages=stages, shared_decode=shared, progress=False
    )


def shared_decode(args: argparse.Namespace, work: Path) -> None:
    """One fused pass vs a decode per stage (the ``shared-decode`` mode)."""
    srcs = sources(args, work)
    base = work / "base"
    window = 2.0 if args.tiny else args.clip_s
    shot_params = {"detector": "fixed", "detector_params": {"window_s": window}, "min_clip_s": window / 2}
    shots = {"name": "shots", "params": shot_params}
    run_pipeline(config(base, srcs, [{"name": "ingest"}, shots], shared=False))
    clips = Catalog(base).count("clips")
    hours = float(np.sum(Catalog(base).read("clips", columns=["duration_s"]).column(0).to_numpy())) / 3600
    warm = work / "warmup"  # imports, model construction and page cache, paid before timing
    shutil.copytree(base, warm)
    run_pipeline(config(warm, [], CLIP_STAGES, shared=False))
    results = {}
    for mode in ("separate", "shared"):
        root = work / mode
        shutil.copytree(base, root)
        with DecodeClock() as clock:
            start = time.perf_counter()
            summaries = run_pipeline(config(root, [], CLIP_STAGES, shared=mode == "shared"))
            wall = time.perf_counter() - start
        results[mode] = {"wall_s": wall, "decode_s": clock.seconds, "decode_calls": clock.calls}
        print(json.dumps({
            "bench": "shared_decode", "mode": mode, "videos": len(srcs), "clips": clips,
            "video_hours": round(hours, 4), "wall_s": round(wall, 2), "decode_s": round(clock.seconds, 2),
            "decode_calls": clock.calls, "stages": {s.stage: s.rows_out for s in summaries},
        }))  # fmt: skip
    sep, sha = results["separate"], results["shared"]
    print(json.dumps({
        "check": "decode_seconds_saved", "seconds": round(sep["decode_s"] - sha["decode_s"], 2),
        "decode_ratio_shared_vs_separate": round(sha["decode_s"] / max(sep["decode_s"], 1e-9), 3),
        "wall_ratio_shared_vs_separate": round(sha["wall_s"] / max(sep["wall_s"], 1e-9), 3),
        "decode_calls": [sep["decode_calls"], sha["decode_calls"]],
    }))  # fmt: skip
    a = Catalog(work / "shared").read("clip_quality").sort_by("clip_id")
    b = Catalog(work / "separate").read("clip_quality").sort_by("clip_id")
    for score in SCORES:
        x = a.column(score).to_numpy(zero_copy_only=False).astype(float)
        y = b.column(score).to_numpy(zero_copy_only=False).astype(float)
        rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-9)
        print(json.dumps({
            "check": "score_shift_shared_vs_separate", "score": score,
            "median_rel": round(float(np.nanmedian(rel)), 4),
            "max_rel": round(float(np.nanmax(rel)), 4),
            "mean_separate": round(float(np.nanmean(y)), 4),
            "mean_shared": round(float(np.nanmean(x)), 4),
        }))  # fmt: skip


def plain_decode(path: str) -> tuple[float, float, int]:
    """(CPU seconds, video seconds, frames) of decoding every frame of `path` with PyAV on one thread,
    converting nothing: the least work any stage that looks at every frame can do."""
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        video_s = float(container.duration or 0) / 1_000_000
        start, frames = time.thread_time(), 0
        for _frame in container.decode(stream):
            frames += 1
        return time.thread_time() - start, video_s, frames


def decode_yardstick(srcs: list[str], base: int, scales: list[int]) -> dict[str, float]:
    """Plain-decode CPU seconds of every input (after one untimed decode), one line per scale."""
    plain_decode(srcs[0])  # libav's first-use setup and the page cache, paid before timing
    measured = {path: plain_decode(path) for path in srcs}
    for scale in scales:
        chosen = [measured[p] for p in srcs[: base * scale]]
        cpu_s, video_s = sum(m[0] for m in chosen), sum(m[1] for m in chosen)
        print(json.dumps({
            "bench": "decode_yardstick", "scale": scale, "videos": len(chosen), "video_s": round(video_s, 1),
            "frames": sum(m[2] for m in chosen), "cpu_s": round(cpu_s, 3),
            "video_h_per_cpu_h": round(video_s / cpu_s, 2),
        }), flush=True)  # fmt: skip
    return {path: m[0] for path, m in measured.items()}


def throughput_mode(args: argparse.Namespace, work: Path) -> None:
    """The CPU stages on 1x/4x/16x a base set, per engine (the ``throughput`` mode)."""
    from throughput import derive, plan_segments, run_all

    scales = [int(s) for s in args.scales.split(",")]
    engines = args.engines.split(",")
    if args.tiny:
        from egocurate.testing.videos import make_video

        srcs = []
        for i in range(args.base * max(scales)):
            path = work / f"tiny_{i}.mp4"
            make_video(path, seed=i, scenes=2, scene_seconds=3.0, fps=10.0, width=320, height=240)
            srcs.append(str(path))
    else:
        srcs = derive(plan_segments(Path(args.source), args.base * max(scales), args.segment_s))
    decode_cpu = decode_yardstick(srcs, args.base, scales)
    run_all(work, srcs, args.base, scales, engines, args.cores, decode_cpu_s=decode_cpu)


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("throughput", "shared-decode"), default="throughput")
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--videos", type=int, default=6, help="shared-decode: recordings used")
    parser.add_argument("--clip-s", type=float, default=4.0, help="shared-decode: clip window")
    parser.add_argument("--base", type=int, default=8, help="throughput: segments at 1x")
    parser.add_argument("--segment-s", type=float, default=4.0, help="throughput: seconds per segment")
    parser.add_argument("--scales", default="1,4,16", help="throughput: multiples of the base set")
    parser.add_argument("--engines", default="local,ray,spark", help="throughput: engines to run")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="throughput: Ray/Spark cores")
    args = parser.parse_args()
    if args.tiny and args.mode == "throughput":
        args.base, args.scales = min(args.base, 2), "1,2"
    work = Path(tempfile.mkdtemp(prefix="egocurate-pipeline-bench-"))
    signal.signal(signal.SIGTERM, _interrupted)  # a stopped run still prints what it measured
    try:
        (throughput_mode if args.mode == "throughput" else shared_decode)(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
