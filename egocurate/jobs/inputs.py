"""Builders of the rows each stage consumes, read from the catalog (or from discovery).

Stages stay pure; reading the catalog to feed them is the driver's job, done here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa

from egocurate.catalog.store import Catalog
from egocurate.ingest.discover import discover

InputBuilder = Callable[[Catalog, Sequence[str], dict | None], pa.Table]


def discovered(
    catalog: Catalog, sources: Sequence[str], storage_options: dict | None = None, camera: str | None = None
) -> pa.Table:
    """Rows of the files found in `sources` (folders, globs, URLs, manifests, LeRobot datasets)."""
    if not sources:
        raise ValueError("the ingest stage needs at least one source (a folder, glob, URL or manifest)")
    return discover(sources, storage_options, camera=camera)


def robot_episodes(
    catalog: Catalog, sources: Sequence[str] = (), storage_options: dict | None = None
) -> pa.Table:
    """`videos` rows that came from a robot dataset (they name the data file of their episode)."""
    import pyarrow.compute as pc

    rows = catalog.read("videos")
    return rows.filter(pc.is_valid(rows.column("actions_uri")))


def videos(catalog: Catalog, sources: Sequence[str] = (), storage_options: dict | None = None) -> pa.Table:
    """Every committed `videos` row."""
    return catalog.read("videos")


VIDEO_COLUMNS_FOR_CLIPS = ("video_id", "uri", "rotation", "width", "height", "source", "dataset", "task_text")


def clips(catalog: Catalog, sources: Sequence[str] = (), storage_options: dict | None = None) -> pa.Table:
    """Every clip joined with its video's uri and metadata (what per-clip stages decode from)."""
    clip_rows = catalog.read("clips")
    video_rows = catalog.read("videos", columns=list(VIDEO_COLUMNS_FOR_CLIPS)).rename_columns(
        ["video_id", "uri", "rotation", "video_width", "video_height", "source", "dataset", "task_text"]
    )
    if clip_rows.num_rows == 0:
        return clip_rows.append_column("uri", pa.array([], pa.string()))
    # Not Table.join: Arrow's join refuses list columns (clips.crop) outside the key.
    return _attach(clip_rows, video_rows, "video_id", video_rows.column_names[1:]).sort_by("clip_id")


def _attach(rows: pa.Table, other: pa.Table, key: str, columns: Sequence[str]) -> pa.Table:
    """Left-join `columns` of `other` onto `rows` by `key` (list columns too, which Arrow's join refuses)."""
    import pyarrow.compute as pc

    index = pc.index_in(rows.column(key), value_set=other.column(key))
    for name in columns:
        rows = rows.append_column(name, other.column(name).take(index))
    return rows


def label_inputs(
    catalog: Catalog, sources: Sequence[str] = (), storage_options: dict | None = None
) -> pa.Table:
    """Clips with their video's task text, caption and CLIP embedding, for the `labels` stage.

    Clips that have none of the three yet are left out, so a later run labels them once one arrives.
    """
    import pyarrow.compute as pc

    rows = clips(catalog)
    if rows.num_rows == 0:
        return rows
    captions = catalog.read("clip_captions", columns=["clip_id", "caption"])
    rows = _attach(rows, captions, "clip_id", ["caption"])
    embeddings = catalog.read("clip_embeddings", columns=["clip_id", "model_id", "vector"])
    rows = _attach(rows, embeddings, "clip_id", ["model_id", "vector"])

    def has_text(name: str) -> pa.ChunkedArray:
        return pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(rows.column(name))), 0), False)

    usable = pc.or_(pc.or_(has_text("task_text"), has_text("caption")), pc.is_valid(rows.column("vector")))
    return rows.filter(usable)


def idm_inputs(
    catalog: Catalog, sources: Sequence[str] = (), storage_options: dict | None = None
) -> pa.Table:
    """Clips (as :func:`clips`) with their episode's real actions, for the `idm_actions` stage.

    ``real_actions`` / ``real_actions_shape`` are the video's ``episode_actions`` arrays (float32 bytes,
    [num_frames, A]), null for videos without real actions.
    """
    rows = clips(catalog)
    actions = catalog.read("episode_actions", columns=["video_id", "actions", "actions_shape"])
    actions = actions.rename_columns(["video_id", "real_actions", "real_actions_shape"])
    return _attach(rows, actions, "video_id", ["real_actions", "real_actions_shape"])


def idm_episodes(catalog: Catalog) -> list[dict]:
    """One row per video with real actions: the video's uri and size, frame range and actions.

    What IDM training reads: ``episode_actions`` joined with ``videos``. Frames [0, n) where n is the
    smaller of the video's and the actions' frame counts.
    """
    actions = catalog.read("episode_actions")
    if actions.num_rows == 0:
        return []
    videos_ = catalog.read("videos", columns=["video_id", "uri", "width", "height", "rotation", "num_frames"])
    rows = _attach(actions, videos_.rename_columns(
        ["video_id", "uri", "width", "height", "rotation", "video_num_frames"]
    ), "video_id", ["uri", "width", "height", "rotation", "video_num_frames"])  # fmt: skip
    out = []
    for row in rows.to_pylist():
        if not row.get("uri") or not row.get("actions_shape"):
            continue
        frames = int(row["actions_shape"][0])
        if row.get("video_num_frames"):
            frames = min(frames, int(row["video_num_frames"]))
        out.append({**row, "start_frame": 0, "end_frame": frames})
    return out


BUILDERS: dict[str, InputBuilder] = {
    "discovered": discovered, "videos": videos, "clips": clips, "label_inputs": label_inputs,
    "robot_episodes": robot_episodes,
    "idm_inputs": idm_inputs,
}  # fmt: skip


def build_inputs(
    name: str,
    catalog: Catalog,
    sources: Sequence[str] = (),
    storage_options: dict | None = None,
    camera: str | None = None,
) -> pa.Table:
    """The rows stage input `name` consumes; `camera` picks LeRobot datasets' video key."""
    if name not in BUILDERS:
        raise ValueError(f"unknown stage input {name!r}; known: {sorted(BUILDERS)}")
    if name == "discovered":
        return discovered(catalog, sources, storage_options, camera=camera)
    return BUILDERS[name](catalog, sources, storage_options)
