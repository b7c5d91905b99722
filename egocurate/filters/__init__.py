"""Filter stages: quality scores, CLIP embeddings and near-duplicate groups."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, "quality: QualityStage; embed: EmbedStage; dedup: DedupStage")
