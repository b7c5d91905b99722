"""Dedup at corpus scale: 512-d embeddings with planted near-duplicates, 1M to 16M rows, on one node.

For each size, synthetic unit embeddings are written chunk by chunk to a float16 file under a temp
folder (never all in memory: 16M x 512 is 16 GB): scenes of similar clips (cosine ~0.75 inside a
scene, ~0 across) and, for a quarter of the clips, 1-4 planted near copies (cosine ~0.93-0.995 to
their original, straddling eps). A child process runs the real grouping, ``DedupStage.group`` (the
call ``jobs.corpus.dedup.run_dedup`` makes, with the same spill, k-means, assignment, search and
components), on a streamed source over that file, and reports wall and CPU time, per-phase times
and its peak RSS (VmHWM).

Quality, per size:

- ``pair_recall_exact``: exact brute force (FAISS ``IndexFlatIP`` range search) over every row of a
  random sample of scenes finds every pair at or above ``1 - eps`` among them (near-duplicates of
  different scenes cannot exist: scene centres are ~orthogonal); the recall is the share of those
  pairs that the search reported, ``group_recall_exact`` the share whose ends share a group.
- ``planted_group_recall``: the planted pairs at or above ``1 - eps`` (their exact cosine, computed
  when generated) whose ends share a group.

The reference beside it, in the same run: the same exact flat search over the first ``--subset``
rows, timed and extrapolated quadratically to the size (what deduplicating without clustering
costs), and with ``--legacy`` the pre-scale settings (k-means on 32 points per cluster, all-cluster
two-level assignment) where they can finish. The last line fits the time exponent from the smallest
to the largest size (wall and CPU; the machine may be shared, CPU time is what it cannot inflate).

    .venv/bin/python benchmarks/dedup_scale.py [--sizes 1000000 4000000 16000000] [--tiny]
        [--eps 0.05] [--sample-scenes 200] [--subset 50000] [--legacy] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa

DIM = 512
SCENE_ROWS = 200  # clips per scene on average
CHUNK = 131_072
TINY_SIZES = (10_000, 40_000)


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited across exec)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# ------------------------------------------------------------------------------------------- data
def scene_centers(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    centers = rng.normal(0, 1, (count, dim)).astype(np.float32)
    return centers / np.linalg.norm(centers, axis=1, keepdims=True)


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def normal(rng: np.random.Generator, shape: tuple[int, int], scale: float = 1.0) -> np.ndarray:
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= np.float32(scale)
    return out


def synthetic_chunk(
    index: int, rows: int, centers: np.ndarray, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, scene per row, planted group per row or -1) of one chunk, rows shuffled."""
    rng = np.random.default_rng([seed, index])
    dim = centers.shape[1]
    n_base = int(rows / 1.6)
    scenes = rng.integers(0, len(centers), n_base)
    base = unit(centers[scenes] + normal(rng, (n_base, dim), 0.6 / math.sqrt(dim)))
    copies_per = np.where(rng.random(n_base) < 0.25, rng.integers(1, 5, n_base), 0)
    source = np.repeat(np.arange(n_base), copies_per)[: rows - n_base]
    noise = rng.uniform(0.1, 0.4, (len(source), 1)) / math.sqrt(dim)
    copies = unit(base[source] + normal(rng, (len(source), dim)) * noise.astype(np.float32))
    extra = rows - n_base - len(source)
    fill_scenes = rng.integers(0, len(centers), extra)
    fill = unit(centers[fill_scenes] + normal(rng, (extra, dim), 0.6 / math.sqrt(dim)))
    vectors = np.concatenate([base, copies, fill])
    scene = np.concatenate([scenes, scenes[source], fill_scenes]).astype(np.int32)
    has_copy = np.zeros(n_base, bool)
    has_copy[source] = True
    group = np.concatenate([np.where(has_copy, np.arange(n_base), -1), source, np.full(extra, -1)])
    order = rng.permutation(rows)
    return vectors[order], scene[order], group[order]


def planted_pairs(vectors: np.ndarray, group: np.ndarray, threshold: float, offset: int) -> np.ndarray:
    """Row pairs (global indices) of one planted group each whose exact cosine is >= threshold."""
    rows = np.flatnonzero(group >= 0)
    order = rows[np.argsort(group[rows], kind="stable")]
    g = group[order]
    out = []
    for step in range(1, 5):  # groups have at most 5 members
        a, b = order[:-step], order[step:]
        same = g[:-step] == g[step:]
        a, b = a[same], b[same]
        sims = np.einsum("ij,ij->i", vectors[a], vectors[b])
        keep = sims >= threshold
        out.append(np.stack([a[keep], b[keep]], axis=1))
    pairs = np.concatenate(out) + offset
    return np.sort(pairs, axis=1)


def generate(folder: Path, rows: int, threshold: float, seed: int) -> dict:
    """Write vectors.f16 (float16 rows), scene.npy and planted.npy (pairs) for `rows` rows."""
    started = time.perf_counter()
    centers = scene_centers(max(8, rows // SCENE_ROWS), DIM, seed)
    scenes, planted = [], []
    with open(folder / "vectors.f16", "wb") as fh:
        for index, start in enumerate(range(0, rows, CHUNK)):
            vectors, scene, group = synthetic_chunk(index, min(CHUNK, rows - start), centers, seed)
            group = np.where(group >= 0, group + start, -1)  # groups never span chunks
            fh.write(vectors.astype(np.float16).tobytes())
            scenes.append(scene)
            planted.append(
                planted_pairs(vectors.astype(np.float16).astype(np.float32), group, threshold, start)
            )
    np.save(folder / "scene.npy", np.concatenate(scenes))
    np.save(folder / "planted.npy", np.concatenate(planted))
    return {
        "data_seconds": round(time.perf_counter() - started, 1),
        "planted_pairs": int(sum(map(len, planted))),
    }


class Float16FileSource:
    """A VectorSource over a float16 row file, read in chunks with plain reads (no memory map:
    mapped pages would count toward the resident memory being measured)."""

    def __init__(self, path: Path, dim: int, chunk_rows: int = 65_536):
        self.path, self.dim, self.chunk_rows = path, dim, chunk_rows
        self.num_rows = path.stat().st_size // (2 * dim)

    def chunks(self) -> Iterator[tuple[pa.Array, np.ndarray]]:
        with open(self.path, "rb") as fh:
            for start in range(0, self.num_rows, self.chunk_rows):
                n = min(self.chunk_rows, self.num_rows - start)
                vectors = np.fromfile(fh, dtype=np.float16, count=n * self.dim).reshape(n, self.dim)
                ids = pa.array(np.char.add("c", np.char.zfill(np.arange(start, start + n).astype(str), 9)))
                yield ids, vectors


def read_rows(path: Path, rows: np.ndarray, dim: int) -> np.ndarray:
    """Float32 copies of the given (sorted) rows of a float16 row file."""
    out = np.empty((len(rows), dim), np.float32)
    with open(path, "rb") as fh:
        for i, row in enumerate(rows.tolist()):
            fh.seek(row * dim * 2)
            out[i] = np.fromfile(fh, dtype=np.float16, count=dim)
    return out


# ------------------------------------------------------------------------------------------- child
def child(args: argparse.Namespace) -> None:
    """Group the file's rows with the real stage; save labels and the pairs among sampled rows."""
    from egocurate.filters.dedup_stage import DedupStage

    folder = Path(args.child)
    sampled = np.zeros(Path(folder / "vectors.f16").stat().st_size // (2 * DIM), bool)
    sampled[np.load(folder / "sampled_rows.npy")] = True
    found: list[np.ndarray] = []

    def sink(a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> None:
        keep = sampled[a] & sampled[b]
        if keep.any():
            found.append(np.sort(np.stack([a[keep], b[keep]], axis=1), axis=1))

    params = json.loads(args.params)
    stage = DedupStage(eps=args.eps, workdir=str(folder / args.tag), **params)
    started, cpu = time.perf_counter(), time.process_time()
    groups, representatives = stage.group(Float16FileSource(folder / "vectors.f16", DIM), pair_sink=sink)
    seconds, cpu_s, peak = time.perf_counter() - started, time.process_time() - cpu, peak_rss_mb()
    np.save(folder / args.tag / "labels.npy", groups.labels)
    np.save(folder / args.tag / "found.npy", np.concatenate(found) if found else np.zeros((0, 2), np.int64))
    kept = int((representatives == np.arange(len(representatives))).sum())
    print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "peak_rss_mb": peak, "stats": groups.stats,
                      "representatives": kept}))  # fmt: skip


# ------------------------------------------------------------------------------------------- parent
def exact_pairs(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """All pairs (i < j) at or above `threshold`: FAISS flat inner-product range search."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    out = []
    for start in range(0, len(vectors), 16_384):
        query = vectors[start : start + 16_384]
        lims, _, found = index.range_search(query, float(np.nextafter(np.float32(threshold), -1)))
        owner = np.repeat(np.arange(start, start + len(query)), np.diff(lims.astype(np.int64)))
        keep = owner < found
        out.append(np.stack([owner[keep], found[keep]], axis=1))
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def as_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return set(map(tuple, np.sort(pairs, axis=1).tolist()))


def start_child(folder: Path, args: argparse.Namespace, params: dict, tag: str) -> subprocess.Popen:
    """A child process grouping the file's rows with `params`; it saves under folder/tag."""
    (folder / tag).mkdir()
    cmd = [sys.executable, __file__, "--child", str(folder), "--eps", str(args.eps),
           "--params", json.dumps(params), "--tag", tag]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_child(proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(err[-3000:])
    return json.loads(out.strip().splitlines()[-1])


def measure(folder: Path, rows: int, args: argparse.Namespace, runs: list[tuple[str, dict]]) -> list[dict]:
    """Run every (path, params) on the same rows, side by side (one child each), then score them."""
    threshold = 1.0 - args.eps
    procs = [
        (path, params, start_child(folder, args, params, f"run{i}")) for i, (path, params) in enumerate(runs)
    ]
    sampled = np.load(folder / "sampled_rows.npy")
    truth = as_set(sampled[exact_pairs(unit(read_rows(folder / "vectors.f16", sampled, DIM)), threshold)])
    planted = np.load(folder / "planted.npy")
    lines = []
    for i, (path, params, proc) in enumerate(procs):
        report = finish_child(proc)
        labels = np.load(folder / f"run{i}" / "labels.npy")
        found = as_set(np.load(folder / f"run{i}" / "found.npy"))
        stats = report["stats"]
        lines.append({
            "bench": "dedup_scale", "path": path, "params": params, "rows": rows, "dim": DIM, "eps": args.eps,
            "seconds": round(report["seconds"], 1), "cpu_s": round(report["cpu_s"], 1),
            "peak_rss_mb": round(report["peak_rss_mb"]),
            "phase_seconds": {k: round(v, 1) for k, v in stats["seconds"].items()},
            "phase_cpu_seconds": {k: round(v, 1) for k, v in stats.get("cpu_seconds", {}).items()},
            "clusters": stats.get("clusters"), "memberships_per_row": stats.get("memberships_per_row"),
            "largest_cluster": stats.get("largest_cluster"), "pairs": stats.get("pairs"),
            "sampled_rows": len(sampled), "exact_pairs": len(truth),
            "pair_recall_exact": round(len(truth & found) / max(1, len(truth)), 5),
            "group_recall_exact": round(sum(labels[a] == labels[b] for a, b in truth) / max(1, len(truth)),
                                        5),
            "planted_pairs": len(planted),
            "planted_group_recall": round(float((labels[planted[:, 0]] == labels[planted[:, 1]]).mean()), 5),
            "representatives": report["representatives"], "side_by_side": len(runs),
            "load_average": load_average(), "target": "peak_rss_mb <= 8192, pair_recall_exact >= 0.99",
        })  # fmt: skip
    return lines


def flat_reference(folder: Path, rows: int, subset: int, threshold: float) -> dict:
    """Exact all-pairs search on the first `subset` rows, extrapolated quadratically to `rows`."""
    subset = min(subset, rows)
    vectors = unit(read_rows(folder / "vectors.f16", np.arange(subset), DIM))
    started, cpu = time.perf_counter(), time.process_time()
    pairs = exact_pairs(vectors, threshold)
    seconds, cpu_s = time.perf_counter() - started, time.process_time() - cpu
    scale = (rows / subset) ** 2
    return {"bench": "dedup_scale_reference", "path": "exact_flat_subset", "rows": rows, "subset": subset,
            "pairs": len(pairs), "seconds": round(seconds, 2), "cpu_s": round(cpu_s, 2),
            "extrapolated_seconds": round(seconds * scale),
            "extrapolated_cpu_s": round(cpu_s * scale)}  # fmt: skip


def exponent(points: list[tuple[int, float]]) -> float | None:
    if len(points) < 2:
        return None
    x, y = np.log([p[0] for p in points]), np.log([max(p[1], 1e-9) for p in points])
    return round(float(np.polyfit(x, y, 1)[0]), 3)


# Before the scale work: k-means trained on 32 rows per cluster with no cap, and a two-level tree
# (sqrt(k) coarse cells) however many clusters.
LEGACY = {"train_max": 0, "branching": 0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 4_000_000, 16_000_000])
    parser.add_argument("--tiny", action="store_true", help=f"sizes {TINY_SIZES}, small samples (CI)")
    parser.add_argument("--eps", type=float, default=0.05)
    parser.add_argument("--sample-scenes", type=int, default=200, help="scenes searched exactly per size")
    parser.add_argument("--subset", type=int, default=50_000, help="rows of the exact flat reference")
    parser.add_argument("--legacy", action="store_true", help="also run the pre-scale settings")
    parser.add_argument(
        "--params", default="{}", help="JSON DedupStage parameters of the run, or a list: runs side by side"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None, help="where the temporary files go")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="run0", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    sizes = list(TINY_SIZES) if args.tiny else sorted(args.sizes)
    if args.tiny:
        args.sample_scenes, args.subset = 20, 5_000
    given = json.loads(args.params)
    variants = given if isinstance(given, list) else [given]
    if args.tiny:
        variants = [{"exact_max": 1_000, **v} for v in variants]
    runs = [("scaled" if i == 0 else f"variant{i}", v) for i, v in enumerate(variants)]
    if args.legacy:
        runs.append(("legacy", {**variants[0], **LEGACY}))
    timings: dict[str, list[tuple[int, float, float]]] = {}
    for rows in sizes:
        with tempfile.TemporaryDirectory(prefix="egocurate-dedup-scale-", dir=args.workdir) as tmp:
            folder = Path(tmp)
            info = generate(folder, rows, 1.0 - args.eps, args.seed)
            scene = np.load(folder / "scene.npy")
            rng = np.random.default_rng(args.seed)
            picked = rng.choice(
                int(scene.max()) + 1, size=min(args.sample_scenes, int(scene.max()) + 1), replace=False
            )
            np.save(folder / "sampled_rows.npy", np.flatnonzero(np.isin(scene, picked)))
            del scene
            emit({"bench": "dedup_scale_data", "rows": rows, "dim": DIM, **info,
                  "file_gb": round(rows * DIM * 2 / 1e9, 2)})  # fmt: skip
            for line in measure(folder, rows, args, runs):
                emit(line)
                timings.setdefault(line["path"], []).append((rows, line["seconds"], line["cpu_s"]))
            emit(flat_reference(folder, rows, args.subset, 1.0 - args.eps))
    for path, points in timings.items():
        emit({"bench": "dedup_scale_fit", "path": path, "sizes": [p[0] for p in points],
              "time_exponent_wall": exponent([(p[0], p[1]) for p in points]),
              "time_exponent_cpu": exponent([(p[0], p[2]) for p in points]), "target": "<= 1.1",
              "load_average": load_average()})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
