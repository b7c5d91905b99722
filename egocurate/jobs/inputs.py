"""Builders of the rows each stage consumes, read from the catalog (or from discovery).

Stages stay pure; reading the catalog to feed them is the driver's job, done here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pyarrow as pa

from egocurate.catalog.store import Catalog
from egocurate.ingest.discover import discover

InputBuilder = Callable[[Catalog, Sequence[str], dict | None], pa.Table]


def discovered(catalog: Catalog, sources: Sequence[str], storage_options: dict | None = None) -> pa.Table:
    """Rows of the files found in `sources` (folders, globs, URLs, manifests)."""
    if not sources:
        raise ValueError("the ingest stage needs at least one source (a folder, glob, URL or manifest)")
    return discover(sources, storage_options)


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
    return clip_rows.join(video_rows, keys="video_id", join_type="left outer").sort_by("clip_id")


BUILDERS: dict[str, InputBuilder] = {"discovered": discovered, "videos": videos, "clips": clips}


def build_inputs(name: str, catalog: Catalog, sources: Sequence[str] = (), storage_options: dict | None = None) -> pa.Table:
    if name not in BUILDERS:
        raise ValueError(f"unknown stage input {name!r}; known: {sorted(BUILDERS)}")
    return BUILDERS[name](catalog, sources, storage_options)
