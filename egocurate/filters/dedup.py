"""Near-duplicate groups over clip embeddings, at corpus scale, in bounded memory.

Where dedup lives: this module is the algorithm (search, overlap test, representative rule, the
``clip_dedup`` rows); ``filters.dedup_stage`` is the stage (its settings and how the steps combine,
for a batch or the whole corpus); ``jobs.corpus.dedup`` only feeds it from the catalog and commits.

Two clips are near-duplicates when the cosine similarity of their (L2-normalised) embeddings is at
least ``1 - eps``; groups are the connected components of that graph, plus pairs of clips cut from
the same source video whose frame ranges overlap (an exact test that needs no embedding). Each
group keeps one representative: by default the longest clip, then the best quality score.

Search strategy (:func:`find_groups`):

- ``n <= exact_max``: exact all-pairs search with a FAISS ``IndexFlatIP`` (range search).
- above: SemDeDup-style. Spherical k-means (``faiss.Kmeans``) on a sample gives ``k = n /
  cluster_size`` clusters, trained as a tree (``branching`` children per node, ``ceil(log_b k)``
  levels, each node's children its own k-means) and searched with a beam of ``probe`` nodes per
  level, so assigning a vector costs ``~b (1 + probe (levels - 1))`` products instead of ``k``: about
  flat in n (a two-level tree, ``branching=0``, costs ``~5 sqrt(k)``: 4x more at 16M rows than at
  1M). The sample is ``train_per_cluster`` rows per cluster, capped at ``train_max``. Every vector
  joins its nearest cluster as a *primary* member and, as a *secondary* member, up to
  ``max_assign - 1`` more clusters whose centroid similarity is within ``margin`` of its best.
  Inside each cluster, primaries are compared exactly (one matrix product) with all members.
  Why the margin works: if ``|x - y| <= r`` then ``|<x,c> - <y,c>| <= r`` for any unit centroid
  ``c``, so with ``margin = 2 r`` (``r = sqrt(2 eps)``; ``margin=None``), unbounded ``max_assign``
  and exact assignment every pair is found in the primary cluster of one of its ends. The default
  ``margin = 0.05`` costs ~1.08 memberships per row. The assignment is approximate (a beam), and
  the beam width sets the recall: on ``benchmarks/dedup_scale.py``'s 1M x 512 rows, exact search
  over sampled scenes finds 0.991 of the pairs with ``probe = 12``, 0.981 with 8, and 0.955 with
  the former two-level ``probe = 4`` (which found >= 0.99 only up to ~250k rows).
- ``center=True`` subtracts the corpus mean before normalising (cosine of centred vectors). It
  spreads out the compressed similarities of anisotropic embeddings, such as a random-init model's;
  eps then refers to the centred cosine.

Memory stays bounded: vectors stream from the source in chunks and are spilled to local files as
float16 (once in source order, once bucketed by cluster); the search loads one block of clusters
(~``group_rows`` memberships) at a time. Only the clip ids, a few numbers per clip, the compacted
edges and the (capped) k-means sample stay in memory (``benchmarks/dedup_scale.py`` measures the
peak: under 0.8 GB at 1M x 512). Each block is a self-contained :class:`ClusterBlock`
searched by the pure :func:`search_block`; a ``block_map`` runs the blocks here or, for a run on
the Ray engine, as Ray tasks (``jobs.corpus.dedup``), and the results are applied in block order,
so both give the same groups. With a GPU build of FAISS (the `gpu` extra), k-means trains on the
GPUs; the search itself is BLAS on the CPU.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from egocurate.catalog import tables

PairSink = Callable[[np.ndarray, np.ndarray, np.ndarray], None]


class VectorSource(Protocol):
    """Embeddings that can be streamed more than once, always in the same order."""

    num_rows: int
    dim: int

    def chunks(self) -> Iterator[tuple[pa.Array, np.ndarray]]:
        """Yield (clip ids, vectors (rows, dim)) chunks; vectors are L2-normalised float16/32."""
        ...


@dataclass
class ArraySource:
    """An in-memory VectorSource (tests, small batches, benchmarks)."""

    ids: pa.Array
    vectors: np.ndarray
    chunk_rows: int = 65536

    @property
    def num_rows(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1]) if self.vectors.ndim == 2 else 0

    def chunks(self) -> Iterator[tuple[pa.Array, np.ndarray]]:
        for offset in range(0, self.num_rows, self.chunk_rows):
            yield self.ids[offset : offset + self.chunk_rows], self.vectors[offset : offset + self.chunk_rows]


@dataclass(frozen=True)
class DedupSettings:
    """Search parameters (the dedup stage's config; see the module docstring)."""

    eps: float = 0.05
    exact_max: int = 10_000
    clusters: int | None = None
    sample_size: int = 16_384
    kmeans_iters: int = 10
    cluster_size: int = 256
    probe: int = 12
    margin: float | None = 0.05
    max_assign: int = 2
    chunk_rows: int = 32_768
    group_rows: int = 65_536
    train_per_cluster: int = 32
    train_max: int = 262_144
    branching: int = 32
    use_gpu: bool | None = None
    seed: int = 0
    center: bool = False

    @property
    def threshold(self) -> float:
        return 1.0 - self.eps

    def margin_for(self) -> float:
        """Secondary-assignment margin: given, or (None) the guaranteed 2 * sqrt(2 eps)."""
        return self.margin if self.margin is not None else 2.0 * math.sqrt(2.0 * self.eps)

    def clusters_for(self, n: int) -> int:
        """k: `cluster_size` rows per cluster on average (the search costs n * cluster_size products;
        the tree assignment about ``branching * (1 + probe * (levels - 1))`` per row)."""
        if self.clusters:
            return max(1, min(self.clusters, n))
        return int(max(1, round(n / self.cluster_size)))


@dataclass
class Groups:
    """What the search found: per row, its component, nearest neighbour and the method used."""

    ids: pa.Array
    labels: np.ndarray  # component id per row (int64)
    nearest_similarity: np.ndarray  # float32, NaN when the search saw no other candidate
    nearest_index: np.ndarray  # int64, -1 when none
    method: str
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def num_rows(self) -> int:
        return len(self.ids)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _record(stats: dict, phase: str, started: tuple[float, float]) -> None:
    """Wall and process-CPU seconds of a phase (the CPU time is what a shared machine cannot inflate)."""
    wall, cpu = stats["seconds"], stats.setdefault("cpu_seconds", {})
    wall[phase] = wall.get(phase, 0.0) + time.perf_counter() - started[0]  # a phase may run more than once
    cpu[phase] = cpu.get(phase, 0.0) + time.process_time() - started[1]


def _use_gpu(settings: DedupSettings) -> bool:
    if settings.use_gpu is not None:
        return settings.use_gpu
    import faiss

    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _flat_index(vectors: np.ndarray) -> Any:
    """An exact inner-product index on the CPU (FAISS GPU indexes have no range search)."""
    import faiss

    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    return index


# ---------------------------------------------------------------------------------------------- spill
class _Spill:
    """Float16 rows appended to a local file and read back by row range, without memory mapping
    (mapped pages would count toward the process's resident memory)."""

    def __init__(self, path: Path, dim: int):
        self.path, self.dim, self.rows = path, dim, 0
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in finish()

    def append(self, vectors: np.ndarray) -> None:
        self._fh.write(np.ascontiguousarray(vectors, dtype=np.float16).tobytes())
        self.rows += len(vectors)

    def finish(self) -> None:
        self._fh.close()

    def read(self, start: int, stop: int) -> np.ndarray:
        count = max(0, stop - start) * self.dim
        with open(self.path, "rb") as fh:
            fh.seek(start * self.dim * 2)
            data = np.fromfile(fh, dtype=np.float16, count=count)
        return data.reshape(-1, self.dim)

    def chunks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        with open(self.path, "rb") as fh:
            for start in range(0, self.rows, rows):
                count = min(rows, self.rows - start) * self.dim
                yield start, np.fromfile(fh, dtype=np.float16, count=count).reshape(-1, self.dim)


def normalise(vectors: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """Unit-length float32 rows, after subtracting `mean` (the corpus mean) when centring."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if mean is not None:
        vectors = vectors - mean
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


# ---------------------------------------------------------------------------------------------- search
class _Graph:
    """Duplicate edges (compacted per cluster) and nearest-neighbour bookkeeping."""

    def __init__(self, n: int, threshold: float, pair_sink: PairSink | None):
        self.n, self.threshold, self.pair_sink = n, threshold, pair_sink
        self.edges_a: list[np.ndarray] = []
        self.edges_b: list[np.ndarray] = []
        self.nn_sim = np.full(n, -np.inf, dtype=np.float32)
        self.nn_idx = np.full(n, -1, dtype=np.int64)
        self.pairs = 0

    def add_pairs(self, a: np.ndarray, b: np.ndarray, sims: np.ndarray) -> None:
        if not len(a):
            return
        self.pairs += len(a)
        if self.pair_sink is not None:
            self.pair_sink(a, b, sims)
        self.edges_a.append(a.astype(np.int64))
        self.edges_b.append(b.astype(np.int64))

    def apply(self, result: BlockResult) -> None:
        """Take in what the exact search of a block of clusters found."""
        self.pairs += result.pairs
        if self.pair_sink is not None and result.pair_a is not None and len(result.pair_a):
            self.pair_sink(result.pair_a, result.pair_b, result.pair_sims)
        if len(result.edges_a):
            self.edges_a.append(result.edges_a)
            self.edges_b.append(result.edges_b)
        self.update_nearest(result.nn_rows, result.nn_sims, result.nn_idx)

    def update_nearest(self, rows: np.ndarray, sims: np.ndarray, other: np.ndarray) -> None:
        better = sims > self.nn_sim[rows]
        self.nn_sim[rows[better]] = sims[better]
        self.nn_idx[rows[better]] = other[better]

    def components(self) -> np.ndarray:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        if not self.edges_a:
            return np.arange(self.n, dtype=np.int64)
        a, b = np.concatenate(self.edges_a), np.concatenate(self.edges_b)
        graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(self.n, self.n))
        _, labels = connected_components(graph, directed=False)
        return labels.astype(np.int64)


def _compact(a: np.ndarray, b: np.ndarray, members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace many edges among few rows by a spanning star per local component (same components)."""
    if len(a) <= len(members):
        return a, b
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    by_row = np.argsort(members)
    la = by_row[np.searchsorted(members[by_row], a)]
    lb = by_row[np.searchsorted(members[by_row], b)]
    graph = coo_matrix((np.ones(len(la), dtype=np.int8), (la, lb)), shape=(len(members), len(members)))
    _, labels = connected_components(graph, directed=False)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    first = np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]
    root = order[first][np.cumsum(first) - 1]
    keep = root != order
    return members[root[keep]], members[order[keep]]


@dataclass
class BlockResult:
    """What the exact search of some clusters found (global row indices): compacted edges (same
    components as all the pairs), the pairs themselves when asked for, and each row's nearest."""

    edges_a: np.ndarray
    edges_b: np.ndarray
    nn_rows: np.ndarray
    nn_sims: np.ndarray
    nn_idx: np.ndarray
    pairs: int
    pair_a: np.ndarray | None = None
    pair_b: np.ndarray | None = None
    pair_sims: np.ndarray | None = None


@dataclass
class ClusterBlock:
    """Consecutive clusters to search exactly: their memberships' vectors (float16, as spilled) grouped
    by cluster with primaries first, the global row of each membership, and per cluster its bounds
    in those arrays and its number of primaries. Self-contained, so it can run in another process."""

    vectors: np.ndarray
    members: np.ndarray
    bounds: np.ndarray
    primaries: np.ndarray
    threshold: float
    mean: np.ndarray | None
    keep_pairs: bool


BlockMap = Callable[[Callable[[ClusterBlock], BlockResult], Iterable[ClusterBlock]], Iterable[BlockResult]]


def _search_cluster(
    primaries: np.ndarray, members: np.ndarray, vectors: np.ndarray, num_primary: int, threshold: float
) -> tuple[list, list, list, list, list, list]:
    """Exact search of one cluster: its primaries against all its members (primaries come first).

    Returns lists of edge ends and sims, and of nearest-neighbour updates (rows, sims, other rows)."""
    col_block, row_block = 16_384, 2_048
    edges_a, edges_b, edge_sims = [], [], []
    nn_rows, nn_sims, nn_idx = [], [], []
    member_best = np.full(len(members), -np.inf, dtype=np.float32)
    member_arg = np.full(len(members), -1, dtype=np.int64)
    for r0 in range(0, num_primary, row_block):
        rows = vectors[r0 : min(num_primary, r0 + row_block)]
        row_best = np.full(len(rows), -np.inf, dtype=np.float32)
        row_arg = np.full(len(rows), -1, dtype=np.int64)
        for c0 in range(0, len(members), col_block):
            sims = rows @ vectors[c0 : c0 + col_block].T
            # No self-pairs: row r0 + t is column r0 + t - c0 of this block.
            diagonal = np.arange(max(r0, c0), min(r0 + len(rows), c0 + sims.shape[1]))
            sims[diagonal - r0, diagonal - c0] = -np.inf
            best = sims.argmax(axis=1)
            best_sim = sims[np.arange(len(rows)), best]
            better = best_sim > row_best
            row_best[better], row_arg[better] = best_sim[better], best[better] + c0
            # Secondary members' nearest primary (primaries get theirs from the row maxima).
            first_secondary = max(c0, num_primary) - c0
            if first_secondary < sims.shape[1]:
                secondary = sims[:, first_secondary:]
                col_best = secondary.argmax(axis=0)
                col_best_sim = secondary[col_best, np.arange(secondary.shape[1])]
                seg = slice(c0 + first_secondary, c0 + sims.shape[1])
                better = col_best_sim > member_best[seg]
                member_best[seg][better] = col_best_sim[better]
                member_arg[seg][better] = col_best[better] + r0
            i, j = np.nonzero(sims >= threshold)
            once = (j + c0 >= num_primary) | (j + c0 > i + r0)  # primary-primary pairs only as i < j
            i, j = i[once], j[once]
            if len(i):
                edges_a.append(primaries[i + r0])
                edges_b.append(members[j + c0])
                edge_sims.append(sims[i, j])
        valid = row_arg >= 0
        nn_rows.append(primaries[r0 : r0 + len(rows)][valid])
        nn_sims.append(row_best[valid])
        nn_idx.append(members[row_arg[valid]])
    valid = member_arg >= 0
    nn_rows.append(members[valid])
    nn_sims.append(member_best[valid])
    nn_idx.append(members[member_arg[valid]])
    return edges_a, edges_b, edge_sims, nn_rows, nn_sims, nn_idx


def search_block(block: ClusterBlock) -> BlockResult:
    """Exact search inside each cluster of `block` (pure: the unit a local or Ray run maps over)."""
    vectors = normalise(block.vectors, block.mean)
    edges_a, edges_b, nn_rows, nn_sims, nn_idx = [], [], [], [], []
    pair_a, pair_b, pair_sims = [], [], []
    pairs = 0
    for c in range(len(block.bounds) - 1):
        lo, hi = int(block.bounds[c]), int(block.bounds[c + 1])
        num_primary = int(block.primaries[c])
        if hi - lo < 2 or not num_primary:
            continue
        members = block.members[lo:hi]
        found = _search_cluster(members[:num_primary], members, vectors[lo:hi], num_primary, block.threshold)
        nn_rows += found[3]
        nn_sims += found[4]
        nn_idx += found[5]
        if found[0]:
            a, b, s = np.concatenate(found[0]), np.concatenate(found[1]), np.concatenate(found[2])
            pairs += len(a)
            if block.keep_pairs:
                pair_a.append(a), pair_b.append(b), pair_sims.append(s)
            a, b = _compact(a, b, members)
            edges_a.append(a), edges_b.append(b)
    rows, sims, other = _cat(nn_rows, np.int64), _cat(nn_sims, np.float32), _cat(nn_idx, np.int64)
    # One nearest per row (a row can be a member of two clusters here): the best, then smallest index.
    order = np.lexsort((other, -sims, rows))
    first = np.r_[True, rows[order][1:] != rows[order][:-1]] if len(order) else np.zeros(0, bool)
    best = order[first]
    return BlockResult(
        _cat(edges_a, np.int64), _cat(edges_b, np.int64), rows[best], sims[best], other[best], pairs,
        *((_cat(pair_a, np.int64), _cat(pair_b, np.int64), _cat(pair_sims, np.float32))
          if block.keep_pairs else (None, None, None)),
    )  # fmt: skip


def _cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)


def local_map(
    fn: Callable[[ClusterBlock], BlockResult], blocks: Iterable[ClusterBlock]
) -> Iterable[BlockResult]:
    """The default BlockMap: one block after the other in this process."""
    return map(fn, blocks)


def _exact(spill: _Spill, settings: DedupSettings, graph: _Graph, mean: np.ndarray | None) -> None:
    """All pairs at or above the threshold with a flat inner-product index (small corpora)."""
    vectors = normalise(spill.read(0, spill.rows), mean)
    if len(vectors) < 2:
        return
    index = _flat_index(vectors)
    for start in range(0, len(vectors), settings.chunk_rows):
        query = vectors[start : start + settings.chunk_rows]
        rows = np.arange(start, start + len(query))
        lims, sims, found = index.range_search(query, float(np.nextafter(np.float32(graph.threshold), -1)))
        owner = np.repeat(rows, np.diff(lims.astype(np.int64)))
        keep = owner < found
        graph.add_pairs(owner[keep], found[keep], sims[keep])
        near_sims, near = index.search(query, 2)
        first_is_self = near[:, 0] == rows
        nn = np.where(first_is_self, near[:, 1], near[:, 0])
        nn_sim = np.where(first_is_self, near_sims[:, 1], near_sims[:, 0]).astype(np.float32)
        ok = nn >= 0
        graph.update_nearest(rows[ok], nn_sim[ok], nn[ok])


def _kmeans(
    points: np.ndarray, k: int, settings: DedupSettings, gpu: bool, per_centroid: int = 0
) -> np.ndarray:
    """Spherical k-means centroids (unit rows) of `points`; k is capped by the number of points.

    FAISS trains on at most `per_centroid` points per centroid (0: all of them)."""
    import faiss

    k = max(1, min(k, len(points)))
    if k == 1:
        return normalise(points.mean(axis=0, keepdims=True))
    most = per_centroid or max(256, len(points) // k + 1)
    kmeans = faiss.Kmeans(
        points.shape[1], k, niter=settings.kmeans_iters, spherical=True, seed=settings.seed, gpu=gpu,
        verbose=False, max_points_per_centroid=most, min_points_per_centroid=1,
    )  # fmt: skip
    kmeans.train(np.ascontiguousarray(points, dtype=np.float32))
    return normalise(kmeans.centroids)


def _argmax_rows(vectors: np.ndarray, centroids: np.ndarray, rows: int = 65_536) -> np.ndarray:
    """Index of each vector's most similar centroid, a block of rows at a time (bounded memory)."""
    return np.concatenate(
        [(vectors[s : s + rows] @ centroids.T).argmax(axis=1) for s in range(0, len(vectors), rows)]
    ) if len(vectors) else np.zeros(0, np.int64)  # fmt: skip


class _Quantizer:
    """Hierarchical spherical k-means: a tree whose leaves are the clusters.

    ``levels[0]`` holds the root's children; node ``i`` of level ``l`` owns the centroids
    ``levels[l + 1][bounds[l][i] : bounds[l][i + 1]]``. Assigning a vector is a beam search that keeps
    the `probe` best nodes per level: with branching ``b = k ** (1 / depth)`` it costs about
    ``b * (1 + probe * (depth - 1))`` products instead of ``k``, and the depth grows with ``log k``, so
    the cost per row stays nearly flat from 1M to 16M rows (two levels would cost ``~5 sqrt(k)``).
    """

    def __init__(self, levels: list[np.ndarray], bounds: list[np.ndarray], probe: int):
        self.levels, self.bounds = levels, bounds
        self.k = len(levels[-1])
        self.probe = max(1, probe)

    @classmethod
    def train(cls, sample: np.ndarray, k: int, settings: DedupSettings, gpu: bool) -> _Quantizer:
        k = max(1, min(k, len(sample)))
        if k == 1:
            depth = 1
        elif settings.branching < 2:  # two levels, sqrt(k) cells (the pre-scale quantizer)
            depth = 2
        else:
            depth = max(2, math.ceil(math.log(k) / math.log(settings.branching) - 1e-9))
        levels: list[list[np.ndarray]] = [[] for _ in range(depth)]

        def split(points: np.ndarray, share: int, level: int) -> None:
            """Centroids of `points` at `level` (appended in tree order), then their subtrees."""
            remaining = depth - level
            width = share if remaining == 1 else max(1, int(round(share ** (1.0 / remaining))))
            centroids = _kmeans(points, width, settings, gpu, per_centroid=0 if remaining == 1 else 256)
            levels[level].append(centroids)
            if remaining == 1:
                return
            owner = _argmax_rows(points, centroids)
            for cell in range(len(centroids)):
                inside = points[owner == cell]
                sub = max(1, int(round(share * len(inside) / len(points))))
                if len(inside) == 0:
                    inside, sub = centroids[cell : cell + 1], 1
                split(inside, sub, level + 1)

        split(sample, k, 0)
        stacked = [np.concatenate(level) for level in levels]
        bounds = []
        for level in range(depth - 1):
            sizes = [len(c) for c in levels[level + 1]]  # one centroid block per parent, in order
            bounds.append(np.cumsum([0] + sizes))
        return cls(stacked, bounds, settings.probe)

    def _expand(
        self, vectors: np.ndarray, nodes: np.ndarray, level: int, width: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """The `width` best children (similarities, ids at level + 1) of each row's `nodes`."""
        n, per = nodes.shape
        children, bounds = self.levels[level + 1], self.bounds[level]
        cand_sims = np.full((n, per * width), -np.inf, dtype=np.float32)
        cand_ids = np.full((n, per * width), -1, dtype=np.int64)
        # One product per node, with every row that has it in its beam (at whatever rank).
        rows_of = np.repeat(np.arange(n), per)
        ranks_of = np.tile(np.arange(per), n)
        flat = nodes.reshape(-1)
        valid = flat >= 0
        order = np.argsort(np.where(valid, flat, len(bounds)), kind="stable")
        order = order[valid[order]]
        starts = np.searchsorted(flat[order], np.arange(len(bounds)))
        for node in np.unique(flat[valid]).tolist():
            picked = order[starts[node] : starts[node + 1]]
            rows, ranks = rows_of[picked], ranks_of[picked]
            lo, hi = int(bounds[node]), int(bounds[node + 1])
            sims = vectors[rows] @ children[lo:hi].T
            take = min(width, sims.shape[1])
            if take < sims.shape[1]:
                best = np.argpartition(-sims, take - 1, axis=1)[:, :take]
            else:
                best = np.broadcast_to(np.arange(take), (len(rows), take))
            cols = ranks[:, None] * width + np.arange(take)[None, :]
            cand_sims[rows[:, None], cols] = np.take_along_axis(sims, best, axis=1)
            cand_ids[rows[:, None], cols] = best + lo
        keep = np.argsort(-cand_sims, axis=1)[:, :width]
        return np.take_along_axis(cand_sims, keep, axis=1), np.take_along_axis(cand_ids, keep, axis=1)

    def top(self, vectors: np.ndarray, fanout: int) -> tuple[np.ndarray, np.ndarray]:
        """The `fanout` most similar clusters of each vector (similarities and ids, best first; -1 and
        -inf pad rows whose beam holds fewer)."""
        depth = len(self.levels)
        sims = vectors @ self.levels[0].T
        width = fanout if depth == 1 else self.probe
        width = min(width, sims.shape[1])
        best = np.argsort(-sims, axis=1)[:, :width]
        sims, ids = np.take_along_axis(sims, best, axis=1), best.astype(np.int64)
        for level in range(depth - 1):
            sims, ids = self._expand(vectors, ids, level, fanout if level == depth - 2 else self.probe)
        if sims.shape[1] < fanout:
            pad = fanout - sims.shape[1]
            sims = np.pad(sims, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return sims, ids


def _sample_size(n: int, k: int, settings: DedupSettings) -> int:
    """Rows k-means trains on: `train_per_cluster` per cluster, at least `sample_size`, at most
    `train_max` (0: no cap) or all of them. The cap bounds memory and training time at any n."""
    size = max(settings.sample_size, settings.train_per_cluster * k)
    if settings.train_max:
        size = min(size, max(settings.sample_size, settings.train_max))
    return min(n, size)


def _sample(chunks: Iterable[tuple[int, np.ndarray]], n: int, size: int, seed: int) -> np.ndarray:
    """`size` rows picked at random from `chunks` ((start row, vectors)), as stored, in one array."""
    picked = np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))
    out: np.ndarray | None = None
    filled = 0
    for start, chunk in chunks:
        inside = picked[(picked >= start) & (picked < start + len(chunk))] - start
        if len(inside):
            if out is None:
                out = np.empty((size, chunk.shape[1]), np.float32)
            out[filled : filled + len(inside)] = chunk[inside]
            filled += len(inside)
    return out[:filled] if out is not None else np.zeros((0, 0), np.float32)


def _train_quantizer(
    spill: _Spill, k: int, settings: DedupSettings, gpu: bool, mean: np.ndarray | None
) -> _Quantizer:
    size = _sample_size(spill.rows, k, settings)
    sample = _sample(spill.chunks(settings.chunk_rows), spill.rows, size, settings.seed)
    return _Quantizer.train(normalise(sample, mean), k, settings, gpu)


def _clustered(
    spill: _Spill,
    settings: DedupSettings,
    graph: _Graph,
    gpu: bool,
    mean: np.ndarray | None,
    workdir: Path,
    stats: dict,
    progress: bool,
    block_map: BlockMap = local_map,
) -> None:
    """SemDeDup-style search: k-means, primary + margin assignment, exact search inside clusters.

    `block_map` runs the exact search of each block of clusters (here, or as Ray tasks); the
    results are applied in block order, so every map gives the same groups."""
    started = _clock()
    quantizer = _train_quantizer(spill, settings.clusters_for(spill.rows), settings, gpu, mean)
    k = quantizer.k
    _record(stats, "kmeans", started)
    started = _clock()
    margin, fanout = settings.margin_for(), max(1, min(settings.max_assign, k))
    bucketed = _Spill(workdir / "bucketed.f16", spill.dim)
    member_rows, member_cluster, member_primary, chunk_offsets = [], [], [], []
    bar = tqdm(total=spill.rows, desc="dedup assign", unit="row", disable=not progress)
    for start, chunk in spill.chunks(settings.chunk_rows):
        vectors = normalise(chunk, mean)
        sims, near = quantizer.top(vectors, fanout)
        take = (sims >= sims[:, :1] - margin) & (near >= 0)
        take[:, 0] = True
        rows = np.broadcast_to(np.arange(start, start + len(chunk))[:, None], take.shape)[take]
        clusters = near[take]
        primary = np.broadcast_to(np.arange(fanout)[None, :] == 0, take.shape)[take]
        order = np.lexsort((~primary, clusters))  # by cluster, primaries first
        rows, clusters, primary = rows[order], clusters[order], primary[order]
        bucketed.append(chunk[rows - start])  # as stored: normalised again when searched, like exact
        member_rows.append(rows.astype(np.int64))
        member_cluster.append(clusters.astype(np.int32))
        member_primary.append(primary)
        chunk_offsets.append(np.searchsorted(clusters, np.arange(k + 1)))
        bar.update(len(chunk))
    bar.close()
    bucketed.finish()
    _record(stats, "assign", started)
    rows_all, clusters_all = np.concatenate(member_rows), np.concatenate(member_cluster)
    primary_all = np.concatenate(member_primary)
    del member_rows, member_cluster, member_primary
    offsets_all = np.stack(chunk_offsets) + np.cumsum([0] + [int(o[-1]) for o in chunk_offsets[:-1]])[:, None]
    del chunk_offsets
    sizes = np.bincount(clusters_all, minlength=k)
    stats.update(clusters=k, memberships=int(len(rows_all)), largest_cluster=int(sizes.max()))

    def blocks() -> Iterator[ClusterBlock]:
        """Groups of consecutive clusters, about `group_rows` memberships, read chunk by chunk."""
        c0 = 0
        while c0 < k:
            c1, total = c0, 0
            while c1 < k and (c1 == c0 or total + sizes[c1] <= settings.group_rows):
                total += sizes[c1]
                c1 += 1
            spans = [(a, b) for a, b in zip(offsets_all[:, c0], offsets_all[:, c1], strict=True) if b > a]
            if spans:
                vectors = np.concatenate([bucketed.read(a, b) for a, b in spans])
                pos = np.concatenate([np.arange(a, b) for a, b in spans])
                order = np.lexsort((~primary_all[pos], clusters_all[pos]))
                vectors, pos = vectors[order], pos[order]
                cl = clusters_all[pos]
                yield ClusterBlock(
                    vectors, rows_all[pos], np.searchsorted(cl, np.arange(c0, c1 + 1)),
                    np.bincount(cl[primary_all[pos]] - c0, minlength=c1 - c0), graph.threshold, mean,
                    graph.pair_sink is not None,
                )  # fmt: skip
            bar.update(c1 - c0)
            c0 = c1

    started = _clock()
    bar = tqdm(total=k, desc="dedup search", unit="cluster", disable=not progress)
    for result in block_map(search_block, blocks()):
        graph.apply(result)
    bar.close()
    _record(stats, "search", started)


def _read_source(
    source: VectorSource, settings: DedupSettings, spill: _Spill, progress: bool
) -> tuple[list[pa.Array], np.ndarray | None]:
    """One pass over the source: its vectors to `spill`; its ids, and its mean when centring."""
    ids: list[pa.Array] = []
    total = np.zeros(source.dim, np.float64)
    bar = tqdm(total=source.num_rows, desc="dedup read", unit="row", disable=not progress)
    for chunk_ids, vectors in source.chunks():
        spill.append(vectors)
        ids.append(chunk_ids)
        if settings.center:
            total += np.asarray(vectors, np.float64).sum(axis=0)
        bar.update(len(chunk_ids))
    bar.close()
    spill.finish()
    mean = (total / max(1, spill.rows)).astype(np.float32) if settings.center else None
    return ids, mean


def find_groups(
    source: VectorSource,
    settings: DedupSettings | None = None,
    *,
    extra_ids: pa.Array | None = None,
    extra_pairs: Callable[[pa.Array], tuple[np.ndarray, np.ndarray]] | None = None,
    pair_sink: PairSink | None = None,
    workdir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    block_map: BlockMap = local_map,
) -> Groups:
    """Near-duplicate components of `source`'s embeddings (plus `extra_pairs(ids)`, e.g. overlaps).

    `extra_ids` are clips without an embedding: they follow the source's rows and join a group only
    through `extra_pairs`, which gets all ids and returns row-index pairs. `pair_sink(a, b, sims)`
    sees every embedding pair found (row indices in source order); the benchmark measures pair recall with it.
    `block_map` runs the exact search of each block of clusters (default: here, in order; the
    corpus stage passes Ray tasks when the run's engine is Ray). Temporary spill files go under
    `workdir` (default: the system temp folder).
    """
    settings = settings or DedupSettings()
    stats: dict[str, Any] = {"seconds": {}}
    gpu = _use_gpu(settings)
    tmp = Path(tempfile.mkdtemp(prefix="egocurate-dedup-", dir=workdir))
    try:
        started = _clock()
        spill = _Spill(tmp / "vectors.f16", source.dim)
        ids, mean = _read_source(source, settings, spill, progress)
        if extra_ids is not None and len(extra_ids):
            ids.append(extra_ids)
        all_ids = pa.concat_arrays([a.cast(pa.string()) for a in ids]) if ids else pa.array([], pa.string())
        _record(stats, "read", started)
        n = len(all_ids)
        graph = _Graph(n, settings.threshold, pair_sink)
        method = "exact" if n <= settings.exact_max else "kmeans"
        if spill.rows >= 2 and source.dim:
            if method == "exact":
                started = _clock()
                _exact(spill, settings, graph, mean)
                _record(stats, "search", started)
            else:
                _clustered(spill, settings, graph, gpu, mean, tmp, stats, progress, block_map=block_map)
        if "memberships" in stats:
            stats["memberships_per_row"] = round(stats["memberships"] / max(1, spill.rows), 3)
        if extra_pairs is not None:
            a, b = extra_pairs(all_ids)
            if len(a):
                graph.edges_a.append(np.asarray(a, np.int64))
                graph.edges_b.append(np.asarray(b, np.int64))
                stats["overlap_pairs"] = int(len(a))
        started = _clock()
        labels = graph.components()
        _record(stats, "components", started)
        stats.update(rows=n, pairs=graph.pairs, gpu=gpu)
        nn_sim = np.where(np.isfinite(graph.nn_sim), graph.nn_sim, np.nan).astype(np.float32)
        return Groups(all_ids, labels, nn_sim, graph.nn_idx, method, stats)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- exact overlap
def overlap_pairs(
    video_ids: pa.Array | pa.ChunkedArray | Iterable[str | None],
    starts: np.ndarray,
    ends: np.ndarray,
    min_overlap: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (i, j) of clips of the same video whose frame ranges overlap by at least `min_overlap`
    of the shorter clip (an exact duplicate test that needs no embedding)."""
    if isinstance(video_ids, pa.ChunkedArray):
        video_ids = video_ids.combine_chunks()
    videos = video_ids if isinstance(video_ids, pa.Array) else pa.array(list(video_ids), pa.string())
    videos = videos.cast(pa.string())
    starts, ends = np.asarray(starts, np.int64), np.asarray(ends, np.int64)
    if len(starts) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    video_rank = pc.rank(videos.fill_null(""), sort_keys="ascending", tiebreaker="dense").to_numpy()
    order = np.lexsort((starts, video_rank))
    v, s, e = video_rank[order], starts[order], ends[order]
    out_a, out_b = [], []
    active = np.arange(len(order) - 1)
    step = 1
    while len(active):
        j = active + step
        ok = j < len(order)
        active, j = active[ok], j[ok]
        same = (v[j] == v[active]) & (s[j] < e[active])  # sorted by start: later ones cannot overlap
        active, j = active[same], j[same]
        overlap = np.minimum(e[active], e[j]) - s[j]
        shorter = np.maximum(1, np.minimum(e[active] - s[active], e[j] - s[j]))
        hit = overlap >= min_overlap * shorter
        out_a.append(order[active[hit]])
        out_b.append(order[j[hit]])
        step += 1
    return (np.concatenate(out_a) if out_a else np.zeros(0, np.int64)), (
        np.concatenate(out_b) if out_b else np.zeros(0, np.int64)
    )


# ------------------------------------------------------------------------------------- representatives
def quality_score(quality: pa.Table | None, num_rows: int) -> np.ndarray:
    """One number per clip for choosing representatives: sharpness (log1p Laplacian variance), scaled
    down by the static share and by clipped shadows/highlights. Missing scores count as 0."""
    if quality is None or quality.num_rows == 0:
        return np.zeros(num_rows, np.float64)

    def column(name: str, default: float) -> np.ndarray:
        if name not in quality.column_names:
            return np.full(num_rows, default)
        return quality.column(name).cast(pa.float64()).fill_null(default).to_numpy()

    sharp = np.log1p(np.maximum(column("blur", 0.0), 0.0))
    moving = 1.0 - np.clip(column("static_fraction", 0.0), 0.0, 1.0)
    exposed = 1.0 - np.clip(column("dark_fraction", 0.0) + column("bright_fraction", 0.0), 0.0, 1.0)
    return sharp * (0.5 + 0.5 * moving) * exposed


def choose_representatives(
    labels: np.ndarray, ids: pa.Array, duration: np.ndarray | None = None, quality: np.ndarray | None = None
) -> np.ndarray:
    """Index of each row's group representative: the longest clip, then the best quality score,
    then the smallest clip id (so every engine and rerun picks the same one)."""
    n = len(labels)
    if n == 0:
        return np.zeros(0, np.int64)
    duration = np.nan_to_num(np.zeros(n) if duration is None else np.asarray(duration, np.float64), nan=0.0)
    quality = np.nan_to_num(np.zeros(n) if quality is None else np.asarray(quality, np.float64), nan=0.0)
    id_rank = pc.rank(ids.cast(pa.string()), sort_keys="ascending", tiebreaker="first").to_numpy()
    order = np.lexsort((id_rank, -quality, -duration, labels))
    sorted_labels = labels[order]
    first = np.r_[True, sorted_labels[1:] != sorted_labels[:-1]]
    group_rep = order[first]  # one per label, in label order of `sorted_labels`
    which = np.cumsum(first) - 1
    rep = np.empty(n, np.int64)
    rep[order] = group_rep[which]
    return rep


def dedup_rows(
    groups: Groups, representatives: np.ndarray, eps: float, start: int = 0, stop: int | None = None
) -> pa.Table:
    """`clip_dedup` rows for rows [start, stop) of `groups`."""
    stop = groups.num_rows if stop is None else min(stop, groups.num_rows)
    idx = np.arange(start, stop)
    rep = representatives[idx]
    near = groups.nearest_index[idx]
    near_ids = groups.ids.take(pa.array(np.maximum(near, 0)))
    near_ids = pc.if_else(pa.array(near >= 0), near_ids, pa.nulls(len(idx), pa.string()))
    sims = groups.nearest_similarity[idx]
    return pa.table(
        {
            "clip_id": groups.ids[start:stop],
            "group_id": groups.ids.take(pa.array(rep)),
            "is_representative": pa.array(rep == idx),
            "nearest_similarity": pa.array(sims, pa.float32(), from_pandas=True),
            "nearest_clip_id": near_ids,
            "method": pa.array([groups.method] * len(idx), pa.string()),
            "eps": pa.array(np.full(len(idx), eps, np.float32)),
        },
        schema=tables.CLIP_DEDUP.schema,
    )
