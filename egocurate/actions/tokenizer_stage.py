"""The tokenizer-latents stage: clips in, the Wan VAE latent mean μ of each clip out.

A clip's frames (at its stride, centre-cropped to 4:3 and resized to 480×640 by default) are cut
into consecutive windows of 1+4k frames, the window the DreamDojo trainer encodes (13 frames give a
(16, 4, 60, 80) Wan2.1 latent). Windows of all clips in a batch are encoded together. The result is
stored per clip as bfloat16 with shape [windows, C, 1+k, H/s, W/s], the VAE id and its per-channel
normalisation mean and std (``clip_tokenizer_latents``):

- inline, as bytes in the ``latent`` column (default: atomic with the Delta commit, no stray files);
- or, with ``output_dir`` (any fsspec URL), one ``<clip_id>.safetensors`` per clip (tensor
  ``latent``), named in ``latent_uri``. File names are deterministic, so a rerun after a crash
  overwrites rather than duplicates.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from egocurate.actions.arrays import pack_bf16
from egocurate.actions.common import (
    Device,
    Precision,
    classify_decode_error,
    error_row,
    gpus_for,
    output_table,
    pick_device,
    pick_dtype,
)
from egocurate.actions.frames import read_model_frames, source_problem, stride_for, strided_indices
from egocurate.actions.tokenizer import Variant
from egocurate.catalog import tables
from egocurate.media.decode import FRAMES_COLUMN, FRAMES_SHAPE_COLUMN, frames_columns, frames_of
from egocurate.media.source import clip_source
from egocurate.stage_base import BaseStage, Resources

PASS_THROUGH = (("uri", pa.string()), ("duration_s", pa.float64()))


class TokenizerLatentStage(BaseStage):
    """Precompute Wan VAE latents per clip, so world-model training skips the VAE on every epoch."""

    name = "tokenizer_latents"
    has_prepare = True  # on Ray, CPU workers decode ahead of the (GPU) VAE actors
    input_key = "clip_id"
    output_table = tables.CLIP_TOKENIZER_LATENTS.name
    reads = ("uri", "start_frame", "end_frame")

    def __init__(
        self,
        variant: Variant = "wan2.1",
        weights: str | None = None,
        subfolder: str = "vae",
        cache_dir: str | None = None,
        tiny: bool = False,
        seed: int = 0,
        height: int = 480,
        width: int = 640,
        window_frames: int = 13,
        max_windows: int | None = None,
        stride: int = 1,
        target_fps: float | None = None,
        device: Device = "auto",
        precision: Precision = "auto",
        tiling: bool = False,
        slicing: bool = False,
        window_batch_size: int = 4,
        output_dir: str | None = None,
        batch_size: int = 4,
        cpus: float = 1.0,
        gpus: float | None = None,
        concurrency: int | None = None,
    ):
        if window_frames < 1 or (window_frames - 1) % 4:
            raise ValueError(f"window_frames must be 1+4k (1, 5, 9, 13, …); got {window_frames}")
        if height % 16 or width % 16:
            raise ValueError(f"height and width must be multiples of 16; got {height}x{width}")
        self.variant, self.weights, self.subfolder, self.cache_dir = variant, weights, subfolder, cache_dir
        self.tiny, self.seed = tiny, seed
        self.out_hw = (int(height), int(width))
        self.window_frames, self.max_windows = int(window_frames), max_windows
        self.stride, self.target_fps = int(stride), target_fps
        self.device_choice, self.precision, self.tiling, self.slicing = device, precision, tiling, slicing
        self.window_batch_size = max(1, int(window_batch_size))
        self.output_dir = output_dir.rstrip("/") if output_dir else None
        self.resources = Resources(
            cpus=cpus, gpus=gpus_for(device, gpus), batch_size=batch_size, concurrency=concurrency or None
        )
        self.tokenizer = None

    def setup(self) -> None:
        """Load the VAE once per worker (bf16 on GPU by default, fp32 on CPU)."""
        from egocurate.actions.tokenizer import WanTokenizer

        if self.tokenizer is not None:
            return
        device = pick_device(self.device_choice)
        self.tokenizer = WanTokenizer(
            self.variant,
            self.weights,
            self.subfolder,
            self.cache_dir,
            self.tiny,
            self.seed,
            device,
            pick_dtype(self.precision, device),
            self.tiling,
            self.slicing,
        )

    # ------------------------------------------------------------------ windows
    def _stride(self, row: dict) -> int:
        return stride_for(clip_source(row).fps, self.stride, self.target_fps)

    def windows(self, row: dict) -> list[list[int]]:
        """Consecutive windows of `window_frames` strided frame indices (at most `max_windows`)."""
        source = clip_source(row)
        indices = strided_indices(source.start, source.end, self._stride(row))
        count = len(indices) // self.window_frames
        if self.max_windows is not None:
            count = min(count, int(self.max_windows))
        return [indices[w * self.window_frames : (w + 1) * self.window_frames] for w in range(count)]

    def _check(self, row: dict) -> tuple[str, str] | None:
        problem = source_problem(row)
        if problem is not None:
            return problem
        if not self.windows(row):
            return tables.TOO_SHORT, (
                f"clip [{row['start_frame']}, {row['end_frame']}) has fewer than {self.window_frames} frames "
                f"at stride {self._stride(row)}"
            )
        return None

    # ------------------------------------------------------------------ storage
    def _store(self, row: dict, latent) -> dict[str, Any]:
        if self.output_dir is None:
            data, shape = pack_bf16(latent)
            return {"latent": data, "latent_shape": shape}
        import fsspec
        import torch
        from safetensors.torch import save

        uri = f"{self.output_dir}/{row['clip_id']}.safetensors"
        payload = save(
            {"latent": latent.to(torch.bfloat16).contiguous()},
            metadata={"clip_id": str(row["clip_id"]), "tokenizer_id": self.tokenizer.id},
        )
        fs, path = fsspec.core.url_to_fs(uri)
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with fs.open(path, "wb") as fh:
            fh.write(payload)
        return {"latent_uri": uri, "latent_shape": [int(s) for s in latent.shape]}

    # ------------------------------------------------------------------ the stage
    def _decode_windows(self, row: dict) -> list[np.ndarray]:
        """The clip's windows of model-ready frames, decoded in one pass over the file."""
        windows = self.windows(row)
        source = clip_source(row)
        flat = [index for window in windows for index in window]
        frames = read_model_frames(source.uri, flat, self.out_hw, source.size)
        return [frames[w * self.window_frames : (w + 1) * self.window_frames] for w in range(len(windows))]

    def prepare(self, batch: pa.Table) -> pa.Table:
        """CPU step (on Ray, a CPU task ahead of the VAE actors): each clip's windows decoded into
        the batch. A row that fails here gets no frames; ``process`` decodes and reports it."""
        frames: list[np.ndarray | None] = []
        for row in batch.to_pylist():
            try:
                decoded = self._decode_windows(row) if self._check(row) is None else []
                frames.append(np.stack(decoded) if decoded else None)  # (windows, T, H, W, 3)
            except Exception:  # noqa: BLE001 - reported by process
                frames.append(None)
        data, shapes = frames_columns(frames)
        return batch.append_column(FRAMES_COLUMN, data).append_column(FRAMES_SHAPE_COLUMN, shapes)

    def process(self, batch: pa.Table) -> pa.Table:
        import torch

        self.setup()
        rows = batch.to_pylist()
        out: list[dict | None] = [None] * len(rows)
        latents: dict[int, list] = {}
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            mu = self.tokenizer.encode(np.stack([w for _, w in pending]))
            for (i, _), m in zip(pending, mu, strict=True):
                if out[i] is None:
                    latents.setdefault(i, []).append(m)
            pending.clear()

        for i, row in enumerate(rows):
            problem = self._check(row)
            if problem is not None:
                out[i] = error_row(row, self.input_key, *problem)
                continue
            try:
                shared = frames_of(row)  # decoded by `prepare` on a CPU worker
                for frames in shared if shared is not None else self._decode_windows(row):
                    pending.append((i, frames))
                    if len(pending) >= self.window_batch_size:
                        flush()
            except Exception as exc:
                out[i] = error_row(
                    row, self.input_key, classify_decode_error(exc), f"{type(exc).__name__}: {exc}"
                )
                latents.pop(i, None)
        flush()
        for i, row in enumerate(rows):
            if out[i] is not None:
                continue
            latent = torch.stack(latents[i])  # (windows, C, 1+k, h, w)
            out[i] = {
                "clip_id": row["clip_id"],
                "video_id": row.get("video_id"),
                "uri": row.get("uri"),
                "duration_s": row.get("duration_s"),
                "tokenizer_id": self.tokenizer.id,
                "tokenizer_stride": self._stride(row),
                "window_frames": self.window_frames,
                "window_starts": [w[0] for w in self.windows(row)],
                "frame_height": self.out_hw[0],
                "frame_width": self.out_hw[1],
                "latent_dtype": "bfloat16",
                "latent_mean": self.tokenizer.latents_mean,
                "latent_std": self.tokenizer.latents_std,
                **self._store(row, latent),
            }
        return output_table(out, tables.CLIP_TOKENIZER_LATENTS.schema, PASS_THROUGH)


def read_latent(row: dict, storage_options: dict | None = None):
    """The float32 μ tensor [windows, C, 1+k, h, w] of a ``clip_tokenizer_latents`` row (inline or file)."""
    from egocurate.actions.arrays import unpack_bf16

    if row.get("latent") is not None:
        return unpack_bf16(row["latent"], row["latent_shape"])
    import fsspec
    from safetensors.torch import load

    with fsspec.open(row["latent_uri"], "rb", **(storage_options or {})) as fh:
        return load(fh.read())["latent"].float()
