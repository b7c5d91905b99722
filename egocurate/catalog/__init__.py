"""The Delta catalog: the only state (tables, SQL over them, read-time thresholds)."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "store: Catalog; query: sql clip_view connect register_spark_views; selection: select_clips; keep: "
    "keep_predicate"
))
