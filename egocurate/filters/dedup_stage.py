"""The ``dedup`` stage's settings and in-batch form; the whole-corpus run is ``jobs.corpus.dedup``."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from egocurate.catalog import tables
from egocurate.filters.dedup import (
    ArraySource,
    DedupSettings,
    choose_representatives,
    column_or_none,
    dedup_rows,
    find_groups,
    normalise,
    overlap_pairs,
    quality_score,
)
from egocurate.filters.vectors import decode_vectors
from egocurate.stage_base import BaseStage, Resources


class DedupStage(BaseStage):
    """Near-duplicate groups (clip_dedup). Corpus-level: the pipeline runs it through
    ``jobs.corpus.dedup``; ``process`` dedups one in-memory batch (clip_id + vector columns)."""

    name = "dedup"
    input_key = "clip_id"
    output_table = tables.CLIP_DEDUP.name
    reads = ('vector',)

    def __init__(
        self,
        eps: float = 0.05,
        exact_max: int = 10_000,
        clusters: int | None = None,
        sample_size: int = 16_384,
        kmeans_iters: int = 10,
        cluster_size: int = 256,
        probe: int = 4,
        margin: float | None = 0.05,
        max_assign: int = 2,
        chunk_rows: int = 32_768,
        center: bool = False,
        min_overlap: float = 0.5,
        model_id: str | None = None,
        use_gpu: bool | None = None,
        seed: int = 0,
        workdir: str | None = None,
        batch_size: int = 100_000,
    ):
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1), got {eps}")
        if not 0.0 < min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
        self.settings = DedupSettings(
            eps=eps, exact_max=exact_max, clusters=clusters, sample_size=sample_size,
            kmeans_iters=kmeans_iters, cluster_size=cluster_size, probe=probe, margin=margin,
            max_assign=max_assign, chunk_rows=chunk_rows, use_gpu=use_gpu, seed=seed, center=center,
        )  # fmt: skip
        self.min_overlap, self.model_id, self.workdir = min_overlap, model_id, workdir
        self.resources = Resources(cpus=1, batch_size=batch_size)

    def setup(self) -> None:
        """Nothing to load."""

    def process(self, batch: pa.Table) -> pa.Table:
        """Dedup the rows of one batch among themselves (vector, optional duration/quality/range)."""
        ids = batch.column("clip_id").combine_chunks().cast(pa.string())
        vectors = normalise(decode_vectors(batch.column("vector")))
        extra = None
        if {"video_id", "start_frame", "end_frame"} <= set(batch.column_names):

            def extra(_: pa.Array) -> tuple[np.ndarray, np.ndarray]:
                return overlap_pairs(
                    batch.column("video_id"),
                    batch.column("start_frame").to_numpy(),
                    batch.column("end_frame").to_numpy(),
                    self.min_overlap,
                )

        groups = find_groups(
            ArraySource(ids, vectors), self.settings, extra_pairs=extra, workdir=self.workdir, progress=False
        )
        quality = (
            quality_score(batch, batch.num_rows)
            if "blur" in batch.column_names
            else column_or_none(batch, "quality")
        )
        reps = choose_representatives(groups.labels, ids, column_or_none(batch, "duration_s"), quality)
        return dedup_rows(groups, reps, self.settings.eps)
