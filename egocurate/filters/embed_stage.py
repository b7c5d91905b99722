"""The ``embed`` stage: one CLIP vector per clip from K frames (see ``filters.embed``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from egocurate.catalog import tables
from egocurate.filters.embed import MODEL_CONFIGS, Device, Precision, load_model, model_id_for, pool
from egocurate.filters.frames import resize_short_side
from egocurate.filters.vectors import encode_vectors
from egocurate.media.crop import center_crop
from egocurate.media.decode import (
    FramePlan,
    FrameRequest,
    attach_frames,
    frames_of,
    read_plan,
    sample_indices,
)
from egocurate.media.source import ClipSource, clip_source
from egocurate.stage_base import BaseStage, Resources


class EmbedStage(BaseStage):
    """One CLIP vector per clip (float16 bytes, see ``filters.vectors``, with its model id) from K frames."""

    name = "embed"
    input_key = "clip_id"
    output_table = tables.CLIP_EMBEDDINGS.name
    reads = ("uri", "start_frame", "end_frame")
    has_prepare = True  # on Ray, CPU workers decode ahead of the (GPU) model actors

    def __init__(
        self,
        model: str = "ViT-B-32",
        pretrained: str | None = "laion2b_s34b_b79k",
        seed: int = 0,
        num_frames: int = 4,
        batch_size: int = 32,
        frame_batch_size: int = 128,
        device: Device = "auto",
        precision: Precision = "auto",
        prefetch: bool = True,
        cache_dir: str | None = None,
        cpus: float | None = None,
        gpus: float | None = None,
        concurrency: int | None = None,
    ):
        if num_frames < 1 or frame_batch_size < 1:
            raise ValueError("num_frames and frame_batch_size must be >= 1")
        self.model_name, self.pretrained, self.seed = model, pretrained, seed
        self.num_frames, self.frame_batch_size = num_frames, frame_batch_size
        self.device_choice, self.precision, self.cache_dir = device, precision, cache_dir
        self.prefetch = prefetch
        self.model_id = model_id_for(model, pretrained, seed)
        if gpus is None:
            gpus = 1.0 if device == "cuda" or (device == "auto" and _cuda_available()) else 0.0
        self.threads = None if cpus is None else max(1, int(cpus))  # torch threads, only when asked
        self.resources = Resources(
            cpus=cpus or 1.0, gpus=gpus, batch_size=batch_size, concurrency=concurrency
        )
        self.prepare_resources = Resources(cpus=1.0, batch_size=batch_size)
        self._model: Any = None
        self._config_size: tuple[int, int] | None = None

    # ------------------------------------------------------------------ model
    def setup(self) -> None:
        """Load the model once per worker and pick device and precision."""
        import torch

        if self._model is not None:
            return
        device = self.device_choice
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        self._model = load_model(self.model_name, self.pretrained, self.seed, device, self.cache_dir)
        visual = self._model.visual
        size = visual.image_size
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        cfg = getattr(visual, "preprocess_cfg", {}) or {}
        self.mean = torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073)), device=device).view(
            1, 3, 1, 1
        )
        self.std = torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711)), device=device).view(
            1, 3, 1, 1
        )
        precision = self.precision
        if precision == "auto":
            precision = "bf16" if device == "cuda" else "fp32"
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        if device == "cpu" and self.threads is not None:
            torch.set_num_threads(self.threads)  # process-wide: only when `cpus` is configured

    def embed_images(self, images: np.ndarray) -> np.ndarray:
        """Frame embeddings (N, D) float32 of uint8 RGB images already at the model's input size."""
        import torch

        out = []
        for offset in range(0, len(images), self.frame_batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(images[offset : offset + self.frame_batch_size]))
            if self.device == "cuda":
                chunk = chunk.pin_memory().to(self.device, non_blocking=True)
            x = (chunk.permute(0, 3, 1, 2).float() / 255.0 - self.mean) / self.std
            with (
                torch.inference_mode(),
                torch.autocast(
                    device_type="cuda" if self.device == "cuda" else "cpu",
                    dtype=self.autocast_dtype or torch.float32,
                    enabled=self.autocast_dtype is not None,
                ),
            ):
                features = self._model.encode_image(x)
            out.append(features.float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    # ------------------------------------------------------------------ frames
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model takes, read from its open_clip config: no weights are loaded."""
        if self._model is not None:
            return self.image_size
        if self._config_size is not None:  # read once: a fused pass asks for every row
            return self._config_size
        import open_clip

        open_clip.add_model_config(MODEL_CONFIGS)
        name = self.model_name
        if name.endswith(".json"):
            open_clip.add_model_config(name)
            name = Path(name).stem
        size = (open_clip.get_model_config(name) or {}).get("vision_cfg", {}).get("image_size", 224)
        self._config_size = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return self._config_size

    def _plan(self, source: ClipSource) -> FramePlan:
        indices = tuple(sample_indices(source.start, source.end, min(self.num_frames, source.num_frames)))
        target_h, target_w = self.input_size()
        size = resize_short_side(source.width, source.height, max(target_h, target_w))
        return FramePlan(source.uri, FrameRequest(indices=indices, size=size))

    def _fit(self, frames: np.ndarray) -> np.ndarray:
        """Decoded frames resized (short side) when decoded at native size, then centre-cropped."""
        target_h, target_w = self.input_size()
        if len(frames):
            import cv2

            h, w = frames.shape[1:3]
            size = resize_short_side(w, h, max(target_h, target_w))
            if size != (w, h):
                frames = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames])
        return center_crop(frames, target_h, target_w)

    def prepare(self, batch: pa.Table) -> pa.Table:
        """CPU step: each clip's frames decoded into the batch (``process`` decodes what is missing)."""
        return attach_frames(batch, self.frame_plan)

    def frame_plan(self, row: dict) -> FramePlan | None:
        try:
            source = clip_source(row)
        except (KeyError, TypeError, ValueError):
            return None
        return self._plan(source) if source.num_frames >= 1 else None

    def clip_frames(self, source: ClipSource) -> np.ndarray:
        """K evenly spaced frames of the clip, resized (short side) and centre-cropped for the model.

        Decoded by ``media.decode.read_plan``: the same frames a decode shared with other stages gives.
        """
        return self._fit(read_plan(self._plan(source)))

    def _decode(self, row: dict) -> tuple[np.ndarray | None, str | None, str | None]:
        """(frames, error kind, error message) of one clip."""
        try:
            source = clip_source(row)
        except (KeyError, TypeError, ValueError) as exc:
            return None, tables.ABSURD_METADATA, str(exc)
        if source.num_frames < 1:
            return None, tables.TOO_SHORT, "clip has no frames"
        try:
            shared = frames_of(row)  # decoded once for several stages (jobs.fused)
            frames = self._fit(shared) if shared is not None else self.clip_frames(source)
        except Exception as exc:  # decord raises its own error types for broken files
            return None, tables.DECODE_ERROR, f"{type(exc).__name__}: {exc}"[:2000]
        if len(frames) == 0:
            return None, tables.TOO_SHORT, "no frames decoded"
        return frames, None, None

    def process(self, batch: pa.Table) -> pa.Table:
        """Embed a batch, decoding the next group of clips while the model runs on the current one.

        One decoding thread at most: decord readers are not safe to use from several threads.
        """
        self.setup()
        rows = batch.to_pylist()
        step = max(1, self.frame_batch_size // self.num_frames)
        groups = [rows[i : i + step] for i in range(0, len(rows), step)]
        good_rows, vectors, bad = [], [], []

        def decode(group: list[dict]) -> list[tuple[np.ndarray | None, str | None, str | None]]:
            return [self._decode(row) for row in group]

        with ThreadPoolExecutor(1) as prefetch:
            pending = prefetch.submit(decode, groups[0]) if groups and self.prefetch else None
            for index, group in enumerate(groups):
                decoded = pending.result() if pending is not None else decode(group)
                following = index + 1 < len(groups) and self.prefetch
                pending = prefetch.submit(decode, groups[index + 1]) if following else None
                frames, counts = [], []
                for row, (clip_frames, kind, message) in zip(group, decoded, strict=True):
                    if clip_frames is None:
                        bad.append((row, kind or tables.TOO_SHORT, message or "no frames decoded"))
                        continue
                    good_rows.append(row)
                    frames.append(clip_frames)
                    counts.append(len(clip_frames))
                if frames:
                    vectors.append(pool(self.embed_images(np.concatenate(frames)), counts))
        return self._table(good_rows, np.concatenate(vectors) if vectors else None, bad)

    def _table(
        self, rows: list[dict], vectors: np.ndarray | None, bad: list[tuple[dict, str, str]]
    ) -> pa.Table:
        n, m = len(rows), len(bad)
        dim = 0 if vectors is None else int(vectors.shape[1])
        padded = np.zeros((n + m, dim), np.float16)
        if vectors is not None:
            padded[:n] = vectors
        vector = encode_vectors(padded, missing=np.arange(n + m) >= n)
        everyone = rows + [b[0] for b in bad]
        return pa.table(
            {
                "clip_id": pa.array([r.get("clip_id") for r in everyone], pa.string()),
                "video_id": pa.array([r.get("video_id") for r in everyone], pa.string()),
                "model_id": pa.array([self.model_id] * n + [None] * m, pa.string()),
                "dim": pa.array([dim] * n + [None] * m, pa.int32()),
                "vector": vector,
                tables.ERROR_KIND: pa.array([None] * n + [b[1] for b in bad], pa.string()),
                tables.ERROR_MESSAGE: pa.array([None] * n + [b[2] for b in bad], pa.string()),
            }
        )


def _cuda_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # torch missing or broken CUDA setup: plan for CPU
        return False
