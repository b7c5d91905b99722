"""Labels (given text, captions, zero-shot), corpus statistics SQL and the report renderer."""

from egocurate import lazy_exports

_EXPORTS = {
    "LabelStage": "egocurate.annotate.label_stage",
    "CaptionStage": "egocurate.annotate.captioner",
    "Vocabulary": "egocurate.annotate.vocabulary",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
