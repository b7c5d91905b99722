"""The ``dedup`` stage: its settings and every decision it makes, in a batch or over the corpus.

Dedup lives here and in ``filters.dedup`` (the search, the overlap test, the representative rule):
:meth:`DedupStage.group` turns embeddings, clip ranges and quality scores into groups and
representatives. Two callers feed it: :meth:`DedupStage.process` (the rows of one in-memory batch)
and the registered ``dedup`` stage, ``jobs.corpus.dedup``, a thin adapter that streams the whole
catalog's embeddings in and writes ``clip_dedup`` back in one commit (dedup needs every embedding at
once, so it cannot run batch by batch like the other stages, and only ``jobs`` may read and write
the catalog).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from egocurate.catalog import tables
from egocurate.filters.dedup import (
    ArraySource,
    BlockMap,
    DedupSettings,
    Groups,
    PairSink,
    VectorSource,
    choose_representatives,
    dedup_rows,
    find_groups,
    local_map,
    normalise,
    overlap_pairs,
    quality_score,
)
from egocurate.filters.vectors import decode_vectors
from egocurate.stage_base import BaseStage, Resources

RANGE_COLUMNS = ("clip_id", "video_id", "start_frame", "end_frame")


class DedupStage(BaseStage):
    """Near-duplicate groups (clip_dedup). Corpus-level: the pipeline runs it through
    ``jobs.corpus.dedup``; ``process`` dedups one in-memory batch (clip_id + vector columns)."""

    name = "dedup"
    input_key = "clip_id"
    output_table = tables.CLIP_DEDUP.name
    reads = ("vector",)

    def __init__(
        self,
        eps: float = 0.05,
        exact_max: int = 10_000,
        clusters: int | None = None,
        sample_size: int = 16_384,
        kmeans_iters: int = 10,
        cluster_size: int = 256,
        probe: int = 12,
        margin: float | None = 0.05,
        max_assign: int = 2,
        chunk_rows: int = 32_768,
        train_max: int = 262_144,
        branching: int = 32,
        center: bool = False,
        min_overlap: float = 0.5,
        model_id: str | None = None,
        use_gpu: bool | None = None,
        seed: int = 0,
        workdir: str | None = None,
        batch_size: int = 100_000,
        engine: str = "local",
        ray_address: str | None = None,
    ):
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
        if engine not in ("local", "ray"):
            raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
        self.settings = DedupSettings(
            eps=eps, exact_max=exact_max, clusters=clusters, sample_size=sample_size,
            kmeans_iters=kmeans_iters, cluster_size=cluster_size, probe=probe, margin=margin,
            max_assign=max_assign, chunk_rows=chunk_rows, train_max=train_max, branching=branching,
            use_gpu=use_gpu, seed=seed, center=center,
        )  # fmt: skip
        self.min_overlap, self.model_id, self.workdir = min_overlap, model_id, workdir
        # Where the corpus run (jobs.corpus.dedup) searches clusters: here, or as Ray tasks on the
        # cluster at `ray_address` (None: the Ray this process joined, else a local one).
        self.engine, self.ray_address = engine, ray_address
        self.resources = Resources(cpus=1, batch_size=batch_size)

    def setup(self) -> None:
        """Nothing to load."""

    def process(self, batch: pa.Table) -> pa.Table:
        """Dedup the rows of one batch among themselves (vector, optional duration/quality/range)."""
        ids = batch.column("clip_id").combine_chunks().cast(pa.string())
        vectors = normalise(decode_vectors(batch.column("vector")))
        groups, representatives = self.group(ArraySource(ids, vectors), clips=batch, quality=batch)
        return dedup_rows(groups, representatives, self.settings.eps)

    def group(
        self,
        source: VectorSource,
        clips: pa.Table | None = None,
        quality: pa.Table | None = None,
        *,
        extra_ids: pa.Array | None = None,
        pair_sink: PairSink | None = None,
        progress: bool = False,
        block_map: BlockMap = local_map,
    ) -> tuple[Groups, np.ndarray]:
        """(groups, index of each row's representative) of `source`'s clips and `extra_ids`.

        `clips` (keyed by ``clip_id``) gives the frame ranges, so that overlapping clips of one video
        group without an embedding, and ``duration_s``; `quality` (keyed by ``clip_id``) the
        ``clip_quality`` scores, or a ready ``quality`` number per clip. Either may be missing.
        `block_map` runs the exact search of each block of clusters (``filters.dedup.find_groups``).
        """

        def overlaps(ids: pa.Array) -> tuple[np.ndarray, np.ndarray]:
            if clips is None or clips.num_rows < 2 or not set(RANGE_COLUMNS) <= set(clips.column_names):
                return np.zeros(0, np.int64), np.zeros(0, np.int64)
            a, b = overlap_pairs(
                clips.column("video_id"),
                clips.column("start_frame").to_numpy(),
                clips.column("end_frame").to_numpy(),
                self.min_overlap,
            )
            # clip row positions -> positions in `ids`
            where = pc.index_in(clip_ids(clips), value_set=ids).to_numpy(zero_copy_only=False)
            return where[a], where[b]

        groups = find_groups(
            source, self.settings, extra_ids=extra_ids, extra_pairs=overlaps, pair_sink=pair_sink,
            workdir=self.workdir, progress=progress, block_map=block_map,
        )  # fmt: skip
        duration = aligned_column(groups.ids, clips, "duration_s")
        if quality is not None and "blur" not in quality.column_names:
            scores = aligned_column(groups.ids, quality, "quality")
        else:
            scores = quality_score(aligned(groups.ids, quality), groups.num_rows)
        return groups, choose_representatives(groups.labels, groups.ids, duration, scores)


def clip_ids(table: pa.Table) -> pa.Array:
    return table.column("clip_id").combine_chunks().cast(pa.string())


def aligned(ids: pa.Array, table: pa.Table | None) -> pa.Table | None:
    """Rows of `table` (keyed by clip_id) in the order of `ids`; missing clips become null rows."""
    if table is None:
        return None
    return table.take(pc.index_in(ids, value_set=clip_ids(table)))


def aligned_column(ids: pa.Array, table: pa.Table | None, name: str) -> np.ndarray | None:
    """Column `name` of `table` in the order of `ids` as float64 (nulls and missing clips: 0)."""
    if table is None or name not in table.column_names:
        return None
    column = aligned(ids, table.select(["clip_id", name])).column(name)
    return column.cast(pa.float64()).fill_null(0.0).to_numpy()
