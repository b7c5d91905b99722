"""Labels (given text, captions, zero-shot), corpus statistics SQL and the report renderer."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "label_stage: LabelStage; captioner_stage: CaptionStage; vocabulary: Vocabulary"
))
