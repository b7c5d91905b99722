"""At what size the filters decode a clip's frames (where they come from is ``media.source``)."""

from __future__ import annotations


def scaled_size(width: int | None, height: int | None, long_side: int) -> tuple[int, int] | None:
    """(width, height) with the longer side at most `long_side`, both even; None if size unknown."""
    if not width or not height:
        return None
    scale = min(1.0, long_side / max(width, height))
    return max(2, int(round(width * scale / 2)) * 2), max(2, int(round(height * scale / 2)) * 2)


def resize_short_side(width: int | None, height: int | None, short_side: int) -> tuple[int, int] | None:
    """(width, height) with the shorter side equal to `short_side` (CLIP's resize before its crop)."""
    if not width or not height:
        return None
    scale = short_side / min(width, height)
    return max(short_side, int(round(width * scale))), max(short_side, int(round(height * scale)))
