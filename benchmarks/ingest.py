"""Ingest throughput: files/s and CPU seconds on each engine, beside a plain ffprobe loop.

Usage: python benchmarks/ingest.py [--files 120] [--engines local,ray,spark] [--source DIR]
    [--backends auto,ffprobe] [--tiny]

The reference is what a script would do without egocurate: one `ffprobe -show_format -show_streams`
subprocess per file, one at a time. Our ingest does more per file (a content fingerprint, a tail
check that catches truncation, a VFR check, Delta commits). Its default backend (`auto`) probes
in-process with PyAV; `--backends auto,ffprobe` also runs the ffprobe backend, which starts an
ffprobe process per file as the reference loop does.

Both are timed in wall seconds and in CPU seconds (this process, its children and every deeper
descendant, `throughput.CpuClock`): CPU seconds are what a shared machine's load does not inflate.
`ratio_vs_ffprobe_loop` is files/s over the loop's files/s, `cpu_ratio_vs_ffprobe_loop` the loop's
CPU seconds over ours (above 1: cheaper than the loop). The local engine runs one file at a time
like the loop, so its ratios compare the same files on the same core; Ray and Spark use every core.
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

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from throughput import CpuClock  # noqa: E402

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


def ffprobe_loop(files: list[Path]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ffprobe process per file, one after the other."""
    exe = ffprobe_exe()
    if exe is None:
        raise SystemExit("the reference needs ffprobe on PATH (apt-get install ffmpeg)")
    with CpuClock() as clock:
        start = time.perf_counter()
        for path in files:
            subprocess.run([exe, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                           check=True, capture_output=True)  # fmt: skip
        wall = time.perf_counter() - start
    return wall, clock.seconds


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
    parser.add_argument("--backends", default="auto", help="probe backends of ProbeStage to time")
    parser.add_argument("--source", type=Path, default=None, help="folder of real .mp4 files to copy from")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tiny", action="store_true", help="a few files, local engine, both backends")
    args = parser.parse_args()
    if args.tiny:
        args.files, args.engines, args.backends = 6, "local", "auto,ffprobe"
    work = Path(tempfile.mkdtemp(prefix="egocurate-bench-"))
    try:
        (work / "src").mkdir()
        files = make_corpus(work / "src", args.files, args.source)
        rows = pa.table({"uri": [str(p) for p in files]})
        warmup = Catalog(work / "warmup")  # imports and the page cache, paid before timing
        run_stage(ProbeStage(), rows.slice(0, 1), warmup, make_engine("local"), progress=False)
        reference_s, reference_cpu = ffprobe_loop(files)
        print(json.dumps({
            "bench": "ingest", "impl": "ffprobe_loop", "files": len(files), "cores": 1,
            "seconds": round(reference_s, 3), "cpu_s": round(reference_cpu, 3),
            "files_per_s": round(len(files) / reference_s, 2),
        }), flush=True)  # fmt: skip
        for name in args.engines.split(","):
            for backend in args.backends.split(","):
                start = time.perf_counter()
                engine = make_engine(name)
                startup = time.perf_counter() - start
                catalog = Catalog(work / f"catalog_{name}_{backend}")
                stage = ProbeStage(backend=backend, batch_size=args.batch_size)
                with CpuClock() as clock:
                    summary = run_stage(stage, rows, catalog, engine, progress=False)
                engine.close()
                files_per_s = len(files) / summary.seconds
                probed_by = catalog.read("videos", columns=["probe_backend"]).column(0).to_pylist()
                print(json.dumps({
                    "bench": "ingest", "impl": f"egocurate[{name}]", "backend": backend,
                    "probe_backends": sorted(set(probed_by)), "files": len(files),
                    "cores": 1 if name == "local" else None,
                    "seconds": round(summary.seconds, 3), "cpu_s": round(clock.seconds, 3),
                    "engine_startup_s": round(startup, 2), "files_per_s": round(files_per_s, 2),
                    "ratio_vs_ffprobe_loop": round(files_per_s / (len(files) / reference_s), 3),
                    "cpu_ratio_vs_ffprobe_loop": round(reference_cpu / clock.seconds, 3),
                    "rows_out": summary.rows_out, "quarantined": summary.quarantined,
                    "commits": summary.commits,
                }), flush=True)  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
