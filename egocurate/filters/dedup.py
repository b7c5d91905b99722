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
  cluster_size`` clusters, trained two-level (``sqrt(k)`` coarse cells, each split by its own
  k-means) so that assigning a vector costs ``~3 sqrt(k)`` products instead of ``k``. Every vector
  joins its nearest cluster as a *primary* member and, as a *secondary* member, up to
  ``max_assign - 1`` more clusters whose centroid similarity is within ``margin`` of its best.
  Inside each cluster, primaries are compared exactly (one matrix product) with all members.
  Why the margin works: if ``|x - y| <= r`` then ``|<x,c> - <y,c>| <= r`` for any unit centroid
  ``c``, so with ``margin = 2 r`` (``r = sqrt(2 eps)``; ``margin=None``), unbounded ``max_assign``
  and exact assignment every pair is found in the primary cluster of one of its ends. The default
  ``margin = 0.05`` costs ~1.05 memberships per row and still finds >= 99.8% of the pairs on the
  benchmark's clustered data (``benchmarks/dedup.py`` measures it against brute force).
- ``center=True`` subtracts the corpus mean before normalising (cosine of centred vectors). It
  spreads out the compressed similarities of anisotropic embeddings, such as a random-init model's;
  eps then refers to the centred cosine.

Memory stays bounded: vectors stream from the source in chunks and are spilled to local files as
float16 (once in source order, once bucketed by cluster); the search loads a few clusters at a time.
Only the clip ids and a few numbers per clip stay in memory. With a GPU build of FAISS (the `gpu`
extra), k-means trains on the GPUs; the search itself is BLAS on the CPU.
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
    probe: int = 4
    margin: float | None = 0.05
    max_assign: int = 2
    chunk_rows: int = 32_768
    group_rows: int = 65_536
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
        the two-level assignment costs about 3 sqrt(k) products per row)."""
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
    stats["seconds"][phase] = time.perf_counter() - started[0]
    stats.setdefault("cpu_seconds", {})[phase] = time.process_time() - started[1]


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


def _search_block(
    graph: _Graph, primaries: np.ndarray, members: np.ndarray, vectors: np.ndarray, num_primary: int
) -> None:
    """Exact search of one cluster: its primaries against all its members (primaries come first)."""
    threshold = graph.threshold
    col_block, row_block = 16_384, 2_048
    edges_a, edges_b, edge_sims = [], [], []
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
        graph.update_nearest(primaries[r0 : r0 + len(rows)][valid], row_best[valid], members[row_arg[valid]])
    valid = member_arg >= 0
    graph.update_nearest(members[valid], member_best[valid], members[member_arg[valid]])
    if edges_a:
        a, b, s = np.concatenate(edges_a), np.concatenate(edges_b), np.concatenate(edge_sims)
        if graph.pair_sink is not None:
            graph.pair_sink(a, b, s)
        graph.pairs += len(a)
        a, b = _compact(a, b, members)
        graph.edges_a.append(a.astype(np.int64))
        graph.edges_b.append(b.astype(np.int64))


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


def _kmeans(points: np.ndarray, k: int, settings: DedupSettings, gpu: bool) -> np.ndarray:
    """Spherical k-means centroids (unit rows) of `points`; k is capped by the number of points."""
    import faiss

    k = max(1, min(k, len(points)))
    if k == 1:
        return normalise(points.mean(axis=0, keepdims=True))
    kmeans = faiss.Kmeans(
        points.shape[1], k, niter=settings.kmeans_iters, spherical=True, seed=settings.seed, gpu=gpu,
        verbose=False, max_points_per_centroid=max(256, len(points) // k + 1), min_points_per_centroid=1,
    )  # fmt: skip
    kmeans.train(np.ascontiguousarray(points, dtype=np.float32))
    return normalise(kmeans.centroids)


class _Quantizer:
    """Two-level spherical k-means: `coarse` cells, each split into fine centroids (the clusters).

    Assigning a vector costs one product with the coarse centroids plus one with the fine
    centroids of its `probe` best cells, instead of one with every cluster centroid.
    """

    def __init__(self, coarse: np.ndarray, fine: list[np.ndarray], probe: int):
        self.coarse = coarse
        self.fine = fine
        self.starts = np.cumsum([0] + [len(f) for f in fine])
        self.k = int(self.starts[-1])
        self.probe = max(1, min(probe, len(coarse)))

    @classmethod
    def train(cls, sample: np.ndarray, k: int, settings: DedupSettings, gpu: bool) -> _Quantizer:
        cells = max(1, int(round(math.sqrt(k))))
        coarse = _kmeans(sample, cells, settings, gpu)
        owner = (sample @ coarse.T).argmax(axis=1)
        fine = []
        for cell in range(len(coarse)):
            points = sample[owner == cell]
            if len(points) == 0:
                fine.append(coarse[cell : cell + 1])
                continue
            share = max(1, int(round(k * len(points) / len(sample))))
            fine.append(_kmeans(points, share, settings, gpu))
        return cls(coarse, fine, settings.probe)

    def top(self, vectors: np.ndarray, fanout: int) -> tuple[np.ndarray, np.ndarray]:
        """The `fanout` most similar clusters of each vector (similarities and ids, best first)."""
        n = len(vectors)
        coarse_sims = vectors @ self.coarse.T
        if self.probe < len(self.coarse):
            probed = np.argpartition(-coarse_sims, self.probe - 1, axis=1)[:, : self.probe]
        else:
            probed = np.broadcast_to(np.arange(len(self.coarse)), (n, len(self.coarse)))
        width = self.probe * fanout
        cand_sims = np.full((n, width), -np.inf, dtype=np.float32)
        cand_ids = np.full((n, width), -1, dtype=np.int64)
        # One product per probed cell, with every row that probes it (at whatever rank).
        rows_of = np.repeat(np.arange(n), probed.shape[1])
        ranks_of = np.tile(np.arange(probed.shape[1]), n)
        cells_of = probed.reshape(-1)
        order = np.argsort(cells_of, kind="stable")
        bounds = np.searchsorted(cells_of[order], np.arange(len(self.coarse) + 1))
        for cell in range(len(self.coarse)):
            picked = order[bounds[cell] : bounds[cell + 1]]
            if not len(picked):
                continue
            rows, ranks = rows_of[picked], ranks_of[picked]
            sims = vectors[rows] @ self.fine[cell].T
            take = min(fanout, sims.shape[1])
            if take < sims.shape[1]:
                best = np.argpartition(-sims, take - 1, axis=1)[:, :take]
            else:
                best = np.broadcast_to(np.arange(take), (len(rows), take))
            cols = ranks[:, None] * fanout + np.arange(take)[None, :]
            cand_sims[rows[:, None], cols] = np.take_along_axis(sims, best, axis=1)
            cand_ids[rows[:, None], cols] = best + self.starts[cell]
        order = np.argsort(-cand_sims, axis=1)[:, :fanout]
        return np.take_along_axis(cand_sims, order, axis=1), np.take_along_axis(cand_ids, order, axis=1)


def _train_quantizer(
    spill: _Spill, k: int, settings: DedupSettings, gpu: bool, mean: np.ndarray | None
) -> _Quantizer:
    rng = np.random.default_rng(settings.seed)
    size = min(spill.rows, max(settings.sample_size, 32 * k))
    picked = np.sort(rng.choice(spill.rows, size=size, replace=False))
    sample = []
    for start, chunk in spill.chunks(settings.chunk_rows):
        inside = picked[(picked >= start) & (picked < start + len(chunk))] - start
        if len(inside):
            sample.append(normalise(chunk[inside], mean))
    return _Quantizer.train(np.concatenate(sample), k, settings, gpu)


def _clustered(
    spill: _Spill,
    settings: DedupSettings,
    graph: _Graph,
    gpu: bool,
    mean: np.ndarray | None,
    workdir: Path,
    stats: dict,
    progress: bool,
) -> None:
    """SemDeDup-style search: k-means, primary + margin assignment, exact search inside clusters."""
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
    chunk_starts = np.cumsum([0] + [int(o[-1]) for o in chunk_offsets])
    sizes = np.bincount(clusters_all, minlength=k)
    stats.update(clusters=k, memberships=int(len(rows_all)), largest_cluster=int(sizes.max()))
    stats["memberships_per_row"] = round(len(rows_all) / max(1, spill.rows), 3)

    started = _clock()
    bar = tqdm(total=k, desc="dedup search", unit="cluster", disable=not progress)
    c0 = 0
    while c0 < k:
        # A group of consecutive clusters, about `group_rows` memberships, read chunk by chunk.
        c1, total = c0, 0
        while c1 < k and (c1 == c0 or total + sizes[c1] <= settings.group_rows):
            total += sizes[c1]
            c1 += 1
        parts, positions = [], []
        for q, offsets in enumerate(chunk_offsets):
            a, b = chunk_starts[q] + offsets[c0], chunk_starts[q] + offsets[c1]
            if b > a:
                parts.append(bucketed.read(a, b))
                positions.append(np.arange(a, b))
        if parts:
            vectors = normalise(np.concatenate(parts), mean)
            pos = np.concatenate(positions)
            order = np.lexsort((~primary_all[pos], clusters_all[pos]))
            vectors, pos = vectors[order], pos[order]
            cl = clusters_all[pos]
            bounds = np.searchsorted(cl, np.arange(c0, c1 + 1))
            for c in range(c1 - c0):
                lo, hi = bounds[c], bounds[c + 1]
                if hi - lo < 2:
                    continue
                members = rows_all[pos[lo:hi]]
                num_primary = int(primary_all[pos[lo:hi]].sum())
                if num_primary:
                    _search_block(graph, members[:num_primary], members, vectors[lo:hi], num_primary)
        bar.update(c1 - c0)
        c0 = c1
    bar.close()
    _record(stats, "search", started)


def find_groups(
    source: VectorSource,
    settings: DedupSettings | None = None,
    *,
    extra_ids: pa.Array | None = None,
    extra_pairs: Callable[[pa.Array], tuple[np.ndarray, np.ndarray]] | None = None,
    pair_sink: PairSink | None = None,
    workdir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Groups:
    """Near-duplicate components of `source`'s embeddings (plus `extra_pairs(ids)`, e.g. overlaps).

    `extra_ids` are clips without an embedding: they follow the source's rows and join a group only
    through `extra_pairs`, which gets all ids and returns row-index pairs. `pair_sink(a, b, sims)`
    sees every embedding pair found (row indices in source order); the benchmark measures pair
    recall with it. Temporary spill files go under `workdir` (default: the system temp folder).
    """
    settings = settings or DedupSettings()
    stats: dict[str, Any] = {"seconds": {}}
    gpu = _use_gpu(settings)
    tmp = Path(tempfile.mkdtemp(prefix="egocurate-dedup-", dir=workdir))
    try:
        started = _clock()
        spill = _Spill(tmp / "vectors.f16", source.dim)
        ids = []
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
                _clustered(spill, settings, graph, gpu, mean, tmp, stats, progress)
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
