"""The stage contracts, and the one function every engine calls on a worker.

Two kinds of stage, both declared in full here so that engines and the driver call declared hooks
and never probe with ``getattr``:

- :class:`Stage`: per-row work (``process(batch) -> batch``) that any engine maps over the rows a
  stage has not done yet. Stage packages implement it by subclassing
  :class:`egocurate.stage_base.BaseStage`, which holds the defaults of every optional hook and the
  typed :class:`~egocurate.stage_base.Resources`; they never import this module (DESIGN.md: stages
  know nothing of engines).
- :class:`CorpusStage`: whole-corpus work (dedup, statistics, report) that the driver runs once
  over the catalog (``jobs.corpus``).

A row a stage cannot handle is returned with ``_error_kind`` and ``_error_message`` set (see
``catalog.tables``); ``jobs.worker.run_on_worker`` routes it to quarantine.
"""

from __future__ import annotations

from typing import ClassVar, Protocol, runtime_checkable

import pyarrow as pa

from egocurate.catalog.store import Catalog
from egocurate.jobs.summary import StageSummary
from egocurate.stage_base import BaseStage, Resources

__all__ = ["BaseStage", "CorpusStage", "Resources", "Stage"]

@runtime_checkable
class Stage(Protocol):
    """A per-row stage (see :class:`egocurate.stage_base.BaseStage` for what each member means)."""

    name: str
    input_key: str
    output_table: str
    reads: tuple[str, ...]
    resources: Resources
    prepare_resources: Resources | None
    has_prepare: bool
    merges_duplicates: bool

    def setup(self) -> None: ...

    def process(self, batch: pa.Table) -> pa.Table: ...

    def prepare(self, batch: pa.Table) -> pa.Table: ...

    def merge_duplicates(self, existing: pa.Table, incoming: pa.Table) -> pa.Table: ...

    def done_columns(self) -> tuple[str, ...]: ...

    def select_inputs(self, rows: pa.Table) -> pa.Table: ...


@runtime_checkable
class CorpusStage(Protocol):
    """A whole-corpus stage: reads the catalog, writes its table in one commit, returns a summary.

    ``run_corpus`` must make a rerun over unchanged inputs do nothing (dedup compares the input
    versions it recorded; statistics and report are cheap and recomputed).
    """

    name: str
    output_table: str
    corpus: ClassVar[bool]

    def run_corpus(self, catalog: Catalog, progress: bool = True) -> StageSummary: ...
