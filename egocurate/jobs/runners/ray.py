"""The Ray engine: Ray Data ``map_batches`` over an actor pool sized from the stage's resources.

Each actor calls ``stage.setup()`` once (models load once per worker), then writes Parquet parts
for its batches; only manifests stream back to the driver, which commits them.

A stage with ``has_prepare`` (CPU work such as decoding in ``prepare(batch) -> batch``, see
``egocurate.stage_base``) gets it run first as Ray tasks sized by ``prepare_resources``, so CPU
decode workers feed the (GPU) actor pool through Ray Data's streaming executor instead of the
GPU actors decoding for themselves. (When the stage's actors need no GPU, Ray fuses the two steps
into one operator, which saves a copy of the decoded frames.)
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import pyarrow as pa

from egocurate.catalog.store import Catalog
from egocurate.jobs.stage import Resources, Stage
from egocurate.jobs.worker import run_on_worker


class _StageActor:
    def __init__(self, stage: Stage, root: str, storage_options: dict | None):
        self.stage, self.root, self.storage_options = stage, root, storage_options
        self.stage.setup()

    def __call__(self, batch: pa.Table) -> pa.Table:
        return run_on_worker(self.stage, batch, self.root, self.storage_options)


class RayEngine:
    """Connects to a cluster with ``address`` (``auto``, ``ray://…``) or starts a local Ray."""

    name = "ray"

    def __init__(
        self, address: str | None = None, num_cpus: int | None = None, max_actors: int | None = None
    ):
        import logging

        import ray

        logging.getLogger("ray.data").setLevel(logging.WARNING)
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            kwargs: dict = {
                "ignore_reinit_error": True,
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
            ray.init(**kwargs)
        self.max_actors = max_actors
        self.last_stats: str | None = None  # Ray Data's execution stats of the latest `map`

    def _pool_size(self, res: Resources, rows: int) -> int:
        import ray

        if res.concurrency:
            return res.concurrency
        available = ray.cluster_resources()
        by_cpu = int(available.get("CPU", 1) // max(res.cpus, 1e-6)) if res.cpus else 1
        by_gpu = int(available.get("GPU", 0) // res.gpus) if res.gpus else by_cpu
        size = max(1, min(by_cpu, by_gpu, math.ceil(rows / res.batch_size)))
        return min(size, self.max_actors) if self.max_actors else size

    def map(self, stage: Stage, rows: pa.Table, catalog: Catalog) -> Iterator[pa.Table]:
        import ray.data

        res = stage.resources
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        size = self._pool_size(res, rows.num_rows)
        blocks = max(1, math.ceil(rows.num_rows / res.batch_size))
        ds = ray.data.from_arrow(rows).repartition(blocks)
        if stage.has_prepare:
            prep = stage.prepare_resources or res
            ds = ds.map_batches(
                stage.prepare, batch_size=prep.batch_size, batch_format="pyarrow", num_cpus=prep.cpus
            )
        remote_args = {"num_cpus": res.cpus, "num_gpus": res.gpus}
        if res.memory_gb:
            remote_args["memory"] = int(res.memory_gb * 2**30)
        ds = ds.map_batches(
            _StageActor,
            fn_constructor_kwargs={
                "stage": stage,
                "root": catalog.root,
                "storage_options": catalog.storage_options,
            },
            batch_size=res.batch_size,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(min_size=1, max_size=size),
            **remote_args,
        )
        yield from ds.iter_batches(batch_format="pyarrow", batch_size=None)
        self.last_stats = ds.stats()

    def close(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
