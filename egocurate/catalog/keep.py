"""The clip view's `keep` column: a SQL boolean over quality and dedup columns, built from thresholds.

Thresholds are applied when reading, never by deleting rows (DESIGN.md), so changing one needs no
recompute. Set them in the pipeline config's ``thresholds`` mapping; a value of ``null`` turns a
default off. A clip whose score is missing (its stage has not run) passes that test. The expression
is plain SQL that DuckDB and Spark SQL both accept.

| threshold | test | default | unit (see ``filters.quality``) |
| --- | --- | --- | --- |
| ``min_motion`` | ``motion >= v`` | 0.2 | % of frame width per second (optical flow) |
| ``max_static_fraction`` | ``static_fraction <= v`` | 0.8 | share of frame pairs without motion |
| ``max_shake`` | ``shake <= v`` | off | % of frame width per second |
| ``min_blur`` | ``blur >= v`` | 15 | Laplacian variance at 256 px (low = blurry) |
| ``min_brightness`` | ``brightness >= v`` | 0.08 | mean luma in [0, 1] |
| ``max_brightness`` | ``brightness <= v`` | 0.92 | mean luma in [0, 1] |
| ``max_dark_fraction`` | ``dark_fraction <= v`` | 0.6 | share of pixels at luma <= 10 |
| ``max_bright_fraction`` | ``bright_fraction <= v`` | 0.5 | share of pixels at luma >= 245 |
| ``max_text_overlay`` | ``text_overlay <= v`` | 0.5 | likelihood of burned-in text |
| ``min_duration_s`` | ``duration_s >= v`` | off | seconds |
| ``min_width`` / ``min_height`` | ``width >= v`` / ``height >= v`` | off | pixels |
| ``min_fps`` | ``fps >= v`` | off | frames per second |
| ``require_representative`` | ``is_representative`` when v != 0 | 1 | one clip per near-dup group |
"""

from __future__ import annotations

import math
from collections.abc import Mapping

# name -> (column, comparison, default); None as default means off unless set.
THRESHOLDS: dict[str, tuple[str, str, float | None]] = {
    "min_motion": ("motion", ">=", 0.2),
    "max_static_fraction": ("static_fraction", "<=", 0.8),
    "max_shake": ("shake", "<=", None),
    "min_blur": ("blur", ">=", 15.0),
    "min_brightness": ("brightness", ">=", 0.08),
    "max_brightness": ("brightness", "<=", 0.92),
    "max_dark_fraction": ("dark_fraction", "<=", 0.6),
    "max_bright_fraction": ("bright_fraction", "<=", 0.5),
    "max_text_overlay": ("text_overlay", "<=", 0.5),
    "min_duration_s": ("duration_s", ">=", None),
    "min_width": ("width", ">=", None),
    "min_height": ("height", ">=", None),
    "min_fps": ("fps", ">=", None),
    "require_representative": ("is_representative", "is", 1.0),
}

DEFAULTS: dict[str, float | None] = {name: spec[2] for name, spec in THRESHOLDS.items()}


def effective_thresholds(thresholds: Mapping[str, float | None] | None = None) -> dict[str, float]:
    """The defaults overridden by `thresholds`, without the ones that are off."""
    given = dict(thresholds or {})
    unknown = sorted(set(given) - set(THRESHOLDS))
    if unknown:
        raise ValueError(f"unknown threshold(s) {unknown}; allowed: {', '.join(THRESHOLDS)}")
    merged = {**DEFAULTS, **given}
    out = {}
    for name, value in merged.items():
        if value is None:
            continue
        number = float(value)
        if math.isnan(number) or math.isinf(number):
            raise ValueError(f"threshold {name} must be a finite number, got {value!r}")
        out[name] = number
    return out


def keep_predicate(thresholds: Mapping[str, float | None] | None = None) -> str:
    """SQL boolean over clip view columns: every enabled threshold holds (missing scores pass)."""
    terms = []
    for name, value in effective_thresholds(thresholds).items():
        column, comparison, _ = THRESHOLDS[name]
        if comparison == "is":
            if value != 0:
                terms.append(f"({column} IS NULL OR {column})")
            continue
        terms.append(f"({column} IS NULL OR {column} {comparison} {value!r})")
    return " AND ".join(terms) if terms else "TRUE"
