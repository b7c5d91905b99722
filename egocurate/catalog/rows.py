"""Helpers over one row of the clip view, shared by shards and exports: its first present value and
its quality scores (where to decode a clip from is ``media.source.clip_source``; stored actions
aligned to rendered frames are ``actions.align``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from egocurate.catalog import tables


def first_present(*values: Any) -> Any:
    """The first value that is neither None nor an empty string."""
    for value in values:
        if value is not None and value != "":
            return value
    return None


def quality_scores(view_row: Mapping[str, Any]) -> list[tuple[str, float]]:
    """The clip's float quality scores from the view (whatever the quality table holds)."""
    out = []
    for fld in tables.CLIP_QUALITY.schema:
        if pa.types.is_floating(fld.type) and fld.name not in ("duration_s", "fps"):
            value = view_row.get(fld.name)
            if value is not None and value == value:
                out.append((fld.name, float(value)))
    return out
