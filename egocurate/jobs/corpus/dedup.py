"""The registered ``dedup`` stage: a thin adapter between the catalog and ``filters.dedup_stage``.

Dedup itself lives in ``egocurate/filters/``: the search, overlap test and representative rule in
``dedup.py``, the stage with its settings and every decision in ``dedup_stage.py``
(``DedupStage.group``). Dedup needs every embedding at once, so it cannot run batch by batch like
the other stages; this module only streams the catalog's embeddings, clips and quality scores in
and writes ``clip_dedup`` back with ``Catalog.replace``: groups can change when clips are added, so
the whole table is replaced, atomically. A rerun over unchanged inputs does nothing: the commit
records the input table versions and settings, and the next run compares them first.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.filters.dedup import BlockMap, BlockResult, ClusterBlock, PairSink, dedup_rows, local_map
from egocurate.filters.dedup_stage import DedupStage
from egocurate.filters.vectors import decode_vectors
from egocurate.jobs.driver import StageSummary

INPUTS_KEY = "egocurate.dedup_inputs"
QUALITY_COLUMNS = ["clip_id", "blur", "static_fraction", "dark_fraction", "bright_fraction"]


class CatalogVectorSource:
    """`clip_embeddings` of one model, streamed in chunks (a ``filters.dedup.VectorSource``)."""

    def __init__(self, catalog: Catalog, model_id: str | None = None, chunk_rows: int = 65_536):
        self.catalog, self.chunk_rows = catalog, chunk_rows
        dataset = catalog.dataset(tables.CLIP_EMBEDDINGS.name)
        self.dataset: pads.Dataset | None = dataset
        if dataset is None:
            self.model_id, self.filter, self.num_rows, self.dim = model_id, None, 0, 0
            return
        models = catalog.distinct(tables.CLIP_EMBEDDINGS.name, "model_id")
        if model_id is None and len(models) > 1:
            raise ValueError(
                f"clip_embeddings holds several models {sorted(models)}; set the dedup `model_id`"
            )
        self.model_id = model_id or (next(iter(models)) if models else None)
        # Filters touch small columns only: a filter on `vector` would materialise every vector.
        self.filter = pc.field("model_id") == self.model_id
        dims = pc.unique(dataset.to_table(columns=["dim"], filter=self.filter).column("dim")).drop_null()
        if len(dims) > 1:
            raise ValueError(f"embeddings of model {self.model_id!r} have several sizes: {dims.to_pylist()}")
        self.num_rows = dataset.count_rows(filter=self.filter)
        self.dim = int(dims[0].as_py()) if len(dims) else 0

    def chunks(self) -> Iterator[tuple[pa.Array, np.ndarray]]:
        if self.dataset is None or not self.num_rows:
            return
        # File by file, no read-ahead and no scan threads: buffered batches of other files would hold
        # hundreds of MB of vectors at corpus scale.
        for fragment in self.dataset.get_fragments(filter=self.filter):
            batches = fragment.to_batches(
                columns=["clip_id", "vector"], filter=self.filter, batch_size=self.chunk_rows,
                batch_readahead=0, fragment_readahead=0, use_threads=False,
            )  # fmt: skip
            for batch in batches:
                if batch.num_rows:
                    yield batch.column(0), decode_vectors(batch.column(1), self.dim)


def _inputs_fingerprint(catalog: Catalog, stage: DedupStage, model_id: str | None) -> str:
    versions = {name: catalog.version(name) for name in ("clip_embeddings", "clips", "clip_quality")}
    settings = {
        k: v for k, v in asdict(stage.settings).items() if k not in ("use_gpu", "chunk_rows", "group_rows")
    }
    record = {
        "versions": versions,
        "settings": settings,
        "min_overlap": stage.min_overlap,
        "model_id": model_id,
    }
    return json.dumps(record, sort_keys=True)


def _last_inputs(catalog: Catalog) -> str | None:
    history = catalog.history(tables.CLIP_DEDUP.name, limit=1)
    return history[0].get(INPUTS_KEY) if history else None


def ray_block_map(in_flight: int = 4) -> BlockMap:
    """Run each block of clusters' exact search as a Ray task (on the Ray this process joined),
    at most `in_flight` at a time (each carries ~64 MB of float16 vectors), results in block order:
    the groups are the local run's."""
    import ray

    from egocurate.filters.dedup import search_block

    remote = ray.remote(num_cpus=1, max_retries=3)(search_block)

    def run(
        fn: Callable[[ClusterBlock], BlockResult], blocks: Iterable[ClusterBlock]
    ) -> Iterator[BlockResult]:
        pending: deque = deque()
        for block in blocks:
            pending.append(remote.remote(block))
            if len(pending) >= in_flight:
                yield ray.get(pending.popleft())
        while pending:
            yield ray.get(pending.popleft())

    return run


def run_dedup(
    catalog: Catalog,
    stage: DedupStage,
    progress: bool = True,
    pair_sink: PairSink | None = None,
    block_map: BlockMap = local_map,
) -> StageSummary:
    """Group near-duplicate clips of the whole catalog and replace `clip_dedup` in one commit.

    `pair_sink` sees every embedding pair found (see ``filters.dedup.find_groups``; benchmarks);
    `block_map` runs the per-cluster search (``ray_block_map``: as Ray tasks)."""
    started = time.perf_counter()
    summary = StageSummary(stage=stage.name, engine="global" if block_map is local_map else "ray")
    spec = tables.CLIP_DEDUP
    source = CatalogVectorSource(catalog, stage.model_id, stage.settings.chunk_rows)
    fingerprint = _inputs_fingerprint(catalog, stage, source.model_id)
    if catalog.exists(spec.name) and _last_inputs(catalog) == fingerprint:
        summary.rows_skipped = catalog.count(spec.name)
        summary.seconds = time.perf_counter() - started
        return summary

    clips = catalog.read(
        tables.CLIPS.name, columns=["clip_id", "video_id", "start_frame", "end_frame", "duration_s"]
    )
    embedded = pa.array([], pa.string())
    if source.num_rows:  # Arrow, not Python strings: a million ids stay a few tens of MB
        embedded = catalog.read(tables.CLIP_EMBEDDINGS.name, columns=["clip_id"], filter=source.filter)
        embedded = embedded.column("clip_id").combine_chunks()
    not_embedded = clips.column("clip_id").filter(
        pc.invert(pc.is_in(clips.column("clip_id"), value_set=embedded))
    )

    quality = catalog.read(tables.CLIP_QUALITY.name, columns=QUALITY_COLUMNS)
    grouping = time.perf_counter()
    groups, representatives = stage.group(
        source,
        clips,
        quality,
        extra_ids=not_embedded.combine_chunks(),
        pair_sink=pair_sink,
        progress=progress,
        block_map=block_map,
    )
    summary.worker_seconds = time.perf_counter() - grouping  # the stage's own work: groups, representatives
    started_write = time.perf_counter(), time.process_time()
    catalog.ensure(spec)
    chunk = max(1, stage.settings.chunk_rows)

    def batches() -> Iterator[pa.RecordBatch]:
        for start in range(0, groups.num_rows, chunk):
            yield from dedup_rows(
                groups, representatives, stage.settings.eps, start, start + chunk
            ).to_batches()

    catalog.replace(
        spec,
        pa.RecordBatchReader.from_batches(spec.schema, batches()),
        operation=stage.name,
        metadata={INPUTS_KEY: fingerprint},
    )
    groups.stats["seconds"]["write"] = time.perf_counter() - started_write[0]
    groups.stats.setdefault("cpu_seconds", {})["write"] = time.process_time() - started_write[1]
    summary.rows_in = groups.num_rows
    summary.rows_out = groups.num_rows
    summary.commits = 1
    summary.versions[spec.name] = int(catalog.version(spec.name) or 0)
    summary.seconds = time.perf_counter() - started
    stage.last_stats = groups.stats  # per-phase timings, clusters, pairs (benchmarks and logs read it)
    return summary


class DedupCorpusStage(DedupStage):
    """The registered `dedup` stage: ``filters.dedup_stage.DedupStage`` run over the whole corpus."""

    corpus = True
    last_stats: dict[str, Any]

    def run_corpus(self, catalog: Catalog, progress: bool = True) -> StageSummary:
        if self.engine != "ray":
            return run_dedup(catalog, self, progress=progress)
        from egocurate.jobs.runners.ray import RayEngine

        ray_engine = RayEngine(address=self.ray_address)  # joins (or starts) Ray, pinned to loopback
        try:
            return run_dedup(catalog, self, progress=progress, block_map=ray_block_map())
        finally:
            ray_engine.close()
