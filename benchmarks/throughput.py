"""Throughput of the CPU stages as data teams plan it: 1x, 4x, 16x a base set, per engine.

Used by ``benchmarks/pipeline.py --mode throughput`` (see its docstring). The videos are 640x480
segments re-encoded from real recordings (``../shared/data``), each from its own source, offset,
crop side and mirroring, so no two share a content fingerprint; they are cached under
``benchmarks/.cache/throughput``. Every figure comes from the run summaries: a stage's wall time
(the driver's ``run_stage``), and ``worker_seconds``, the time the workers spent inside the stage's
``process`` (summed over workers; for the driver-side dedup, the grouping itself).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import resource
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from egocurate.catalog.store import Catalog
from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline
from egocurate.media.tools import ffmpeg_exe

CACHE = Path(__file__).resolve().parent / ".cache" / "throughput"
# The CPU stages, with batches small enough that a 1x run still gives every core work.
STAGES = [
    {"name": "ingest", "params": {"batch_size": 4}},
    {"name": "shots",
     "params": {"detector": "content", "min_clip_s": 2.0, "max_clip_s": 20.0, "batch_size": 1}},
    {"name": "quality", "params": {"batch_size": 4}},
    {"name": "embed", "params": {"model": "egocurate-tiny-clip", "pretrained": None, "batch_size": 8}},
    {"name": "dedup", "params": {"eps": 0.0005, "center": True}},
    {"name": "labels",
     "params": {"clip_model": "egocurate-tiny-clip", "clip_pretrained": None, "batch_size": 32}},
]  # fmt: skip
# Spark runs the stages our pipelines put on it (ingest; statistics and report are not CPU stages here).
SPARK_STAGES = ("ingest",)


@dataclass(frozen=True)
class Segment:
    """One derived video: `seconds` of `source` from `offset`, cropped to 4:3 on `side`, maybe mirrored."""

    source: Path
    offset: float
    seconds: float
    side: str  # "left" | "right": which 4:3 window (top-left or bottom-right corner)
    mirror: bool

    def name(self) -> str:
        tag = f"{self.source.name}:{self.offset:g}:{self.seconds:g}:{self.filter()}"
        return f"{self.source.stem[:40]}_{hashlib.sha1(tag.encode()).hexdigest()[:10]}.mp4"

    def filter(self) -> str:
        # "right" is the opposite corner: the far side of a wide frame, the bottom of a square one
        # (a square source scaled to 640x640 has no horizontal slack, so x alone would repeat "left").
        x, y = ("0", "0") if self.side == "left" else ("iw-ow", "ih-oh")
        chain = f"scale=640:480:force_original_aspect_ratio=increase,crop=640:480:{x}:{y},fps=30"
        return chain + (",hflip" if self.mirror else "")


def _duration(path: Path) -> float:
    out = subprocess.run(
        [ffmpeg_exe().replace("ffmpeg", "ffprobe"), "-v", "error", "-show_entries", "format=duration",
         "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True,
    )  # fmt: skip
    return float(out.stdout.strip() or 0.0)


def plan_segments(source_dir: Path, count: int, seconds: float) -> list[Segment]:
    """`count` distinct segments, round-robin over the sources so every prefix is varied."""
    sources = sorted(source_dir.glob("*.mp4"))
    if not sources:
        raise SystemExit(f"no .mp4 in {source_dir}")
    windows = {s: int(_duration(s) // seconds) for s in sources}
    variants = [(side, mirror) for mirror in (False, True) for side in ("left", "right")]
    out: list[Segment] = []
    for side, mirror in variants:
        for index in range(max(windows.values())):
            for source in sources:
                if index < windows[source]:
                    out.append(Segment(source, index * seconds, seconds, side, mirror))
                    if len(out) == count:
                        return out
    raise SystemExit(f"{source_dir} holds only {len(out)} distinct {seconds:g} s segments; ask for fewer")


def derive(segments: list[Segment], cache: Path = CACHE) -> list[str]:
    """Encode the segments that are not cached yet (H.264, 640x480, 30 fps); their paths, in order."""
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for seg in segments:
        path = cache / seg.name()
        if not path.exists():
            tmp = path.with_suffix(".part.mp4")
            subprocess.run(
                [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-ss", f"{seg.offset:g}",
                 "-t", f"{seg.seconds:g}", "-i", str(seg.source), "-vf", seg.filter(), "-an",
                 "-c:v", "libx264", "-preset", "veryfast", "-crf", "23", "-pix_fmt", "yuv420p", str(tmp)],
                check=True,
            )  # fmt: skip
            tmp.rename(path)
        paths.append(str(path))
    return paths


def _config(root: Path, srcs: list[str], engine: str, cores: int) -> PipelineConfig:
    stages = [s for s in STAGES if engine != "spark" or s["name"] in SPARK_STAGES]
    return PipelineConfig(
        catalog=str(root), sources=srcs, stages=stages, engine=engine, progress=False,
        ray={"num_cpus": cores}, spark={"master": f"local[{cores}]"},
    )  # fmt: skip


class CpuClock:
    """CPU seconds (user + system) a run costs: this process, the children it reaps (ffprobe, the
    raylet), and every deeper descendant (Ray workers, Spark's Python workers), sampled every
    `every` seconds because their parents reap them without passing their usage on. Load from other
    users of the machine does not inflate it, as it does wall time; a worker that exits between two
    samples loses at most `every` seconds."""

    def __init__(self, every: float = 0.5):
        self.every, self.seen, self.base = every, {}, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def _own() -> float:
        own, reaped = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime

    def _poll(self) -> dict[int, float]:
        import psutil

        me, out = os.getpid(), {}
        for proc in psutil.Process(me).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                out[proc.pid] = (times.user + times.system, proc.ppid() == me)
        return out

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            self.seen.update(self._poll())

    def __enter__(self) -> CpuClock:
        self.start_own, self.base = self._own(), self._poll()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.seen.update(self._poll())
        live = self._poll()
        before = {pid: t for pid, (t, _) in self.base.items()}
        deeper = sum(t - before.get(pid, 0.0) for pid, (t, direct) in self.seen.items() if not direct)
        direct_live = sum(t - before.get(pid, 0.0) for pid, (t, direct) in live.items() if direct)
        self.seconds = self._own() - self.start_own + direct_live + deeper


def measure(root: Path, srcs: list[str], engine: str, cores: int) -> dict:
    """One run of the CPU stages on `engine`: per-stage wall and process seconds, overall wall and CPU."""
    with CpuClock() as clock:
        start = time.perf_counter()
        summaries = run_pipeline(_config(root, srcs, engine, cores))
        wall = time.perf_counter() - start
    cpu = clock.seconds
    durations = Catalog(root).read("videos", columns=["duration_s"]).column(0).to_numpy()
    stages = {}
    for s in summaries:  # a fused pass reports each member with the pass's wall time: merge them
        if stages and s.engine.endswith("(fused)") and next(reversed(stages.values()))["fused"]:
            last_name = next(reversed(stages))
            merged = stages.pop(last_name)
            merged["process_s"] += s.worker_seconds
            merged["rows_out"] += s.rows_out
            stages[f"{last_name}+{s.stage}"] = merged
            continue
        stages[s.stage] = {"wall_s": s.seconds, "process_s": s.worker_seconds, "rows_in": s.rows_in,
                           "rows_out": s.rows_out, "fused": s.engine.endswith("(fused)")}  # fmt: skip
    return {"wall_s": wall, "cpu_s": cpu, "video_s": float(np.sum(durations)), "videos": len(srcs),
            "stages": stages}  # fmt: skip


def slots(engine: str, cores: int) -> int:
    """Cores an engine runs stage work on: the local loop is one process, Ray and Spark get `cores`."""
    return 1 if engine == "local" else cores


def overhead(wall_s: float, process_s: float, workers: int) -> float:
    """Share of the workers' wall time not spent inside ``process`` (0 = all of it was the stage's work)."""
    budget = wall_s * workers
    return min(1.0, max(0.0, 1.0 - process_s / budget)) if budget > 0 else 1.0


def exponent(sizes: list[float], costs: list[float]) -> float:
    """Slope of log(cost) over log(size): 1 is linear, above 1 grows faster than the data."""
    if len(sizes) < 2 or min(costs) <= 0:
        return float("nan")
    return float(np.polyfit(np.log(sizes), np.log(costs), 1)[0])


def scale_lines(engine: str, cores: int, scale: int, run: dict) -> Iterator[dict]:
    """JSON lines of one run: one per stage, then the overall one (with the load average)."""
    workers = slots(engine, cores)
    hours = run["video_s"] / 3600
    for name, st in run["stages"].items():
        core_h = st["wall_s"] * workers / 3600
        yield {"bench": "throughput", "engine": engine, "scale": scale, "stage": name,
               "videos": run["videos"], "video_s": round(run["video_s"], 1), "cores": workers,
               "wall_s": round(st["wall_s"], 2), "process_s": round(st["process_s"], 4),
               "rows_in": st["rows_in"], "rows_out": st["rows_out"],
               "video_h_per_core_h": round(hours / core_h, 2) if core_h else None,
               "overhead": round(overhead(st["wall_s"], st["process_s"], workers), 3)}  # fmt: skip
    process = sum(st["process_s"] for st in run["stages"].values())
    core_h = run["wall_s"] * workers / 3600
    yield {"bench": "throughput", "engine": engine, "scale": scale, "stage": "overall",
           "videos": run["videos"], "video_s": round(run["video_s"], 1), "cores": workers,
           "wall_s": round(run["wall_s"], 2), "process_s": round(process, 2),
           "video_h_per_core_h": round(hours / core_h, 2), "load_avg_1m": round(os.getloadavg()[0], 2),
           "cpu_s": round(run["cpu_s"], 2), "video_h_per_cpu_h": round(run["video_s"] / run["cpu_s"], 2),
           "overhead": round(overhead(run["wall_s"], process, workers), 3),
           **_against_decode(run)}  # fmt: skip


def _against_decode(run: dict) -> dict:
    """The run's CPU time as a multiple of a plain decode of its inputs, when that was measured."""
    if not run.get("decode_cpu_s"):
        return {}
    return {
        "decode_cpu_s": round(run["decode_cpu_s"], 3),
        "x_decode": round(run["cpu_s"] / run["decode_cpu_s"], 2),
    }


def scaling_lines(engine: str, runs: dict[int, dict]) -> Iterator[dict]:
    """JSON lines: the exponent of wall time vs video seconds, per stage and overall."""
    scales = list(runs)
    sizes = [runs[s]["video_s"] for s in scales]
    names = list(runs[scales[0]]["stages"]) if scales else []
    for name in [*names, "overall"]:
        costs = [
            runs[s]["wall_s"] if name == "overall" else runs[s]["stages"].get(name, {}).get("wall_s", 0.0)
            for s in scales
        ]
        line = {"bench": "throughput_scaling", "engine": engine, "stage": name, "scales": scales,
                "wall_s": [round(c, 2) for c in costs], "exponent": _rounded(exponent(sizes, costs))}
        if name == "overall":  # CPU time: the same fit, free of the machine's other load
            cpu = [runs[s]["cpu_s"] for s in scales]
            line.update(cpu_s=[round(c, 2) for c in cpu], cpu_exponent=_rounded(exponent(sizes, cpu)))
        yield line


def _rounded(value: float) -> float | None:
    return None if np.isnan(value) else round(value, 3)


def _emit(line: dict) -> None:
    print(json.dumps(line), flush=True)


def run_all(
    work: Path, srcs: list[str], base: int, scales: list[int], engines: list[str], cores: int,
    decode_cpu_s: dict[str, float] | None = None,
) -> None:  # fmt: skip
    """Each scale on every engine (fresh catalogs), smallest first, a line as each run ends; the fitted
    exponents last, over the scales that finished (also when the run is interrupted). With
    `decode_cpu_s` (a plain decode's CPU seconds per input), each run's CPU time is also given as a
    multiple of that of its inputs (`x_decode`)."""
    measure(work / "warmup", srcs[:base], "local", cores)  # imports, models, page cache: untimed
    runs: dict[str, dict[int, dict]] = {engine: {} for engine in engines}
    try:
        for scale in scales:
            for engine in engines:
                run = measure(work / f"{engine}-{scale}x", srcs[: base * scale], engine, cores)
                if decode_cpu_s is not None:
                    run["decode_cpu_s"] = sum(decode_cpu_s[p] for p in srcs[: base * scale])
                runs[engine][scale] = run
                for line in scale_lines(engine, cores, scale, run):
                    _emit(line)
    finally:
        for engine in engines:
            for line in scaling_lines(engine, runs[engine]):
                _emit(line)
