"""Arrays stored in catalog rows as raw little-endian bytes plus a shape column.

float16 for latent actions (small, exact enough for 32-d Gaussians) and bfloat16 for tokenizer
latents (the dtype world-model trainers consume). Bytes plus shape are readable from any language
and keep Parquet files compact; the helpers here are the one place that packs and unpacks them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pack_f16(array) -> tuple[bytes, list[int]]:
    """(float16 bytes, shape) of a numpy array or torch tensor."""
    if hasattr(array, "detach"):
        array = array.detach().float().cpu().numpy()
    arr = np.ascontiguousarray(np.asarray(array, dtype="<f2"))
    return arr.tobytes(), [int(s) for s in arr.shape]


def unpack_f16(data: bytes, shape: Sequence[int]) -> np.ndarray:
    """float32 numpy array from float16 bytes and a shape."""
    return np.frombuffer(data, dtype="<f2").reshape([int(s) for s in shape]).astype(np.float32)


def pack_bf16(tensor) -> tuple[bytes, list[int]]:
    """(bfloat16 bytes, shape) of a torch tensor (bfloat16 is the upper half of float32)."""
    import torch

    t = tensor.detach().to(torch.bfloat16).contiguous().cpu()
    return t.view(torch.int16).numpy().astype("<i2").tobytes(), [int(s) for s in t.shape]


def unpack_bf16(data: bytes, shape: Sequence[int]):
    """float32 torch tensor from bfloat16 bytes and a shape."""
    import torch

    raw = np.frombuffer(data, dtype="<i2").copy()
    return torch.from_numpy(raw).view(torch.bfloat16).reshape([int(s) for s in shape]).float()
