"""An inverse dynamics model (IDM): frames (s_t, s_{t+H}) in, the action chunk a_t … a_{t+H−1} out.

Architecture (why: see the README's IDM section): a small ResNet trained from scratch on the two
frames stacked as channels together with their difference (9 channels, "early fusion"), so the very
first convolutions see motion, which is what an IDM must measure. Global average pooling, then an
MLP head that outputs, per step of the chunk, one regression value per continuous action dimension
(on per-dimension normalised actions) and one logit per binary (gripper) dimension.

Checkpoints are two files side by side: ``<name>.safetensors`` (weights only, loaded with
safetensors, never unpickled) and ``<name>.json`` (the :class:`IDMConfig`: model id, action names,
dims, horizon, image size and the normalisation statistics). The checkpoint hash is the sha256 of
the safetensors file.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from egocurate.actions.lam import CheckpointError


class ActionDimError(CheckpointError):
    """An IDM checkpoint whose action space does not fit the dataset it is used with."""


@dataclass(frozen=True)
class IDMConfig:
    """What an IDM checkpoint is: architecture, action space, input size and normalisation."""

    action_names: tuple[str, ...]
    horizon: int = 4
    binary_dims: tuple[int, ...] = ()  # indices of binary (gripper) dims: classification
    height: int = 64
    width: int = 64
    widths: tuple[int, ...] = (32, 64, 96, 128)
    hidden: int = 256
    model_id: str = "idm"
    # per-dimension normalisation of continuous dims; binary dims keep (low, high) in action_low/high
    action_mean: tuple[float, ...] = ()
    action_std: tuple[float, ...] = ()
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {self.horizon}")
        if not self.action_names:
            raise ValueError("an IDM needs at least one action name")
        bad = [d for d in self.binary_dims if not 0 <= d < self.action_dim]
        if bad:
            raise ValueError(f"binary_dims {bad} are outside the {self.action_dim} action dims")

    @property
    def action_dim(self) -> int:
        return len(self.action_names)

    @property
    def continuous_dims(self) -> tuple[int, ...]:
        return tuple(d for d in range(self.action_dim) if d not in self.binary_dims)

    def binary_values(self, dim: int) -> tuple[float, float]:
        """(low, high) real values of a binary dim (0, 1 unless the statistics say otherwise)."""
        if len(self.action_low) == self.action_dim and len(self.action_high) == self.action_dim:
            return float(self.action_low[dim]), float(self.action_high[dim])
        return 0.0, 1.0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IDMConfig:
        """Build from a dict (lists become tuples); unknown keys raise a clear error."""
        names = {f.name for f in fields(cls)}
        unknown = set(raw) - names
        if unknown:
            raise ValueError(f"unknown IDM config keys {sorted(unknown)}; allowed: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


# ----------------------------------------------------------------------------- the network
class ResBlock(nn.Module):
    """Two 3×3 convolutions with GroupNorm and a (strided) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(min(8, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(min(8, cout), cout)
        self.skip = (
            nn.Identity() if stride == 1 and cin == cout else nn.Conv2d(cin, cout, 1, stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(y)) + self.skip(x))


class InverseDynamicsModel(nn.Module):
    """Input uint8-range pairs (B, 2, H, W, 3) as floats in [0, 1]; output a dict of chunk predictions."""

    def __init__(self, config: IDMConfig):
        super().__init__()
        self.config = config
        widths = list(config.widths)
        self.stem = nn.Sequential(
            nn.Conv2d(9, widths[0], 5, 2, 2, bias=False),
            nn.GroupNorm(min(8, widths[0]), widths[0]),
            nn.ReLU(),
        )
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(ResBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        h, a = config.horizon, config.action_dim
        self.head = nn.Sequential(nn.Linear(cin, config.hidden), nn.ReLU(), nn.Linear(config.hidden, h * a))
        mean, std = _norm_vectors(config)
        self.register_buffer("action_mean", mean, persistent=False)
        self.register_buffer("action_std", std, persistent=False)

    def forward(self, pairs: Tensor) -> Tensor:
        """Raw outputs (B, H, A): normalised values for continuous dims, logits for binary dims."""
        x = pairs.permute(0, 1, 4, 2, 3)  # (B, 2, 3, H, W)
        x = torch.cat([x[:, 0], x[:, 1], x[:, 1] - x[:, 0]], dim=1) * 2.0 - 1.0
        feats = self.blocks(self.stem(x)).mean(dim=(2, 3))
        return self.head(feats).view(-1, self.config.horizon, self.config.action_dim)

    # ------------------------------------------------------------------ units
    def normalise(self, actions: Tensor) -> Tensor:
        """Real-unit actions (…, A) → training targets: z-scores, and 0/1 for binary dims."""
        out = (actions - self.action_mean) / self.action_std
        for d in self.config.binary_dims:
            low, high = self.config.binary_values(d)
            out[..., d] = (actions[..., d] > (low + high) / 2).to(out.dtype)
        return out

    def denormalise(self, raw: Tensor) -> Tensor:
        """Network outputs (…, A) → actions in real units (binary dims as their low/high values)."""
        out = raw * self.action_std + self.action_mean
        for d in self.config.binary_dims:
            low, high = self.config.binary_values(d)
            out[..., d] = torch.where(raw[..., d] > 0, raw.new_tensor(high), raw.new_tensor(low)).to(
                out.dtype
            )
        return out

    def loss(self, pairs: Tensor, actions: Tensor) -> dict[str, Tensor]:
        """MSE on normalised continuous dims plus binary cross-entropy on binary dims."""
        return self.loss_from(self(pairs), actions)

    def loss_from(self, raw: Tensor, actions: Tensor) -> dict[str, Tensor]:
        """The loss of raw outputs (B, H, A) (e.g. from a DDP wrapper's forward) against real actions."""
        raw = raw.float()
        target = self.normalise(actions.float())
        cont, binary = list(self.config.continuous_dims), list(self.config.binary_dims)
        zero = raw.new_zeros(())
        mse = F.mse_loss(raw[..., cont], target[..., cont]) if cont else zero
        bce = F.binary_cross_entropy_with_logits(raw[..., binary], target[..., binary]) if binary else zero
        return {"loss": mse + bce, "mse": mse, "bce": bce}

    @torch.no_grad()
    def predict(self, pairs: Tensor) -> Tensor:
        """Action chunks (B, H, A) in real units for pairs (B, 2, H, W, 3) in [0, 1]."""
        return self.denormalise(self(pairs).float())

    # ------------------------------------------------------------------ checkpoints
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``<stem>.safetensors`` and ``<stem>.json``; returns the safetensors path."""
        from safetensors.torch import save_file

        weights = Path(path).with_suffix(".safetensors")
        weights.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        tmp = weights.with_suffix(".tmp")
        save_file(state, str(tmp), metadata={"format": "egocurate-idm"})
        tmp.replace(weights)
        weights.with_suffix(".json").write_text(json.dumps(self.config.as_dict(), indent=2))
        return weights


def _norm_vectors(config: IDMConfig) -> tuple[Tensor, Tensor]:
    a = config.action_dim
    mean = torch.tensor(config.action_mean or [0.0] * a, dtype=torch.float32)
    std = torch.tensor(config.action_std or [1.0] * a, dtype=torch.float32)
    if mean.numel() != a or std.numel() != a:
        raise ValueError(f"normalisation has {mean.numel()} means / {std.numel()} stds for {a} action dims")
    for d in config.binary_dims:
        mean[d], std[d] = 0.0, 1.0
    return mean, std.clamp_min(1e-6)


def action_statistics(actions: np.ndarray, binary_dims: tuple[int, ...]) -> dict[str, tuple[float, ...]]:
    """Per-dimension mean, std, low and high of (N, A) real actions (what the config stores)."""
    actions = np.asarray(actions, np.float64)
    return {
        "action_mean": tuple(float(v) for v in actions.mean(0)),
        "action_std": tuple(float(v) for v in np.maximum(actions.std(0), 1e-6)),
        "action_low": tuple(float(v) for v in actions.min(0)),
        "action_high": tuple(float(v) for v in actions.max(0)),
    }


def checkpoint_hash(path: str | os.PathLike[str]) -> str:
    """sha256 hex digest of the safetensors file."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_idm(
    path: str | os.PathLike[str],
    action_dim: int | None = None,
    map_location: str | torch.device = "cpu",
) -> InverseDynamicsModel:
    """Load ``<stem>.safetensors`` + ``<stem>.json`` safely (no unpickling).

    With `action_dim`, a checkpoint with another number of action dims raises :class:`ActionDimError`.
    """
    from safetensors.torch import load_file

    weights = Path(path).expanduser()
    if weights.suffix != ".safetensors":
        weights = weights.with_suffix(".safetensors")
    sidecar = weights.with_suffix(".json")
    if not weights.is_file():
        raise FileNotFoundError(f"IDM checkpoint not found: {weights}")
    if not sidecar.is_file():
        raise CheckpointError(f"{weights}: no config {sidecar.name} beside it (an IDM checkpoint is both)")
    try:
        config = IDMConfig.from_dict(json.loads(sidecar.read_text()))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{sidecar}: not an IDM config: {exc}") from None
    if action_dim is not None and action_dim != config.action_dim:
        raise ActionDimError(
            f"IDM checkpoint {weights.name} predicts {config.action_dim} action dims "
            f"{list(config.action_names)}, but the dataset has {action_dim}"
        )
    model = InverseDynamicsModel(config)
    try:
        model.load_state_dict(load_file(str(weights)))
    except RuntimeError as exc:
        raise CheckpointError(
            f"{weights}: weights do not fit its config: {str(exc).splitlines()[0]}"
        ) from None
    return model.to(map_location).eval()


def chunk_starts(num_frames: int, horizon: int) -> list[int]:
    """Window starts that cover transitions 0 … num_frames−2 with horizon-H chunks.

    Windows start at 0, H, 2H, …; when H does not divide num_frames−1, one last window ends at the
    last frame (overlapping the one before it, whose overlap it replaces). Empty when the clip is
    shorter than H+1 frames.
    """
    last = num_frames - 1 - horizon
    if last < 0:
        return []
    starts = list(range(0, last + 1, horizon))
    if starts[-1] != last:
        starts.append(last)
    return starts


def stitch_chunks(chunks: np.ndarray, starts: list[int], num_frames: int) -> np.ndarray:
    """Per-transition actions (num_frames−1, A) from chunks (K, H, A) at window `starts`."""
    out = np.zeros((num_frames - 1, chunks.shape[-1]), np.float32)
    for chunk, start in zip(chunks, starts, strict=True):
        out[start : start + len(chunk)] = chunk  # a final overlapping window overwrites with its tail
    return out
