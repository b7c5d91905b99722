"""Ingest throughput: files/s on each engine, side by side with a plain ffprobe loop.

Usage: python benchmarks/ingest.py [--files 120] [--engines local,ray,spark] [--source DIR]

The reference is what a script would do without egocurate: one `ffprobe -show_format -show_streams`
subprocess per file. Our ingest does more per file (a content fingerprint, a tail decode that
catches truncation, a VFR check, Delta commits), so the ratio says what that safety costs.
Each line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egocurate.catalog.store import Catalog  # noqa: E402
from egocurate.ingest.probe_stage import ProbeStage  # noqa: E402
from egocurate.jobs.driver import run_stage  # noqa: E402
from egocurate.media.tools import ffprobe_exe  # noqa: E402
from egocurate.testing.videos import make_video  # noqa: E402


def make_corpus(out: Path, count: int, source: Path | None) -> list[Path]:
    """`count` distinct files: real recordings when given, else a generated one, with unique tails."""
    seeds = sorted(source.glob("*.mp4")) if source else []
    if not seeds:
        seed = out / "seed.mp4"
        make_video(seed, seed=7, scenes=2, scene_seconds=3.0, fps=15.0, width=640, height=480)
        seeds = [seed]
    files = []
    for i in range(count):
        data = seeds[i % len(seeds)].read_bytes() + f"bench-{i}".encode()
        path = out / f"file_{i:05d}.mp4"
        path.write_bytes(data)
        files.append(path)
    return files


def ffprobe_loop(files: list[Path]) -> float:
    exe = ffprobe_exe()
    if exe is None:
        raise SystemExit("the reference needs ffprobe on PATH (apt-get install ffmpeg)")
    start = time.perf_counter()
    for path in files:
        subprocess.run([exe, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                       check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - start


def make_engine(name: str):
    if name == "local":
        from egocurate.jobs.runners.local import LocalEngine

        return LocalEngine()
    if name == "ray":
        from egocurate.jobs.runners.ray import RayEngine

        return RayEngine()
    from egocurate.jobs.runners.spark import SparkEngine

    return SparkEngine(work_unit_rows=256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=120)
    parser.add_argument("--engines", default="local,ray,spark")
    parser.add_argument("--source", type=Path, default=None, help="folder of real .mp4 files to copy from")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="egocurate-bench-"))
    try:
        (work / "src").mkdir()
        files = make_corpus(work / "src", args.files, args.source)
        rows = pa.table({"uri": [str(p) for p in files]})
        reference_s = ffprobe_loop(files)
        reference = {
            "bench": "ingest",
            "impl": "ffprobe_loop",
            "files": len(files),
            "seconds": round(reference_s, 3),
            "files_per_s": round(len(files) / reference_s, 2),
        }
        print(json.dumps(reference), flush=True)
        for name in args.engines.split(","):
            start = time.perf_counter()
            engine = make_engine(name)
            startup = time.perf_counter() - start
            catalog = Catalog(work / f"catalog_{name}")
            summary = run_stage(ProbeStage(batch_size=args.batch_size), rows, catalog, engine, progress=False)
            engine.close()
            files_per_s = len(files) / summary.seconds
            print(json.dumps({
                "bench": "ingest", "impl": f"egocurate[{name}]", "files": len(files),
                "seconds": round(summary.seconds, 3), "engine_startup_s": round(startup, 2),
                "files_per_s": round(files_per_s, 2),
                "ratio_vs_ffprobe_loop": round(files_per_s / (len(files) / reference_s), 3),
                "rows_out": summary.rows_out, "quarantined": summary.quarantined, "commits": summary.commits,
            }), flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
