"""Actions per clip: latent actions (DreamDojo's LAM), IDM pseudo-actions, the models' training, and
the aligners that match stored actions to rendered frames (`align`); also the video tokenizer
latents (Wan VAE), whose stage shares their frame reading and packing."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "lam_stage: LatentActionStage; tokenizer_stage: TokenizerLatentStage"
))
