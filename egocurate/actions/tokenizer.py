"""Wan video VAE latents through diffusers' ``AutoencoderKLWan``: the space DreamDojo's world model learns in.

- ``wan2.1`` (default): 16 channels, temporal compression 4, spatial 8; 13 frames at 480×640 give a
  (16, 4, 60, 80) latent.
- ``wan2.2``: the 48-channel VAE of Wan2.2-TI2V-5B (patch 2, spatial 16).

Weights load from a local diffusers folder, a ``.safetensors`` file with diffusers keys, or a Hugging
Face repo id resolved from the local cache (``HF_HUB_OFFLINE`` is respected: nothing is downloaded
when it is set). Without weights the VAE is random-init, which costs the same compute (benchmarks)
or, with ``tiny=True``, a small config for tests (base_dim 16, dim_mult [1, 1, 1, 1]).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Variant = Literal["wan2.1", "wan2.2"]

WAN22_LATENTS_MEAN = [
    -0.2289,
    -0.0052,
    -0.1323,
    -0.2339,
    -0.2799,
    0.0174,
    0.1838,
    0.1557,
    -0.1382,
    0.0542,
    0.2813,
    0.0891,
    0.1570,
    -0.0098,
    0.0375,
    -0.1825,
    -0.2246,
    -0.1207,
    -0.0698,
    0.5109,
    0.2665,
    -0.2108,
    -0.2158,
    0.2502,
    -0.2055,
    -0.0322,
    0.1109,
    0.1567,
    -0.0729,
    0.0899,
    -0.2799,
    -0.1230,
    -0.0313,
    -0.1649,
    0.0117,
    0.0723,
    -0.2839,
    -0.2083,
    -0.0520,
    0.3748,
    0.0152,
    0.1957,
    0.1433,
    -0.2944,
    0.3573,
    -0.0548,
    -0.1681,
    -0.0667,
]
WAN22_LATENTS_STD = [
    0.4765,
    1.0364,
    0.4514,
    1.1677,
    0.5313,
    0.4990,
    0.4818,
    0.5013,
    0.8158,
    1.0344,
    0.5894,
    1.0901,
    0.6885,
    0.6165,
    0.8454,
    0.4978,
    0.5759,
    0.3523,
    0.7135,
    0.6804,
    0.5833,
    1.4146,
    0.8986,
    0.5659,
    0.7069,
    0.5338,
    0.4889,
    0.4917,
    0.4069,
    0.4999,
    0.6866,
    0.4093,
    0.5709,
    0.6065,
    0.6415,
    0.4944,
    0.5726,
    1.2042,
    0.5458,
    1.6887,
    0.3971,
    1.0600,
    0.3943,
    0.5537,
    0.5444,
    0.4089,
    0.7468,
    0.7744,
]


@dataclass(frozen=True)
class WanVariant:
    """A Wan VAE: its diffusers config (over diffusers' defaults, which are Wan2.1) and default repo."""

    name: str
    repo_id: str
    config: dict[str, Any] = field(default_factory=dict)
    tiny: dict[str, Any] = field(default_factory=dict)
    channels: int = 16
    spatial: int = 8
    temporal: int = 4


TINY = {"base_dim": 16, "dim_mult": [1, 1, 1, 1], "num_res_blocks": 1}
VARIANTS: dict[str, WanVariant] = {
    "wan2.1": WanVariant("wan2.1", "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", {}, TINY),
    "wan2.2": WanVariant(
        "wan2.2",
        "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
        {
            "base_dim": 160,
            "decoder_base_dim": 256,
            "z_dim": 48,
            "in_channels": 12,
            "out_channels": 12,
            "patch_size": 2,
            "is_residual": True,
            "scale_factor_spatial": 16,
            "scale_factor_temporal": 4,
            "temperal_downsample": [False, True, True],
            "latents_mean": WAN22_LATENTS_MEAN,
            "latents_std": WAN22_LATENTS_STD,
        },
        {**TINY, "decoder_base_dim": 16},
        channels=48,
        spatial=16,
    ),
}


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() not in ("", "0", "false", "no", "off")


def latent_shape(variant: Variant, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
    """(C, 1+k, H/s, W/s) for a window of `frames` = 1+4k frames."""
    v = VARIANTS[variant]
    if (frames - 1) % v.temporal:
        raise ValueError(f"{variant} encodes 1+{v.temporal}k frames; got {frames}")
    return v.channels, 1 + (frames - 1) // v.temporal, height // v.spatial, width // v.spatial


class WanTokenizer:
    """Encode uint8 video windows (B, T=1+4k, H, W, 3) into the Wan VAE's latent mean μ."""

    def __init__(
        self,
        variant: Variant = "wan2.1",
        weights: str | None = None,
        subfolder: str = "vae",
        cache_dir: str | None = None,
        tiny: bool = False,
        seed: int = 0,
        device: str = "cpu",
        dtype: Any = None,
        tiling: bool = False,
        slicing: bool = False,
    ):
        import torch
        from diffusers import AutoencoderKLWan

        if variant not in VARIANTS:
            raise ValueError(f"unknown Wan variant {variant!r}; allowed: {', '.join(VARIANTS)}")
        self.variant = VARIANTS[variant]
        self.device, self.dtype = device, dtype or torch.float32
        if weights:
            self.vae = load_vae(weights, subfolder=subfolder, cache_dir=cache_dir, variant=variant)
            self.id = f"{variant}-vae:{weights}"
        else:
            config = {**self.variant.config, **(self.variant.tiny if tiny else {})}
            torch.manual_seed(seed)
            self.vae = AutoencoderKLWan(**config)
            self.id = f"{variant}-vae-random-init{'-tiny' if tiny else ''}-seed{seed}"
        self.vae = self.vae.to(device=device).eval().requires_grad_(False)
        if self.dtype != torch.float32:
            self.vae = self.vae.to(dtype=self.dtype)
        if tiling:
            self.vae.enable_tiling()
        if slicing:
            self.vae.enable_slicing()

    @property
    def latents_mean(self) -> list[float]:
        return [float(v) for v in self.vae.config.latents_mean]

    @property
    def latents_std(self) -> list[float]:
        return [float(v) for v in self.vae.config.latents_std]

    def to_input(self, frames) -> Any:
        """uint8 (B, T, H, W, 3) → (B, 3, T, H, W) in [-1, 1] on the VAE's device and dtype."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(frames)) if isinstance(frames, np.ndarray) else frames
        if self.device.startswith("cuda"):
            x = x.pin_memory().to(self.device, non_blocking=True)
        x = x.to(self.device).permute(0, 4, 1, 2, 3).to(self.dtype)
        return x.div_(127.5).sub_(1.0)

    def encode(self, frames) -> Any:
        """μ (B, C, 1+k, H/s, W/s) of uint8 windows (B, 1+4k, H, W, 3), as a float32 CPU tensor."""
        import torch

        t = frames.shape[1]
        if (t - 1) % self.variant.temporal:
            raise ValueError(f"{self.variant.name} encodes 1+{self.variant.temporal}k frames; got {t}")
        with torch.inference_mode():
            mu = self.vae.encode(self.to_input(frames)).latent_dist.mean
        return mu.float().cpu()


def load_vae(weights: str, subfolder: str = "vae", cache_dir: str | None = None, variant: Variant = "wan2.1"):
    """An ``AutoencoderKLWan`` from a diffusers folder, a safetensors file or a cached Hub repo id."""
    from diffusers import AutoencoderKLWan

    path = Path(weights).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return AutoencoderKLWan.from_pretrained(str(path))
        if (path / subfolder / "config.json").is_file():
            return AutoencoderKLWan.from_pretrained(str(path), subfolder=subfolder)
        raise FileNotFoundError(f"{path}: no config.json (nor {subfolder}/config.json) of a diffusers VAE")
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(
                f"{path}: expected a diffusers folder or a .safetensors file with diffusers keys"
            )
        from safetensors.torch import load_file

        vae = AutoencoderKLWan(**VARIANTS[variant].config)
        missing, unexpected = vae.load_state_dict(load_file(str(path)), strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: not a {variant} VAE state dict (missing {missing[:4]}, unexpected {unexpected[:4]})"
            )
        return vae
    if "/" not in weights or weights.startswith((".", "/", "~")):
        raise FileNotFoundError(f"Wan VAE weights not found: {weights}")
    try:  # a Hub repo id: from the local cache, never downloaded when HF_HUB_OFFLINE is set
        return AutoencoderKLWan.from_pretrained(
            weights, subfolder=subfolder or None, cache_dir=cache_dir, local_files_only=hub_offline()
        )
    except OSError as exc:
        raise FileNotFoundError(
            f"Wan VAE {weights!r} is not in the Hugging Face cache"
            f"{' (HF_HUB_OFFLINE is set, so nothing is downloaded)' if hub_offline() else ''}: {exc}"
        ) from None
