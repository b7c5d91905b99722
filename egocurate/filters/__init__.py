"""Filter stages: quality scores, CLIP embeddings and near-duplicate groups."""

from egocurate import lazy_exports

_EXPORTS = {
    "QualityStage": "egocurate.filters.quality",
    "EmbedStage": "egocurate.filters.embed",
    "DedupStage": "egocurate.filters.dedup",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
