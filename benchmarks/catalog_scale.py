"""Catalog at the mission's scale: the real driver, commit path, ledger and rerun over synthetic rows.

Usage: python benchmarks/catalog_scale.py [--sizes 1000000,4000000,16000000] [--tiny]
       [--today-sizes 20000,80000] [--log-retention-hours H] [--out benchmarks/out/catalog_scale.jsonl]

A decode-free stage (`clip_quality`-shaped scores hashed from the clip id) runs through
`jobs.driver.run_stage` on the local engine, over clip rows shaped like `clips` (the `clips` and
`videos` tables are written beside it so `clip_view` and `catalog check` see a whole catalog).
Per size it prints JSON lines: per-commit p50/p99 early and late, against the table's version,
for the stage's table and for `_ledger`; the rerun with nothing to do (seconds, peak RSS, in a
child process); `clip_view WHERE keep` count time; `catalog check` time; optimize time; and the
fitted exponent of total driver time against rows. The reference it names is today's commit
path (every commit checks keys against the whole table, no compaction), run in the same process
at the sizes where it can finish; at larger sizes its cost is extrapolated from its fitted
exponent, and the line says so. Commit sizes follow the issue: `commit_every` 256 up to 1M rows,
4,096 above. An ingest-shaped run (`--videos`, default 1M uris; every 1000th a copy of an earlier
video that its commit must fold) times the merging commit beside today's fold-every-commit path
(`--today-videos`). `--log-retention-hours` sets the tables' Delta log retention
(``EGOCURATE_LOG_RETENTION_HOURS``): deltalake lists the whole `_delta_log` folder on every load and
commit on a local file system, so a run of thousands of commits in minutes pays for its log length
unless expired entries are cleaned at checkpoints; each line reports the retention it ran with.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egocurate.catalog import tables  # noqa: E402
from egocurate.catalog.store import Catalog  # noqa: E402
from egocurate.jobs import driver  # noqa: E402
from egocurate.jobs.runners.local import LocalEngine  # noqa: E402
from egocurate.stage_base import BaseStage, Resources  # noqa: E402

CLIPS_PER_VIDEO = 16


class HashedScores(BaseStage):
    """A stage with no decode: `clip_quality` rows whose scores are hashed from the clip id."""

    name: ClassVar[str] = "scale_scores"
    input_key: ClassVar[str] = "clip_id"
    output_table: ClassVar[str] = tables.CLIP_QUALITY.name
    reads: ClassVar[tuple[str, ...]] = ("video_id",)

    def __init__(self, batch_size: int):
        self.resources = Resources(batch_size=batch_size)

    def process(self, batch: pa.Table) -> pa.Table:
        ids = batch.column("clip_id")
        score = pc.divide(pc.cast(pc.utf8_length(ids), pa.float64()), 16.0)
        out = {"clip_id": ids, "video_id": batch.column("video_id"), "duration_s": score, "motion": score,
               "blur": score, "brightness": score}  # fmt: skip
        out.update(tables.error_columns(batch.num_rows))
        return pa.table(out)


class HashedVideos(BaseStage):
    """An ingest-shaped merging stage with no decode: `videos` rows whose id is a hash of the uri's number,
    with every 1000th uri a copy of one 500 uris earlier (an exact duplicate, committed in an
    earlier commit, that this commit must fold)."""

    name: ClassVar[str] = "scale_ingest"
    input_key: ClassVar[str] = "uri"
    output_table: ClassVar[str] = tables.VIDEOS.name
    merges_duplicates: ClassVar[bool] = True
    done_key_columns: ClassVar[tuple[str, ...]] = ("uri", "duplicate_uris")

    def __init__(self, batch_size: int):
        self.resources = Resources(batch_size=batch_size)

    @staticmethod
    def source_of(n: int) -> int:
        return n - 500 if n % 1000 == 999 else n

    def process(self, batch: pa.Table) -> pa.Table:
        uris = batch.column("uri").to_pylist()
        # u = "/<n>"; ids hashed like real content ids, so file statistics prune nothing
        ids = [
            hashlib.blake2b(str(self.source_of(int(u[1:]))).encode(), digest_size=8).hexdigest() for u in uris
        ]
        out = {"video_id": ids, "uri": uris, "duplicate_uris": [[] for _ in uris],
               "duration_s": [4.0] * len(uris), "fps": [30.0] * len(uris)}  # fmt: skip
        return tables.conform(pa.table(out), tables.VIDEOS)

    def merge_duplicates(self, existing: pa.Table, incoming: pa.Table) -> pa.Table:
        from egocurate.ingest.probe_stage import ProbeStage

        return ProbeStage.merge_duplicates(self, existing, incoming)  # ingest's own fold


def video_uris(n: int) -> pa.Table:
    return pa.table({"uri": pa.array([f"/{i}" for i in range(n)], pa.string())})


def run_videos(rows: int, commit_every: int, path: str, root: Path) -> dict:
    """One driven ingest-shaped run over `rows` uris; `today` folds every commit (keyed overwrite)."""
    catalog = Catalog(root / f"videos-{path}-{rows}")
    clock = CommitClock(catalog)
    original_bases, original_fold = driver.commit_bases, catalog.commit_or_fold
    if path == "today":  # every commit is a keyed overwrite that scans the table for its keys
        driver.commit_bases = lambda catalog, stage: {}
        os.environ["EGOCURATE_OPTIMIZE_EVERY"] = "0"
    else:
        os.environ.pop("EGOCURATE_OPTIMIZE_EVERY", None)

    def timed_fold(spec, parts, *args, **kwargs):
        start = time.perf_counter()
        version = original_fold(spec, parts, *args, **kwargs)
        clock.records.append({"table": "videos:fold", "s": time.perf_counter() - start})
        return version

    catalog.commit_or_fold = timed_fold
    folds = []
    original_upsert = catalog.upsert

    def counted_upsert(*args, **kwargs):
        folds.append(1)
        return original_upsert(*args, **kwargs)

    catalog.upsert = counted_upsert  # the keyed overwrite (the log may be cleaned, so count calls)
    try:
        start = time.perf_counter()
        summary = driver.run_stage(HashedVideos(commit_every), video_uris(rows), catalog, LocalEngine(),
                                   commit_every=commit_every, progress=False)  # fmt: skip
        driver_s = time.perf_counter() - start
    finally:
        driver.commit_bases = original_bases
    series = clock.series("videos:fold")
    out = {"bench": "catalog_scale_videos", "path": path, "rows": rows, "commit_every": commit_every,
           "commits": summary.commits, "driver_s": round(driver_s, 2), "videos": catalog.count("videos"),
           "expected_videos": rows - len(range(999, rows, 1000)),
           "fold_commits": len(folds),
           "commit_first": percentiles(series[10:60]), "commit_last": percentiles(series[-50:])}  # fmt: skip
    if out["commit_first"] and out["commit_last"]:
        out["p50_last_over_first"] = round(
            out["commit_last"]["p50_s"] / max(out["commit_first"]["p50_s"], 1e-9), 2
        )
    return out


def clip_rows(n: int, seed: int = 0) -> pa.Table:
    """`n` clip ids (random 16-hex) and their videos (CLIPS_PER_VIDEO clips each)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, 2**63, size=n, dtype=np.int64)
    clip_ids = pa.array(np.char.mod("%016x", ids).astype(object), pa.string())
    video_ids = pa.array(np.char.mod("v%015x", np.arange(n) // CLIPS_PER_VIDEO).astype(object), pa.string())
    return pa.table({"clip_id": clip_ids, "video_id": video_ids})


def write_catalog_tables(catalog: Catalog, rows: pa.Table, chunk: int = 1_000_000) -> None:
    """`clips` and `videos` for the synthetic clips, in large commits (the driver is not timed here)."""
    for start in range(0, rows.num_rows, chunk):
        part = rows.slice(start, chunk)
        clips = {
            "clip_id": part.column("clip_id"),
            "video_id": part.column("video_id"),
            "start_s": pa.array(np.zeros(part.num_rows)),
            "end_s": pa.array(np.full(part.num_rows, 4.0)),
        }
        catalog.append(tables.CLIPS, pa.table(clips), operation="bench")
    videos = pc.unique(rows.column("video_id"))
    for start in range(0, len(videos), chunk):
        part = videos.slice(start, chunk)
        catalog.append(tables.VIDEOS, pa.table({"video_id": part, "uri": part, "fps": pa.array(
            np.full(len(part), 30.0))}), operation="bench")  # fmt: skip


class CommitClock:
    """Times every commit the driver makes, with the table and the version it landed at."""

    def __init__(self, catalog: Catalog):
        self.records: list[dict] = []
        original_parts, original_unique = catalog.commit_parts, catalog.append_unique

        def commit_parts(spec, parts, *args, **kwargs):
            start = time.perf_counter()
            version = original_parts(spec, parts, *args, **kwargs)
            self.records.append({"table": spec.name, "s": time.perf_counter() - start, "version": version})
            return version

        def append_unique(spec, data, *args, **kwargs):
            start = time.perf_counter()
            version = original_unique(spec, data, *args, **kwargs)
            self.records.append({"table": spec.name + ":append", "s": time.perf_counter() - start})
            return version

        catalog.commit_parts, catalog.append_unique = commit_parts, append_unique

    def series(self, table: str) -> list[float]:
        return [r["s"] for r in self.records if r["table"] == table]


def log_entries(catalog: Catalog, name: str) -> list[str]:
    """The commit entries left in a table's log folder (what a local commit lists)."""
    folder = Path(catalog.uri(name)) / "_delta_log"
    return [p.name for p in folder.iterdir() if p.suffix == ".json"]


def percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    arr = np.asarray(values)
    return {
        "p50_s": round(float(np.percentile(arr, 50)), 5),
        "p99_s": round(float(np.percentile(arr, 99)), 5),
    }


def run_size(rows: int, commit_every: int, path: str, root: Path) -> dict:
    """One driven run of the stage over `rows` synthetic clips; returns its figures."""
    catalog = Catalog(root / f"{path}-{rows}")
    data = clip_rows(rows)
    write_catalog_tables(catalog, data)
    clock = CommitClock(catalog)
    original = driver.commit_bases
    if path == "today":  # every commit checks the whole table; no compaction
        driver.commit_bases = lambda catalog, stage: {}
        os.environ["EGOCURATE_OPTIMIZE_EVERY"] = "0"
    else:
        os.environ.pop("EGOCURATE_OPTIMIZE_EVERY", None)
    try:
        start = time.perf_counter()
        summary = driver.run_stage(HashedScores(commit_every), data, catalog, LocalEngine(),
                                   commit_every=commit_every, progress=False)  # fmt: skip
        driver_s = time.perf_counter() - start
    finally:
        driver.commit_bases = original
    out = {"bench": "catalog_scale", "path": path, "rows": rows, "commit_every": commit_every,
           "commits": summary.commits, "driver_s": round(driver_s, 2), "files_stage_table":
           len(catalog.files(tables.CLIP_QUALITY.name)), "files_ledger": len(catalog.files("_ledger")),
           "version_stage_table": catalog.version(tables.CLIP_QUALITY.name),
           "log_retention_hours": catalog.log_retention_hours,
           "log_entries_stage_table": len(log_entries(catalog, tables.CLIP_QUALITY.name)),
           "log_entries_ledger": len(log_entries(catalog, "_ledger"))}  # fmt: skip
    for table, label in ((tables.CLIP_QUALITY.name, "stage"), ("_ledger:append", "ledger")):
        series = clock.series(table)
        out[f"{label}_commit_first"] = percentiles(series[10:60])
        out[f"{label}_commit_last"] = percentiles(series[-50:])
        first, last = out[f"{label}_commit_first"], out[f"{label}_commit_last"]
        if first and last:
            out[f"{label}_p50_last_over_first"] = round(last["p50_s"] / max(first["p50_s"], 1e-9), 2)
    out["catalog"] = str(catalog.root)
    return out


RERUN_CHILD = """
import sys, time

def peak_rss_kb():  # VmHWM: this process image's peak (ru_maxrss keeps the forking parent's across exec)
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
sys.path.insert(0, {repo!r})
sys.path.insert(0, {repo!r} + "/benchmarks")
from catalog_scale import HashedScores
from egocurate.catalog.store import Catalog
from egocurate.jobs import driver
from egocurate.jobs.runners.local import LocalEngine
catalog = Catalog({root!r})
data = catalog.read("clips", columns=["clip_id", "video_id"])  # the stage's input, as a real run reads it
loaded = peak_rss_kb()
start = time.perf_counter()
s = driver.run_stage(HashedScores({every}), data, catalog, LocalEngine(), commit_every={every},
                     progress=False)
peak = peak_rss_kb()
print(round(time.perf_counter() - start, 2), s.rows_in, loaded, peak)
"""


def rerun_figures(root: str, rows: int, every: int) -> dict:
    """A rerun with nothing to do, in a child process that reads its input from `clips` as a real
    run does: seconds (without reading the input), RSS with the input read and at its peak."""
    repo = str(Path(__file__).resolve().parents[1])
    code = RERUN_CHILD.format(repo=repo, rows=rows, every=every, root=root)
    line = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, todo, loaded_kb, rss_kb = line.split()[-4:]
    return {
        "rerun_s": float(seconds),
        "rerun_rows_todo": int(todo),
        "rerun_input_rss_mb": round(int(loaded_kb) / 1024),  # the process with its input read
        "rerun_peak_rss_mb": round(int(rss_kb) / 1024),
    }


def reads(root: str) -> dict:
    from egocurate.catalog.health import check
    from egocurate.catalog.query import sql
    from egocurate.jobs.registry import stage_outputs

    catalog = Catalog(root)
    start = time.perf_counter()
    kept = sql(catalog, "SELECT count(*) AS n FROM clip_view WHERE keep").column("n")[0].as_py()
    view_s = time.perf_counter() - start
    start = time.perf_counter()
    findings = check(catalog, lambda stages: stage_outputs(sorted(stages)))
    check_s = time.perf_counter() - start
    from egocurate.jobs.corpus.stats import compute_local

    start = time.perf_counter()
    corpus = compute_local(catalog)
    stats_s = time.perf_counter() - start
    start = time.perf_counter()
    catalog.optimize(tables.CLIP_QUALITY.name)
    optimize_s = time.perf_counter() - start
    return {
        "clip_view_keep_count": kept,
        "clip_view_count_s": round(view_s, 2),
        "check_s": round(check_s, 2),
        "check_findings": [f"{f.table}: {f.kind}" for f in findings],
        "stats_s": round(stats_s, 2),  # the corpus statistics (DuckDB SQL over clip_view)
        "stats_clips": corpus.summary.get("clips"),
        "optimize_s": round(optimize_s, 2),
    }


def exponent(xs: list[int], ys: list[float]) -> float | None:
    if len(xs) < 2:
        return None
    return round(float(np.polyfit(np.log(xs), np.log(ys), 1)[0]), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000,4000000,16000000")
    parser.add_argument("--today-sizes", default="20000,80000")
    parser.add_argument("--tiny", action="store_true", help="a quick run for CI (small sizes)")
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--videos", default="1000000", help="sizes of the ingest-shaped (folding) run")
    parser.add_argument("--today-videos", default="20000", help="its sizes on today's fold-every-commit path")
    parser.add_argument("--log-retention-hours", type=float, default=None,
                        help="Delta log retention of the tables (default: Delta's 30 days)")  # fmt: skip
    args = parser.parse_args()
    if args.log_retention_hours is not None:  # the driver's, the rerun child's and the reads' catalogs
        os.environ["EGOCURATE_LOG_RETENTION_HOURS"] = str(args.log_retention_hours)
    sizes = [20_000, 80_000] if args.tiny else [int(s) for s in args.sizes.split(",") if s]
    today = [2_000, 8_000] if args.tiny else [int(s) for s in args.today_sizes.split(",") if s]
    every = (lambda n: 256) if args.tiny else (lambda n: 256 if n <= 1_000_000 else 4096)
    sink = open(args.out, "a") if args.out else None  # noqa: SIM115

    def emit(record: dict) -> None:
        line = json.dumps(record)
        print(line, flush=True)
        if sink:
            sink.write(line + "\n")
            sink.flush()

    with tempfile.TemporaryDirectory(prefix="catalog_scale_") as tmp:
        results = {}
        for path, path_sizes in (("today", today), ("base", sizes)):
            for rows in path_sizes:
                record = run_size(rows, every(rows) if path == "base" else 256, path, Path(tmp))
                if path == "base":
                    record.update(rerun_figures(record["catalog"], rows, every(rows)))
                    record.update(reads(record["catalog"]))
                record.pop("catalog")
                results[(path, rows)] = record
                emit(record)
        video_sizes = [5_000] if args.tiny else [int(s) for s in args.videos.split(",") if s]
        today_videos = [2_000] if args.tiny else [int(s) for s in args.today_videos.split(",") if s]
        for path, path_sizes in (("today", today_videos), ("base", video_sizes)):
            for rows in path_sizes:
                emit(run_videos(rows, 256, path, Path(tmp)))
        for path, path_sizes in (("today", today), ("base", sizes)):
            if not path_sizes:
                continue
            times = [results[(path, n)]["driver_s"] for n in path_sizes]
            fit = exponent(path_sizes, times)
            line = {
                "bench": "catalog_scale_fit",
                "path": path,
                "rows": path_sizes,
                "driver_s": times,
                "exponent": fit,
            }
            if path == "today" and fit is not None:  # it cannot finish at the mission's sizes: extrapolate
                line["extrapolated_driver_s"] = {
                    str(n): round(times[-1] * (n / path_sizes[-1]) ** fit)
                    for n in sorted({*sizes, 16_000_000})
                }
                line["note"] = "today's path at 256 rows a commit, extrapolated from its fitted exponent"
            emit(line)
    if sink:
        sink.close()


if __name__ == "__main__":
    main()
