"""Filter stages: quality scores, CLIP embeddings and near-duplicate groups."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "quality_stage: QualityStage; embed_stage: EmbedStage; dedup_stage: DedupStage"
))
