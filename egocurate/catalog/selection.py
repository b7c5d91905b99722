"""Which clips a shard set or an export holds: SQL over the clip view, plus a label glob.

Shards and exports share this so that ``--query`` and ``--task`` mean the same thing everywhere.
Heavy per-clip arrays (latent actions, tokenizer latents) stay out of the view; they are read
from ``clip_latents`` for the selected clips only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from egocurate.catalog import tables
from egocurate.catalog.query import connect
from egocurate.catalog.store import Catalog

DEFAULT_QUERY = "SELECT clip_id FROM clip_view WHERE keep"
# Tables a selection reads; their Delta versions are recorded as the "catalog version".
SOURCE_TABLES = (
    "videos",
    "clips",
    "clip_quality",
    "clip_dedup",
    "clip_labels",
    "clip_latents",
    "clip_tokenizer_latents",
    "episode_actions",
    "clip_idm_actions",
)
TOKENIZER_LATENTS = "clip_tokenizer_latents"


def task_predicate(alias: str = "v") -> str:
    """SQL condition (one ``?`` parameter) matching a case-insensitive glob on the clip's task.

    The task is the annotator's label when there is one, else the source's task text.
    """
    return f"lower(coalesce({alias}.task, {alias}.task_text, '')) GLOB lower(?)"


def select_clips(
    catalog: Catalog,
    query: str | None = None,
    task: str | None = None,
    thresholds: Mapping[str, float] | None = None,
    origin: str | None = None,
) -> pa.Table:
    """Clip-view rows of the clips `query` returns (it must have a ``clip_id`` column), sorted by id.

    `query` defaults to every kept clip; `task` further keeps clips whose task matches a glob such
    as ``"pour*"``; `origin` keeps only ``real`` or only ``generated`` clips.
    """
    if origin is not None and origin not in tables.ORIGINS:
        raise ValueError(f"origin must be one of {', '.join(tables.ORIGINS)}; got {origin!r}")
    sql = query or DEFAULT_QUERY
    params = ([task] if task else []) + ([origin] if origin else [])
    statement = (
        f"WITH sel AS ({sql}) SELECT v.* FROM clip_view v "
        f"WHERE v.clip_id IN (SELECT clip_id FROM sel)"
        + (f" AND {task_predicate('v')}" if task else "")
        + (" AND v.origin = ?" if origin else "")
        + " ORDER BY v.clip_id"
    )
    con = connect(catalog, thresholds)
    try:
        return con.sql(statement, params=params or None).to_arrow_table()
    finally:
        con.close()


def catalog_version(catalog: Catalog, names: Iterable[str] = SOURCE_TABLES) -> dict[str, int]:
    """Delta version of each source table present (what a shard set or export was built from)."""
    out = {}
    for name in names:
        version = catalog.version(name)
        if version is not None:
            out[name] = int(version)
    return out


def rows_for(catalog: Catalog, table: str, clip_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Rows of `table` for `clip_ids` (whatever columns it has; none if it is absent), by clip id."""
    ds = catalog.dataset(table)  # absent reads as none; unreadable raises CatalogReadError
    if ds is None or not clip_ids or "clip_id" not in ds.schema.names:
        return {}
    data = ds.to_table(filter=pc.field("clip_id").isin(list(clip_ids)))
    return {row["clip_id"]: row for row in data.to_pylist()}


def latents_for(catalog: Catalog, clip_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Latent actions (`clip_latents`) merged with tokenizer latents (`clip_tokenizer_latents`)."""
    merged = rows_for(catalog, tables.CLIP_LATENTS.name, clip_ids)
    for cid, row in rows_for(catalog, TOKENIZER_LATENTS, clip_ids).items():
        target = merged.setdefault(cid, {"clip_id": cid})
        for key, value in row.items():
            if value is not None and target.get(key) is None:
                target[key] = value
    return merged


def episode_actions_for(catalog: Catalog, video_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Recorded robot actions (``episode_actions``) of `video_ids`, by video id."""
    ds = catalog.dataset(tables.EPISODE_ACTIONS.name)
    ids = sorted({v for v in video_ids if v})
    if ds is None or not ids:
        return {}
    data = ds.to_table(filter=pc.field("video_id").isin(ids))
    return {row["video_id"]: row for row in data.to_pylist()}


def idm_actions_for(catalog: Catalog, clip_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """IDM pseudo-actions (``clip_idm_actions``) of `clip_ids`, by clip id."""
    return rows_for(catalog, tables.CLIP_IDM_ACTIONS.name, clip_ids)


def hash_unit(text: str) -> float:
    """A deterministic number in [0, 1) from a string (stable across machines and runs)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2.0**64


def split_of(video_id: str, val_fraction: float, salt: str = "egocurate-split") -> str:
    """``"val"`` or ``"train"`` by a hash of the *video*, so no source video lands in both splits."""
    return "val" if hash_unit(f"{salt}:{video_id}") < val_fraction else "train"


SPLIT_ALIASES = {"validation": "val", "valid": "val", "dev": "val", "training": "train"}


def split_for(row: Mapping[str, Any], val_fraction: float, salt: str = "egocurate-split") -> str:
    """The clip's split: the source's own (a manifest ``split`` column, in ``videos.split``), else by
    hash of the video. Names are lower-cased; ``validation``/``valid``/``dev`` become ``val``."""
    given = row.get("split")
    if given is not None and str(given).strip():
        name = str(given).strip().lower()
        return SPLIT_ALIASES.get(name, name)
    return split_of(row.get("video_id") or row["clip_id"], val_fraction, salt)


def shuffled_ids(clip_ids: Iterable[str], seed: int) -> list[str]:
    """`clip_ids` in a seeded hash order: shards written this way hold a random mix of videos."""
    return sorted(clip_ids, key=lambda cid: hashlib.sha256(f"{seed}:{cid}".encode()).digest())
