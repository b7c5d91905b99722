"""Latent actions (DreamDojo's LAM) and video tokenizer latents (Wan VAE) per clip."""

from egocurate import lazy_exports

_EXPORTS = {
    "LatentActionStage": "egocurate.latent_actions.lam_stage",
    "TokenizerLatentStage": "egocurate.latent_actions.tokenizer_stage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
