"""Dedup benchmark: near-duplicate precision/recall on real clips, and corpus-scale speed and memory.

Part 1, ``near_dup``: the set from ``benchmarks/near_dup_data.py`` (real clips, the transnetv2 video
and demo-generator videos; 7 transforms per segment plus same-scene negatives) is embedded with the
embedding stage and grouped at several eps, raw and centred. Pair precision and recall are counted
over the pairs inside predicted groups. The default model is the tiny random-init config the tests
run; ``--model ViT-B-32 --pretrained laion2b_s34b_b79k`` uses a real checkpoint when it is cached
(``HF_HUB_OFFLINE=1`` is set, nothing is downloaded).

Part 2, ``scale``: synthetic clustered embeddings (1M x 512 by default, 10M with ``--big``) are
written to a Delta ``clip_embeddings`` table, then the real ``dedup`` stage driver
(``jobs.corpus.dedup.run_dedup``) runs in a child process that reports its wall time, per-phase
times and peak RSS. Pair recall is measured against exact brute force (FAISS ``IndexFlatIP`` range
search, the naive all-pairs baseline) on a subset of the rows; the baseline's time on the subset
is reported and scaled (quadratically) to the full corpus.

    .venv/bin/python benchmarks/dedup.py [--part near_dup|scale|all] [--rows 1000000] [--subset 100000]
        [--big] [--model ViT-B-32 --pretrained laion2b_s34b_b79k] [--near-dup-dir DIR]

One JSON line per measurement. The machine may be shared: per-phase times show where time goes.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))

from near_dup_data import build, default_sources, truth_pairs  # noqa: E402

from egocurate.catalog import tables  # noqa: E402
from egocurate.catalog.store import Catalog  # noqa: E402
from egocurate.filters.dedup import ArraySource, DedupSettings, find_groups  # noqa: E402
from egocurate.filters.vectors import decode_vectors, encode_vectors  # noqa: E402

TINY_EPS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01)
REAL_EPS = (0.01, 0.02, 0.03, 0.05, 0.08, 0.1)



def peak_rss_mb() -> float | None:
    """Peak resident memory of this process in MiB (Linux VmHWM; ru_maxrss elsewhere).

    VmHWM, unlike ru_maxrss, does not inherit the parent's peak across fork and exec."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


# ------------------------------------------------------------------------------------------ near-dup set
def group_pairs(ids: list[str], labels: np.ndarray) -> set[tuple[str, str]]:
    by_label: dict[int, list[str]] = {}
    for clip_id, label in zip(ids, labels.tolist(), strict=True):
        by_label.setdefault(label, []).append(clip_id)
    pairs = set()
    for members in by_label.values():
        pairs.update(tuple(sorted(p)) for p in combinations(members, 2))
    return pairs


def near_dup(args: argparse.Namespace) -> None:
    from egocurate.filters.embed import TINY_MODEL
    from egocurate.filters.embed_stage import EmbedStage

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    folder = Path(args.near_dup_dir or Path(tempfile.gettempdir()) / "egocurate-near-dups")
    started = time.perf_counter()
    rows = build(folder, default_sources(folder / "sources", args.synthetic, not args.no_real))
    emit(
        {
            "bench": "near_dup_set",
            "clips": len(rows),
            "dir": str(folder),
            "seconds": round(time.perf_counter() - started, 1),
        }
    )
    model = args.model or TINY_MODEL
    pretrained = args.pretrained if args.model else None
    stage = EmbedStage(model=model, pretrained=pretrained, num_frames=4)
    started = time.perf_counter()
    out = stage.process(pa.Table.from_pylist(rows))
    embed_s = time.perf_counter() - started
    if out.column("_error_kind").null_count != out.num_rows:
        raise RuntimeError(f"embedding failed: {out.column('_error_message').drop_null().to_pylist()[:3]}")
    vectors = decode_vectors(out.column("vector"))
    ids = [r["clip_id"] for r in rows]
    duplicates, same_scene = truth_pairs(rows)
    transform_of = {r["clip_id"]: r["transform"] for r in rows}
    emit(
        {
            "bench": "near_dup_embed",
            "model_id": stage.model_id,
            "clips": len(rows),
            "seconds": round(embed_s, 1),
            "duplicate_pairs": len(duplicates),
            "same_scene_pairs": len(same_scene),
        }
    )
    eps_list = args.eps or (REAL_EPS if args.model else TINY_EPS)
    for center in (False, True):
        for eps in eps_list:
            settings = DedupSettings(eps=eps, center=center)
            groups = find_groups(ArraySource(pa.array(ids), vectors), settings, progress=False)
            predicted = group_pairs(ids, groups.labels)
            tp = predicted & duplicates
            per_transform = Counter()
            total_transform = Counter()
            for a, b in duplicates:
                kinds = {transform_of[a], transform_of[b]}
                if "original" in kinds and len(kinds) == 2:
                    (kind,) = kinds - {"original"}
                    total_transform[kind] += 1
                    per_transform[kind] += (a, b) in predicted
            emit(
                {
                    "bench": "near_dup",
                    "model_id": stage.model_id,
                    "eps": eps,
                    "center": center,
                    "pair_precision": round(len(tp) / max(1, len(predicted)), 4),
                    "pair_recall": round(len(tp) / max(1, len(duplicates)), 4),
                    "predicted_pairs": len(predicted),
                    "same_scene_merged": len(predicted & same_scene),
                    "recall_vs_original": {
                        k: round(per_transform[k] / total_transform[k], 3) for k in sorted(total_transform)
                    },
                }
            )


# ------------------------------------------------------------------------------------------ scale
def synthetic_chunk(index: int, rows: int, dim: int, centers: np.ndarray, seed: int) -> np.ndarray:
    """Clustered unit vectors: clips around scene centres (same-scene cosine ~0.75), and 25% of the
    clips with 1-4 near copies (cosine ~0.93-0.995, straddling the usual eps), shuffled in the chunk."""
    rng = np.random.default_rng([seed, index])
    n_base = int(rows / 1.6)
    scenes = rng.integers(0, len(centers), n_base)
    base = centers[scenes] + rng.normal(0, 0.6 / np.sqrt(dim), (n_base, dim)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    copies_per = np.where(rng.random(n_base) < 0.25, rng.integers(1, 5, n_base), 0)
    source = np.repeat(np.arange(n_base), copies_per)
    noise = rng.uniform(0.1, 0.4, (len(source), 1)).astype(np.float32) / np.sqrt(dim)
    copies = base[source] + rng.normal(0, 1, (len(source), dim)).astype(np.float32) * noise
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    out = np.concatenate([base, copies])
    extra = rows - len(out)
    if extra > 0:  # top up with fresh clips so every chunk has exactly `rows`
        fill = centers[rng.integers(0, len(centers), extra)] + rng.normal(0, 0.6 / np.sqrt(dim), (extra, dim))
        out = np.concatenate([out, (fill / np.linalg.norm(fill, axis=1, keepdims=True)).astype(np.float32)])
    return out[rng.permutation(len(out))[:rows]]


def scene_centers(count: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    topics = rng.normal(0, 1, (24, dim))
    centers = rng.normal(0, 1, (count, 24)) @ topics / np.sqrt(24) + 0.7 * rng.normal(0, 1, (count, dim))
    return (centers / np.linalg.norm(centers, axis=1, keepdims=True)).astype(np.float32)


def write_corpus(root: Path, rows: int, dim: int, chunk: int, seed: int) -> Catalog:
    catalog = Catalog(root)
    centers = scene_centers(max(64, rows // 200), dim, seed)
    for index, start in enumerate(range(0, rows, chunk)):
        n = min(chunk, rows - start)
        vectors = synthetic_chunk(index, n, dim, centers, seed)
        ids = pa.array([f"c{i:09d}" for i in range(start, start + n)])
        table = pa.table(
            {
                "clip_id": ids,
                "video_id": ids,
                "model_id": pa.array(["synthetic"] * n),
                "dim": pa.array(np.full(n, dim, np.int32)),
                "vector": encode_vectors(vectors),
            }
        )
        catalog.append(tables.CLIP_EMBEDDINGS, table, operation="benchmark")
    return catalog


def child(args: argparse.Namespace) -> None:
    """Run the dedup stage driver on the catalog; report time, per-phase times, RSS, subset pairs."""
    from egocurate.jobs.corpus.dedup import DedupCorpusStage, run_dedup

    catalog = Catalog(args.child)
    overrides = {} if args.margin is None else {"margin": args.margin}
    stage = DedupCorpusStage(eps=args.scale_eps, max_assign=args.max_assign, **overrides)
    found: list[np.ndarray] = []

    def sink(a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> None:
        found.append(np.stack([a, b], axis=1).astype(np.int64))

    started = time.perf_counter()
    summary = run_dedup(catalog, stage, progress=False, pair_sink=sink)
    seconds = time.perf_counter() - started
    # VmHWM: ru_maxrss would include the parent's peak (it survives fork and exec).
    usage = resource.getrusage(resource.RUSAGE_SELF)  # before the recall bookkeeping below
    peak_mb, cpu_s = peak_rss_mb(), usage.ru_utime + usage.ru_stime
    pairs = np.concatenate(found) if found else np.zeros((0, 2), np.int64)
    dedup = catalog.read(tables.CLIP_DEDUP.name, columns=["clip_id", "group_id", "is_representative"])
    # Row order of the search is the table's scan order; map pair rows to corpus indices via ids.
    source_ids = catalog.read(tables.CLIP_EMBEDDINGS.name, columns=["clip_id"]).column(0).to_pylist()
    index = np.array([int(c[1:]) for c in source_ids], np.int64)
    pairs = index[pairs] if len(pairs) else pairs
    subset_pairs = pairs[(pairs < args.subset).all(axis=1)]
    np.save(Path(args.child) / "subset_pairs.npy", np.sort(subset_pairs, axis=1))
    groups = dedup.filter(pc.less(dedup.column("clip_id"), f"c{args.subset:09d}"))
    np.save(
        Path(args.child) / "subset_groups.npy",
        np.array(groups.sort_by("clip_id").column("group_id").to_pylist(), dtype=object),
        allow_pickle=True,
    )
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_rss_mb": peak_mb,
                "cpu_s": cpu_s,
                "rows": summary.rows_out,
                "stats": stage.last_stats,
                "representatives": int(sum(dedup.column("is_representative").to_pylist())),
            }
        )
    )


def exact_pairs(vectors: np.ndarray, threshold: float) -> tuple[np.ndarray, float]:
    """The naive baseline: all-pairs FAISS IndexFlatIP range search."""
    import faiss

    started = time.perf_counter()
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    out = []
    for start in range(0, len(vectors), 16384):
        lims, _, found = index.range_search(
            vectors[start : start + 16384], float(np.nextafter(np.float32(threshold), -1))
        )
        owner = np.repeat(
            np.arange(start, start + min(16384, len(vectors) - start)), np.diff(lims.astype(np.int64))
        )
        keep = owner < found
        out.append(np.stack([owner[keep], found[keep]], axis=1))
    return np.concatenate(out), time.perf_counter() - started


def scale(args: argparse.Namespace) -> None:
    rows = 10_000_000 if args.big else args.rows
    with tempfile.TemporaryDirectory(prefix="egocurate-dedup-bench-", dir=args.workdir) as tmp:
        root = Path(tmp) / "catalog"
        started = time.perf_counter()
        catalog = write_corpus(root, rows, args.dim, 131_072, args.seed)
        emit(
            {
                "bench": "dedup_scale_data",
                "rows": rows,
                "dim": args.dim,
                "seconds": round(time.perf_counter() - started, 1),
                "table_mb": round(
                    sum(f.stat().st_size for f in (root / "clip_embeddings").glob("*.parquet")) / 2**20, 1
                ),
            }
        )
        cmd = [
            sys.executable,
            __file__,
            "--child",
            str(root),
            "--subset",
            str(args.subset),
            "--scale-eps",
            str(args.scale_eps),
            "--max-assign",
            str(args.max_assign),
        ]
        if args.margin is not None:
            cmd += ["--margin", str(args.margin)]
        started = time.perf_counter()
        env = dict(os.environ)
        if args.threads:
            env.update(OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        stats = report["stats"]
        emit(
            {
                "bench": "dedup_scale",
                "rows": rows,
                "dim": args.dim,
                "eps": args.scale_eps,
                "seconds": round(report["seconds"], 1),
                "child_wall_s": round(wall, 1),
                "peak_rss_mb": round(report["peak_rss_mb"]),
                "phase_seconds": {k: round(v, 1) for k, v in stats["seconds"].items()},
                "phase_cpu_seconds": {k: round(v, 1) for k, v in stats.get("cpu_seconds", {}).items()},
                "process_cpu_s": round(report["cpu_s"], 1),
                "threads": args.threads or "all",
                "clusters": stats.get("clusters"),
                "memberships_per_row": stats.get("memberships_per_row"),
                "largest_cluster": stats.get("largest_cluster"),
                "pairs": stats.get("pairs"),
                "representatives": report["representatives"],
                "target": "< 300 s, < 4096 MB",
            }
        )
        subset = catalog.read(
            tables.CLIP_EMBEDDINGS.name,
            columns=["clip_id", "vector"],
            filter=pc.field("clip_id") < f"c{args.subset:09d}",
        ).sort_by("clip_id")
        vectors = decode_vectors(subset.column("vector"))
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        truth, exact_s = exact_pairs(vectors, 1.0 - args.scale_eps)
        ours = np.load(root / "subset_pairs.npy")
        groups = np.load(root / "subset_groups.npy", allow_pickle=True)
        truth_set = set(map(tuple, np.sort(truth, axis=1).tolist()))
        ours_set = set(map(tuple, ours.tolist()))
        same_group = sum(groups[a] == groups[b] for a, b in truth_set)
        emit(
            {
                "bench": "dedup_recall",
                "subset": len(vectors),
                "exact_pairs": len(truth_set),
                "found_pairs": len(ours_set),
                "pair_recall": round(len(truth_set & ours_set) / max(1, len(truth_set)), 5),
                "pair_precision": round(len(truth_set & ours_set) / max(1, len(ours_set)), 5),
                "group_recall": round(same_group / max(1, len(truth_set)), 5),
                "target_recall": 0.98,
            }
        )
        emit(
            {
                "bench": "dedup_naive_flat_range_search",
                "subset": len(vectors),
                "seconds": round(exact_s, 1),
                "extrapolated_seconds_full": round(exact_s * (rows / len(vectors)) ** 2),
                "ours_seconds_full": round(report["seconds"], 1),
                "speedup_vs_naive_extrapolated": round(
                    exact_s * (rows / len(vectors)) ** 2 / report["seconds"], 1
                ),
            }
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--part", choices=("near_dup", "scale", "all"), default="all")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--big", action="store_true", help="10M rows")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--subset", type=int, default=100_000)
    parser.add_argument("--scale-eps", type=float, default=0.05)
    parser.add_argument("--margin", type=float, default=None)
    parser.add_argument("--max-assign", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, default=0, help="BLAS/OpenMP threads of the dedup run (0: all)"
    )
    parser.add_argument("--workdir", default=None, help="where the temporary catalog and spills go")
    parser.add_argument("--near-dup-dir", default=None)
    parser.add_argument("--synthetic", type=int, default=3)
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--model", default=None, help="open_clip model (default: the tiny random-init one)")
    parser.add_argument("--pretrained", default="laion2b_s34b_b79k")
    parser.add_argument("--eps", type=float, nargs="*", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args)
        return 0
    if args.part in ("near_dup", "all"):
        near_dup(args)
    if args.part in ("scale", "all"):
        scale(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
