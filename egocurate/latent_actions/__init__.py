"""Latent actions (DreamDojo's LAM) and video tokenizer latents (Wan VAE) per clip."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "lam_stage: LatentActionStage; tokenizer_stage: TokenizerLatentStage"
))
