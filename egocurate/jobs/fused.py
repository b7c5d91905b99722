"""Several per-clip stages as one pass that decodes each clip once (DESIGN.md: decode once).

Quality, embedding and latent actions all read frames of the same clips, each at its own rate and
size. Run one after another, each decodes every clip again. A :class:`FusedStage` runs them as one
engine pass instead: its ``prepare`` step asks every member for its :class:`FramePlan`, decodes the
union of the frames once per clip (``media.decode.decode_plans``: each decoded picture is scaled
straight to each member's size), and hands each member its own frames; then each member's
``process`` runs on the rows it still has to do. A member's frames are bit-identical to those it
decodes alone (``media.decode.read_plan``), so what it writes never depends on whether, or with which
other stages, it ran fused.

Each member still owns its table, its quarantine rows and its ledger: the worker writes one set of
manifest rows per member (``jobs.worker``), and the driver commits them per member (``jobs.driver``),
so resumption, reruns and engines work as for a single stage. On Ray, ``prepare`` runs on the CPU
pool ahead of the members' actors (a GPU member gets its frames decoded elsewhere).
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from egocurate.media.decode import FRAMES_COLUMN, FRAMES_SHAPE_COLUMN, decode_plans, frames_columns
from egocurate.stage_base import Resources

TODO_PREFIX = "_todo_"  # boolean column per member: this row still has to go through that member


def todo_column(stage_name: str) -> str:
    return f"{TODO_PREFIX}{stage_name}"


def _frames_column(stage_name: str) -> tuple[str, str]:
    return f"_frames__{stage_name}", f"_frames_shape__{stage_name}"


class FusedStage:
    """Members that share the input key, run as one engine pass with one decode per clip."""

    has_prepare = True
    merges_duplicates = False

    def __init__(self, members: Sequence):
        if len(members) < 2:
            raise ValueError("a fused stage needs at least two members")
        keys = {m.input_key for m in members}
        if len(keys) != 1:
            raise ValueError(f"fused members must share their input key, got {sorted(keys)}")
        self.members = list(members)
        self.name = "+".join(m.name for m in members)
        self.input_key = keys.pop()
        self.output_table = self.members[0].output_table
        self.reads = tuple(dict.fromkeys(c for m in members for c in m.reads))
        res = [m.resources for m in members]
        limits = [r.concurrency for r in res if r.concurrency]
        self.resources = Resources(
            cpus=max(r.cpus for r in res),
            gpus=max(r.gpus for r in res),
            memory_gb=max((r.memory_gb for r in res if r.memory_gb), default=None),
            batch_size=min(r.batch_size for r in res),
            concurrency=min(limits) if limits else None,
        )
        self.prepare_resources = Resources(cpus=1.0, batch_size=self.resources.batch_size)
        self.decode_seconds = 0.0

    def setup(self) -> None:
        for member in self.members:
            member.setup()

    def prepare(self, batch: pa.Table) -> pa.Table:
        """Decode each row's frames once for all members; a row that fails is left to the members."""
        if any(name.startswith("_frames__") for name in batch.column_names):
            return batch  # prepared already (by the engine's CPU pool)
        per_member: dict[str, list] = {m.name: [] for m in self.members}
        for row in batch.to_pylist():
            plans = {}
            for m in self.members:
                if row.get(todo_column(m.name), True):
                    try:
                        plans[m.name] = m.frame_plan(row)
                    except Exception:  # the member's own process reports the bad row
                        plans[m.name] = None
            try:
                frames = decode_plans(plans)
            except Exception:  # unreadable file: each member decodes (and quarantines) for itself
                frames = {}
            for m in self.members:
                per_member[m.name].append(frames.get(m.name))
        for m in self.members:
            data, shapes = frames_columns(per_member[m.name])
            column, shape_column = _frames_column(m.name)
            batch = batch.append_column(column, data).append_column(shape_column, shapes)
        return batch

    def member_batches(self, batch: pa.Table) -> list[tuple[object, pa.Table]]:
        """(member, the rows it still has to do, with its own frames in ``media.decode.FRAMES_COLUMN``)."""
        private = [
            n for n in batch.column_names if n.startswith(("_frames__", "_frames_shape__", TODO_PREFIX))
        ]
        out = []
        for m in self.members:
            rows = batch
            todo = todo_column(m.name)
            if todo in batch.column_names:
                rows = batch.filter(pc.fill_null(batch.column(todo), True))
            column, shape_column = _frames_column(m.name)
            frames = rows.column(column) if column in rows.column_names else None
            shapes = rows.column(shape_column) if shape_column in rows.column_names else None
            rows = rows.drop_columns([n for n in private if n in rows.column_names])
            if frames is not None:
                rows = rows.append_column(FRAMES_COLUMN, frames).append_column(FRAMES_SHAPE_COLUMN, shapes)
            out.append((m, rows))
        return out
