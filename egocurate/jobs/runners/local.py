"""The in-process engine: a plain loop, for tests, notebooks and tiny runs."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa

from egocurate.catalog.store import Catalog
from egocurate.jobs.stage import Stage
from egocurate.jobs.worker import run_on_worker


class LocalEngine:
    """Runs a stage in this process, one batch of ``resources.batch_size`` rows at a time."""

    name = "local"

    def map(self, stage: Stage, rows: pa.Table, catalog: Catalog) -> Iterator[pa.Table]:
        batch_size = stage.resources.batch_size
        stage.setup()
        for offset in range(0, rows.num_rows, batch_size):
            batch = rows.slice(offset, batch_size)
            yield run_on_worker(stage, batch, catalog.root, catalog.storage_options)

    def close(self) -> None:
        pass
