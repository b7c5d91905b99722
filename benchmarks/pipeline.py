"""Shared decode: quality + embed + latent actions on the same clips, one pass vs one pass per stage.

Usage:
    .venv/bin/python benchmarks/pipeline.py [--videos 6] [--clip-s 4] [--source ../shared/data] [--tiny]

The clips come from real recordings (``../shared/data``, 1080p EgoDex and Aria footage among them),
ingested and cut into fixed windows once. Then the three per-clip stages that read frames run twice
on copies of that catalog, in one process, on the local engine, after one untimed warm-up run:
``separate`` (``shared_decode: false``: each stage decodes each clip itself) and ``shared`` (one
fused pass, one decode per clip at the largest size any stage asks for, each stage's frames
resized from it). The labels stage reads
embeddings and text, not frames, so it has nothing to share and is left out.

Decode time is measured where every decode path goes through: ``media.decode._get`` (decord or
PyAV, seek + decode + scale), summed over calls. The last lines compare the scores of the two runs:
resampling from a larger decode changes resolution-sensitive scores (blur most), so a catalog should
be built with one setting.

``--tiny`` runs the same code on two small generated videos in seconds (a test runs it that way).
Each line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--clip-s", type=float, default=4.0)
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="egocurate-pipeline-bench-"))
    try:
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
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
