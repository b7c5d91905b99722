"""Generators of sample videos and catalogs for the demo, tests and benchmarks (not for pipelines)."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "videos: make_sample_set make_video; catalog: build_sample_catalog"
))
