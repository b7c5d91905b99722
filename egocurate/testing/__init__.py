"""Generators of sample videos and catalogs for the demo, tests and benchmarks (not for pipelines)."""

from egocurate import lazy_exports

_EXPORTS = {
    "make_sample_set": "egocurate.testing.videos",
    "make_video": "egocurate.testing.videos",
    "build_sample_catalog": "egocurate.testing.catalog",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
