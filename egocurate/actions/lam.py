"""DreamDojo's latent action model (LAM): a spatiotemporal Transformer VAE over frame pairs.

Parameter names and maths follow DreamDojo's released LAM (``LAM_400k.ckpt``, a Lightning checkpoint
whose ``state_dict`` keys carry the prefix ``lam.``), so its weights load unchanged and give the same
latents. The computation (see ``/work/shared/fixtures/dreamdojo_lam/README.md``):

1. patchify both frames into p×p patches, row-major, each flattened as (row, col, channel);
2. prepend the learned ``action_prompt`` token to each frame's patches;
3. encoder: LayerNorm→Linear→LayerNorm, sinusoidal positions over tokens, then blocks of pre-norm
   spatial attention, temporal attention with rotary embedding, and a GELU MLP;
4. the action token of frame 2 goes through ``fc`` to μ and log-variance (32-d each);
5. decoder: ``patch_up(frame-1 patches) + action_up(z)``, spatial-only blocks, ``out`` and a sigmoid.

Attention uses ``torch.nn.functional.scaled_dot_product_attention`` (fused kernels on GPU and CPU).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STATE_DICT_PREFIX = "lam."


@dataclass(frozen=True)
class LAMConfig:
    """Architecture of a latent action model. The defaults are DreamDojo's released LAM (~700M)."""

    model_dim: int = 1024
    latent_dim: int = 32
    patch_size: int = 16
    enc_blocks: int = 24
    dec_blocks: int = 24
    num_heads: int = 16
    in_channels: int = 3
    causal_temporal: bool = False  # DreamDojo's encoder attends over both frames of a pair

    @property
    def patch_dim(self) -> int:
        return self.in_channels * self.patch_size**2

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> LAMConfig:
        """Build from a dict, ignoring keys that are not config fields (e.g. training settings)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ----------------------------------------------------------------------------- patches
def patchify(videos: Tensor, size: int) -> Tensor:
    """(B, T, H, W, C) → (B, T, N, p·p·C); H and W are cropped down to multiples of `size`."""
    b, t, h, w, c = videos.shape
    hn, wn = h // size, w // size
    x = videos[:, :, : hn * size, : wn * size, :]
    x = x.reshape(b, t, hn, size, wn, size, c).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, hn * wn, size * size * c)


def unpatchify(patches: Tensor, size: int, height: int, width: int, channels: int = 3) -> Tensor:
    """(B, T, N, p·p·C) → (B, T, H', W', C) with H', W' the multiples of `size` inside (height, width)."""
    b, t, _, _ = patches.shape
    hn, wn = height // size, width // size
    x = patches.reshape(b, t, hn, wn, size, size, channels).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, hn * size, wn * size, channels)


def sinusoidal_positions(length: int, dim: int, device: torch.device | None = None) -> Tensor:
    """Fixed (length, dim) encoding: sin on even dims, cos on odd dims, base 10000."""
    position = torch.arange(length, dtype=torch.float32, device=device)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32, device=device) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim, device=device)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div)
    return pe


# ----------------------------------------------------------------------------- attention
class RotaryEmbedding(nn.Module):
    """Rotary position embedding with interleaved pairs; ``freqs`` is stored in the checkpoint."""

    def __init__(self, dim: int, theta: float = 10000.0):
        super().__init__()
        freqs = 1.0 / (theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim))
        self.freqs = nn.Parameter(freqs, requires_grad=False)

    def rotate(self, x: Tensor) -> Tensor:
        """Rotate q or k of shape (..., n, d) by positions 0..n−1."""
        n = x.shape[-2]
        positions = torch.arange(n, device=x.device, dtype=self.freqs.dtype)
        angles = torch.repeat_interleave(positions[:, None] * self.freqs[None, :], 2, dim=-1)  # (n, d)
        cos, sin = angles.cos().to(x.dtype), angles.sin().to(x.dtype)
        pairs = x.unflatten(-1, (-1, 2))
        rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
        return x * cos + rotated * sin


class SelfAttention(nn.Module):
    """Multi-head self-attention: q, k, v without bias, heads split as (h d), ``to_out.0`` with bias."""

    def __init__(self, dim: int, heads: int, rotary: bool = False, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model_dim {dim} is not divisible by num_heads {heads}")
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))
        self.rotary_embedding = RotaryEmbedding(dim // heads) if rotary else None

    def forward(self, x: Tensor, causal: bool = False) -> Tensor:
        b, n, _ = x.shape
        q, k, v = (
            proj(x).view(b, n, self.heads, -1).transpose(1, 2) for proj in (self.to_q, self.to_k, self.to_v)
        )
        if self.rotary_embedding is not None:
            q, k = self.rotary_embedding.rotate(q), self.rotary_embedding.rotate(k)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def _mlp(dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * dim, dim))


class SpatioTemporalBlock(nn.Module):
    """Pre-norm spatial attention, temporal attention (rotary), MLP; input (B, T, S, E)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.spatial_attn = SelfAttention(dim, heads, dropout=dropout)
        self.temporal_attn = SelfAttention(dim, heads, rotary=True, dropout=dropout)
        self.ffn = _mlp(dim, dropout)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor, causal_temporal: bool = False) -> Tensor:
        b, t, s, e = x.shape
        x = x + self.spatial_attn(self.norm1(x.reshape(b * t, s, e))).view(b, t, s, e)
        xt = x.transpose(1, 2).reshape(b * s, t, e)
        xt = xt + self.temporal_attn(self.norm2(xt), causal=causal_temporal)
        x = xt.view(b, s, t, e).transpose(1, 2)
        return x + self.ffn(self.norm3(x))


class SpatioBlock(nn.Module):
    """Pre-norm spatial attention then MLP; input (B, T, S, E)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.spatial_attn = SelfAttention(dim, heads, dropout=dropout)
        self.ffn = _mlp(dim, dropout)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        b, t, s, e = x.shape
        x = x + self.spatial_attn(self.norm1(x.reshape(b * t, s, e))).view(b, t, s, e)
        return x + self.ffn(self.norm2(x))


class _Transformer(nn.Module):
    """Input projection, sinusoidal token positions, blocks, output projection."""

    def __init__(self, in_dim: int, dim: int, out_dim: int, blocks: list[nn.Module]):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, dim), nn.LayerNorm(dim))
        self.transformer_blocks = nn.ModuleList(blocks)
        self.out = nn.Linear(dim, out_dim)

    def embed(self, x: Tensor) -> Tensor:
        x = self.ffn(x)
        return x + sinusoidal_positions(x.shape[2], x.shape[3], x.device).to(x.dtype)


class SpatioTemporalTransformer(_Transformer):
    def __init__(
        self,
        in_dim: int,
        dim: int,
        out_dim: int,
        num_blocks: int,
        heads: int,
        dropout: float = 0.0,
        causal_temporal: bool = False,
    ):
        super().__init__(
            in_dim, dim, out_dim, [SpatioTemporalBlock(dim, heads, dropout) for _ in range(num_blocks)]
        )
        self.causal_temporal = causal_temporal

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        for block in self.transformer_blocks:
            x = block(x, self.causal_temporal)
        return self.out(x)


class SpatioTransformer(_Transformer):
    def __init__(
        self, in_dim: int, dim: int, out_dim: int, num_blocks: int, heads: int, dropout: float = 0.0
    ):
        super().__init__(in_dim, dim, out_dim, [SpatioBlock(dim, heads, dropout) for _ in range(num_blocks)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        for block in self.transformer_blocks:
            x = block(x)
        return self.out(x)


# ----------------------------------------------------------------------------- the model
class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded as asked (unsafe pickle, wrong keys, unknown format)."""


class LatentActionModel(nn.Module):
    """DreamDojo's LAM. Inputs are (B, T, H, W, 3) floats in [0, 1]; the DreamDojo size is 240×320."""

    def __init__(self, config: LAMConfig | None = None, dropout: float = 0.0):
        super().__init__()
        self.config = config = config or LAMConfig()
        d, p = config.model_dim, config.patch_dim
        self.action_prompt = nn.Parameter(torch.empty(1, 1, 1, p).uniform_(-1, 1))
        self.encoder = SpatioTemporalTransformer(
            p, d, d, config.enc_blocks, config.num_heads, dropout, causal_temporal=config.causal_temporal
        )
        self.fc = nn.Linear(d, 2 * config.latent_dim)
        self.patch_up = nn.Linear(p, d)
        self.action_up = nn.Linear(config.latent_dim, d)
        self.decoder = SpatioTransformer(d, d, p, config.dec_blocks, config.num_heads, dropout)

    # ------------------------------------------------------------------ maths
    def encode(self, videos: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """μ and log-variance (B, T−1, latent_dim) of each transition, and the patches (B, T, N, p·p·C)."""
        b, t = videos.shape[:2]
        patches = patchify(videos, self.config.patch_size)
        prompt = self.action_prompt.to(patches.dtype).expand(b, t, 1, -1)
        tokens = self.encoder(torch.cat([prompt, patches], dim=2))  # (B, T, 1+N, E)
        moments = self.fc(tokens[:, 1:, 0])  # action tokens of frames 2..T
        z_mu, z_logvar = moments.chunk(2, dim=-1)
        return z_mu, z_logvar, patches

    def decode(self, patches: Tensor, z: Tensor, height: int, width: int) -> Tensor:
        """Predict frames 2..T from the patches of frames 1..T−1 (B, T−1, N, ·) and z (B, T−1, latent_dim)."""
        x = self.patch_up(patches) + self.action_up(z)[:, :, None, :]
        out = torch.sigmoid(self.decoder(x))
        return unpatchify(out, self.config.patch_size, height, width, self.config.in_channels)

    def forward(self, videos: Tensor, sample: bool | None = None) -> dict[str, Tensor]:
        """Encode, draw z (μ in eval mode, μ + σ·ε when training), and reconstruct frames 2..T."""
        sample = self.training if sample is None else sample
        z_mu, z_logvar, patches = self.encode(videos)
        z = z_mu + torch.randn_like(z_mu) * torch.exp(0.5 * z_logvar) if sample else z_mu
        recon = self.decode(patches[:, :-1], z, videos.shape[2], videos.shape[3])
        return {"z_mu": z_mu, "z_logvar": z_logvar, "z": z, "recon": recon}

    @torch.no_grad()
    def encode_pairs(self, pairs: Tensor) -> tuple[Tensor, Tensor]:
        """μ and log-variance (B, latent_dim) of frame pairs (B, 2, H, W, 3)."""
        z_mu, z_logvar, _ = self.encode(pairs)
        return z_mu[:, 0], z_logvar[:, 0]

    # ------------------------------------------------------------------ weights
    @classmethod
    def from_state_dict(cls, state: dict[str, Tensor], config: LAMConfig | None = None) -> LatentActionModel:
        """A model with `state` loaded strictly (``lam.`` prefixes stripped, config inferred if absent)."""
        state = strip_prefix(state)
        model = cls(config or infer_config(state))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"state dict does not match the LAM architecture: missing {sorted(missing)[:8]}, "
                f"unexpected {sorted(unexpected)[:8]}"
            )
        return model.eval()

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        config: LAMConfig | None = None,
        trust_checkpoint: bool = False,
        map_location: str | torch.device = "cpu",
    ) -> LatentActionModel:
        """Load a Lightning ``.ckpt`` (``weights_only=True`` unless trusted) or a ``.safetensors`` file.

        The config comes from `config`, else a ``<stem>.json`` next to the file, else the weights' shapes.
        """
        state = load_state_dict(path, trust_checkpoint=trust_checkpoint, map_location=map_location)
        return cls.from_state_dict(state, config or sidecar_config(path)).to(map_location)

    def save_safetensors(self, path: str | os.PathLike[str], prefix: str = STATE_DICT_PREFIX) -> None:
        """Write the weights (keys with `prefix`, as in DreamDojo's checkpoint) and a config sidecar."""
        from safetensors.torch import save_file

        state = {f"{prefix}{k}": v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(path), metadata={"lam_config": json.dumps(self.config.as_dict())})


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------- checkpoint loading
def strip_prefix(state: dict[str, Tensor], prefix: str = STATE_DICT_PREFIX) -> dict[str, Tensor]:
    """Keep the LAM's own keys: those under `prefix` when any are, with the prefix removed."""
    if any(k.startswith(prefix) for k in state):
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return dict(state)


def infer_config(state: dict[str, Tensor]) -> LAMConfig:
    """The architecture implied by parameter shapes (heads from the rotary ``freqs`` length)."""
    state = strip_prefix(state)
    try:
        model_dim = state["fc.weight"].shape[1]
        latent_dim = state["fc.weight"].shape[0] // 2
        patch_dim = state["action_prompt"].shape[-1]
        head_dim = 2 * state["encoder.transformer_blocks.0.temporal_attn.rotary_embedding.freqs"].shape[0]
    except KeyError as exc:
        raise CheckpointError(f"not a latent action model state dict: no {exc.args[0]!r}") from None
    patch_size = int(round(math.sqrt(patch_dim / 3)))
    pattern = re.compile(r"^(encoder|decoder)\.transformer_blocks\.(\d+)\.")
    blocks = {"encoder": -1, "decoder": -1}
    for key in state:
        if match := pattern.match(key):
            blocks[match[1]] = max(blocks[match[1]], int(match[2]))
    return LAMConfig(
        model_dim=model_dim,
        latent_dim=latent_dim,
        patch_size=patch_size,
        enc_blocks=blocks["encoder"] + 1,
        dec_blocks=blocks["decoder"] + 1,
        num_heads=model_dim // head_dim,
    )


def sidecar_config(path: str | os.PathLike[str]) -> LAMConfig | None:
    """Config from ``<stem>.json`` (or ``<name>.json``) beside a checkpoint, or from safetensors metadata."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        if "lam_config" in meta:
            return LAMConfig.from_dict(json.loads(meta["lam_config"]))
    stem = path.name.split(".")[0]
    for candidate in (path.with_name(f"{stem}.json"), Path(f"{path}.json")):
        if candidate.is_file():
            raw = json.loads(candidate.read_text())
            config = raw.get("config") or raw.get("lam_config")
            if isinstance(config, dict):
                return LAMConfig.from_dict(config)
    return None


def load_state_dict(
    path: str | os.PathLike[str], trust_checkpoint: bool = False, map_location: str | torch.device = "cpu"
) -> dict[str, Tensor]:
    """The raw state dict of a safetensors file or a (Lightning) torch checkpoint.

    Torch checkpoints load with ``weights_only=True``; one that needs arbitrary unpickling raises
    :class:`CheckpointError` unless `trust_checkpoint` is set (CLI: ``--trust-checkpoint``), because
    unpickling an untrusted file can run any code.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"LAM checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    try:
        raw = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        if not trust_checkpoint:
            raise CheckpointError(
                f"{path} cannot be loaded safely with torch.load(weights_only=True): "
                f"{str(exc).splitlines()[0][:300]}\n"
                "It holds pickled Python objects besides tensors. If you trust where it came from, pass "
                "trust_checkpoint=True (CLI: --trust-checkpoint) to unpickle it, or convert it once with "
                "`egocurate lam convert --trust-checkpoint` and use the safetensors file from then on."
            ) from None
        raw = torch.load(path, map_location=map_location, weights_only=False)
    if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
        raw = raw["state_dict"]  # a Lightning checkpoint
    if not isinstance(raw, dict) or not all(isinstance(v, Tensor) for v in raw.values()):
        raise CheckpointError(f"{path}: expected a state dict (or a Lightning checkpoint with `state_dict`)")
    return raw
