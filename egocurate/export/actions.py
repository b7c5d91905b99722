"""Which action an exported episode (or shard row) carries: recorded, IDM pseudo-actions or latent.

Sources, in a preference order the caller gives (``--action-source real,idm,latent``):

- ``real``: the episode's recorded actions (``episode_actions``), at the clip's rendered frames;
- ``idm``: an inverse dynamics model's pseudo-actions (``clip_idm_actions``), same action space;
- ``latent``: the latent action model's 32-d proxies (``clip_latents``), the last frame zero;
- ``zeros``: zeros of the dataset's action size (what an export without any action held so far).

A LeRobot dataset has one action space and size, fixed by the most preferred source any selected
clip has (recorded and IDM actions share the robot's space; latent actions are their own); each
clip takes the first source in the order that it has in that space and size. A clip with none is left
out with its reason (and counted): never written with an action it does not have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from egocurate.actions.align import align_idm_actions, align_latent_actions, align_real_actions
from egocurate.catalog.action_sources import parse_action_order
from egocurate.catalog.selection import episode_actions_for, idm_actions_for, latents_for
from egocurate.catalog.store import Catalog

DEFAULT_ACTION_SOURCE = ("latent", "zeros")  # today's export: latent actions, zeros where absent
LATENT_DIM = 32
KINDS = {"real": "real_actions", "idm": "idm_actions", "latent": "latent_actions", "zeros": "zeros"}
# Recorded and IDM actions share the robot's action space; latent actions are a space of their own,
# so one dataset never mixes them even when the sizes happen to agree.
SPACES = {"real": "robot", "idm": "robot", "latent": "latent"}


def parse_action_source(value: str | Sequence[str] | None) -> tuple[str, ...]:
    """A preference order from ``"real,idm,latent"`` (or a sequence); None is the default.

    The one shared parser (``catalog.action_sources``), so an export and a shard stream agree on
    the names; an unknown name raises ``ActionSourceError`` (a ValueError: one CLI error line).
    """
    return parse_action_order(value, default=DEFAULT_ACTION_SOURCE)


@dataclass
class ActionRows:
    """The catalog rows behind every action source of the selected clips."""

    real: dict[str, dict[str, Any]] = field(default_factory=dict)  # by video id
    idm: dict[str, dict[str, Any]] = field(default_factory=dict)  # by clip id
    latent: dict[str, dict[str, Any]] = field(default_factory=dict)  # by clip id (tokenizer merged)

    @classmethod
    def load(cls, catalog: Catalog, view: Sequence[Mapping[str, Any]], order: Sequence[str]) -> ActionRows:
        clip_ids = [r["clip_id"] for r in view]
        return cls(
            real=episode_actions_for(catalog, [r.get("video_id") for r in view]) if "real" in order else {},
            idm=idm_actions_for(catalog, clip_ids) if "idm" in order else {},
            latent=latents_for(catalog, clip_ids) if "latent" in order else {},
        )

    def available(self, view_row: Mapping[str, Any]) -> list[tuple[str, int]]:
        """(source, action size) of each source this clip has (zeros excluded)."""
        out = []
        real = self.real.get(view_row.get("video_id") or "")
        if real and real.get("actions") is not None and real.get("actions_shape"):
            out.append(("real", int(real["actions_shape"][1])))
        idm = self.idm.get(view_row["clip_id"])
        if idm and idm.get("actions") is not None and idm.get("actions_shape"):
            out.append(("idm", int(idm["actions_shape"][1])))
        latent = self.latent.get(view_row["clip_id"])
        if latent and latent.get("latent_actions") is not None:
            out.append(("latent", LATENT_DIM))
        return out


@dataclass
class ActionPlan:
    """The dataset's action size and names, each clip's source, and the clips left out (reason)."""

    order: tuple[str, ...]
    dim: int
    names: list[str]
    chosen: dict[str, str]
    left_out: dict[str, str]


def plan_actions(view: Sequence[Mapping[str, Any]], rows: ActionRows, order: Sequence[str]) -> ActionPlan:
    """Pick each clip's action source (first in `order` at the dataset's action size)."""
    order = tuple(order)
    first_real = [s for s in order if s != "zeros"]
    dim, names = None, None
    available = [dict(rows.available(row)) for row in view]
    space = "latent"
    for source in first_real:  # the most preferred source any clip has fixes the space and size
        dim = next((have[source] for have in available if source in have), None)
        if dim is not None:
            space = SPACES[source]
            break
    dim = dim or LATENT_DIM

    def fits(source: str, have: dict[str, int]) -> bool:
        return source == "zeros" or (SPACES[source] == space and have.get(source) == dim)

    chosen, left_out = {}, {}
    for row, have in zip(view, available, strict=True):
        source = next((s for s in order if fits(s, have)), None)
        if source is None:
            present = ", ".join(f"{s} ({d}-d)" for s, d in have.items()) or "none"
            left_out[row["clip_id"]] = (
                f"no action from {', '.join(order)} in the dataset's {space} action space of size {dim} "
                f"(has: {present})"
            )
            continue
        chosen[row["clip_id"]] = source
        if names is None and source in ("real", "idm"):
            names = _names(rows, row, source)
    if names is None or len(names) != dim:
        kind = "latent" if dim == LATENT_DIM and "latent" in chosen.values() else "action"
        names = [f"{kind}_{i}" for i in range(dim)]
    return ActionPlan(order, dim, names, chosen, left_out)


def _names(rows: ActionRows, view_row: Mapping[str, Any], source: str) -> list[str] | None:
    row = (
        rows.real.get(view_row.get("video_id") or "")
        if source == "real"
        else rows.idm.get(view_row["clip_id"])
    )
    names = (row or {}).get("action_names")
    return list(names) if names else None


def episode_actions(
    source: str,
    view_row: Mapping[str, Any],
    rows: ActionRows,
    offsets: list[int],
    span: int,
    dim: int,
) -> dict[str, Any]:
    """Per-rendered-frame actions (len(offsets), dim) float32 of one clip from `source`, with the
    alignment and the model (id, checkpoint hash) behind them. Raises ValueError when the source
    does not cover the clip (a recorded episode shorter than the clip's frames)."""
    values = np.zeros((len(offsets), dim), dtype=np.float32)
    out: dict[str, Any] = {"source": source, "alignment": None, "model_id": None, "checkpoint_hash": None}
    if source == "real":
        row = rows.real[view_row["video_id"]]
        actions = align_real_actions(row["actions"], row["actions_shape"], view_row, offsets)
        if actions is None:
            raise ValueError(f"recorded actions ({row['actions_shape'][0]} frames) do not cover the clip")
        values[:] = actions
        out["alignment"] = "exact"
        out["model_id"] = row.get("source_format")
    elif source == "idm":
        row = rows.idm[view_row["clip_id"]]
        actions, alignment = align_idm_actions(row["actions"], row["actions_shape"], span, offsets)
        values[:] = actions
        out.update(
            alignment=alignment, model_id=row.get("idm_model_id"), checkpoint_hash=row.get("checkpoint_hash")
        )
    elif source == "latent":
        row = rows.latent[view_row["clip_id"]]
        actions, alignment = align_latent_actions(
            row.get("latent_actions"), row.get("latent_actions_shape"), row.get("lam_stride"), offsets
        )
        if actions is not None:
            values[: len(actions)] = actions[:, :dim].astype(np.float32)
        out.update(alignment=alignment, model_id=row.get("lam_model_id"))
    out["values"] = values
    return out
