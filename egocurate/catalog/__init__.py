"""The Delta catalog: the only state (tables, SQL over them, read-time thresholds)."""

from egocurate import lazy_exports

_EXPORTS = {
    "Catalog": "egocurate.catalog.store",
    "sql": "egocurate.catalog.query",
    "clip_view": "egocurate.catalog.query",
    "connect": "egocurate.catalog.query",
    "register_spark_views": "egocurate.catalog.query",
    "select_clips": "egocurate.catalog.selection",
    "keep_predicate": "egocurate.catalog.keep",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
