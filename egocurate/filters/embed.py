"""CLIP embeddings per clip: K evenly spaced frames, L2-normalised, mean-pooled, normalised again.

The model is only a name in config (open_clip): a built-in architecture with a pretrained tag
(default ``ViT-B-32`` / ``laion2b_s34b_b79k``), an ``hf-hub:`` or ``local-dir:`` id, or the path of
a model-config JSON. ``pretrained`` is a tag, a local checkpoint file or null (random init from
``seed``, what tests and the demo use with the tiny config shipped in ``model_configs/``). Tags load
from the Hugging Face cache; set ``HF_HUB_OFFLINE=1`` to forbid any download.

On a GPU the stage asks the engine for one (Ray gives each actor its own), runs under bf16 autocast
and decodes the next clips on a CPU thread while the model runs (one thread: decord readers are
not thread-safe).
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

MODEL_CONFIGS = Path(__file__).with_name("model_configs")
TINY_MODEL = (
    "egocurate-tiny-clip"  # random-init test/demo architecture (model_configs/egocurate-tiny-clip.json)
)

Device = Literal["auto", "cpu", "cuda"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]


def model_id_for(model: str, pretrained: str | None, seed: int) -> str:
    """The id stored with every vector: which weights produced it (vectors of two ids never mix)."""
    name = Path(model).stem if model.endswith(".json") else model
    if not pretrained:
        return f"{name}:random-init-seed{seed}"
    weights = Path(pretrained).name if os.path.sep in pretrained else pretrained
    return f"{name}:{weights}"


class UnknownModelError(ValueError):
    """An embed model open_clip does not know (a typo, or a model-config JSON that is not there)."""


def check_model_name(model: str, known: Iterable[str]) -> None:
    """Raise :class:`UnknownModelError` (one line, with the closest names) unless `model` is one of
    `known`, an ``hf-hub:``/``local-dir:`` id or an existing config JSON; open_clip's own error
    lists every architecture it has, some hundred names."""
    if model.startswith(("hf-hub:", "local-dir:")):
        return
    if model.endswith(".json"):
        if not Path(model).is_file():
            raise UnknownModelError(f"embed model config not found: {model}")
        return
    known = sorted(known)
    if model in known:
        return
    close = difflib.get_close_matches(model, known, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownModelError(
        f"unknown embed model {model!r}; {hint}give an open_clip architecture "
        f"(one of {len(known)}, e.g. ViT-B-32 or {TINY_MODEL}), an hf-hub: or local-dir: id, "
        "or a model-config JSON"
    )


def load_model(
    model: str, pretrained: str | None, seed: int, device: str, cache_dir: str | None = None
) -> Any:
    """An open_clip model in eval mode on `device` (random init is seeded, so every worker agrees)."""
    import open_clip
    import torch

    open_clip.add_model_config(MODEL_CONFIGS)
    check_model_name(model, open_clip.list_models())
    name = model
    if model.endswith(".json"):
        open_clip.add_model_config(model)
        name = Path(model).stem
    if not pretrained:
        torch.manual_seed(seed)
    clip = open_clip.create_model(name, pretrained=pretrained or None, device=device, cache_dir=cache_dir)
    return clip.eval()


def pool(frame_embeddings: np.ndarray, counts: Sequence[int]) -> np.ndarray:
    """Per clip: L2-normalise its frames' embeddings, average them, normalise the mean."""
    normed = frame_embeddings / np.maximum(np.linalg.norm(frame_embeddings, axis=1, keepdims=True), 1e-12)
    out, offset = [], 0
    for count in counts:
        mean = normed[offset : offset + count].mean(axis=0)
        out.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        offset += count
    return np.stack(out) if out else np.zeros((0, frame_embeddings.shape[1]), np.float32)
