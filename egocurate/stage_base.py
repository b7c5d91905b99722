"""What a stage declares about itself: its typed :class:`Resources` and the defaults of every hook.

Stage packages (ingest, filters, annotate, latent_actions) subclass :class:`BaseStage`; the engines
and the driver in ``egocurate.jobs`` read only what is declared here (``jobs.stage.Stage`` is the
protocol), never probe with ``getattr``. This module imports nothing of egocurate, so a stage can
use it without depending on any engine (DESIGN.md: stages are pure).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage needs; engines size their pools and batches from it."""

    cpus: float = 1.0
    gpus: float = 0.0
    memory_gb: float | None = None
    batch_size: int = 16
    concurrency: int | None = None  # at most this many workers (None: as many as fit)

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.cpus <= 0:
            raise ValueError(f"cpus must be > 0, got {self.cpus}")
        if self.gpus < 0:
            raise ValueError(f"gpus must be >= 0, got {self.gpus}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 or None, got {self.concurrency}")

    def with_(self, **overrides: Any) -> Resources:
        """A copy with `overrides` applied (None values ignored), e.g. from a pipeline file."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"unknown resource keys {sorted(unknown)}; allowed: {sorted(known)}")
        return dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})


class BaseStage:
    """Defaults of a per-row stage; subclasses set the class attributes and implement :meth:`process`.

    - ``name``: unique; ``input_key``: the id column consumed; ``output_table``: the one table owned.
    - ``reads``: input columns the stage needs besides ``input_key`` (checked before a run starts).
    - ``resources``: set in ``__init__`` from the constructor's arguments.
    - ``done_key_columns``: columns of the output table whose values count as finished input keys
      (ingest: one video row covers every uri folded into it).
    - ``prepare``: CPU work (decode) the Ray engine runs in its own pool ahead of the (GPU) actors,
      sized by ``prepare_resources``. ``process`` must also accept rows that were not prepared.
    - ``merge_duplicates``: for stages whose output key is not their input key (many uris, one
      video): folds incoming rows into existing ones with the same key instead of appending.
    - ``frame_plan``: for stages that decode clip frames: which file, frames and size a row needs
      (a ``media.decode.FramePlan``). Stages that declare it can share one decode of each clip
      (``jobs.fused``); their ``process`` then finds the frames already decoded in the row (see
      ``media.decode.frames_of``) and decodes for itself only when they are absent, with
      ``media.decode.read_plan`` of the same plan: the frames, and so the values, are the same to
      the bit either way.
    """

    name: ClassVar[str]
    input_key: ClassVar[str]
    output_table: ClassVar[str]
    reads: ClassVar[tuple[str, ...]] = ()
    done_key_columns: ClassVar[tuple[str, ...] | None] = None  # None: (input_key,)
    resources: Resources = Resources()
    prepare_resources: Resources | None = None
    has_prepare: ClassVar[bool] = False
    merges_duplicates: ClassVar[bool] = False

    def setup(self) -> None:
        """Load models once per worker (the default has nothing to load)."""

    def process(self, batch: pa.Table) -> pa.Table:  # pragma: no cover - every stage overrides it
        raise NotImplementedError

    def prepare(self, batch: pa.Table) -> pa.Table:
        """CPU work ahead of :meth:`process` (only called when ``has_prepare`` is True)."""
        return batch

    def merge_duplicates(self, existing: pa.Table, incoming: pa.Table) -> pa.Table:
        """Fold `incoming` into `existing` rows of the same key (only when ``merges_duplicates``)."""
        raise NotImplementedError

    def select_inputs(self, rows: pa.Table) -> pa.Table:
        """The input rows this configuration of the stage works on (the default: all of them).

        Applied before the done-key anti-join, so rows left out are neither done nor ledgered and a
        later run configured to take them (e.g. ``idm_actions`` with ``all: true``) still does them.
        """
        return rows

    def frame_plan(self, row: dict[str, Any]) -> Any:
        """The frames `row` needs (a ``media.decode.FramePlan``), or None: this stage decodes no frames."""
        return None

    def no_output_note(self) -> str:
        """What an input that yields no row means, for the run summary ("... produced no clip")."""
        return f"input(s) produced no {self.output_table} row"

    def done_columns(self) -> tuple[str, ...]:
        """Output columns whose values are finished input keys."""
        return self.done_key_columns or (self.input_key,)
