"""The latent-action labelling stage: clips in, one (T−1, 32) array of latent actions per clip out.

For each clip it builds frame pairs explicitly, (f0,f1), (f1,f2), … at the clip's stride, centre-
cropped to 4:3 and resized to 240×320 as floats in [0, 1]; it encodes the pairs of all clips of a
batch together in large model batches and stores μ and log-variance as float16 bytes with their
shape, the model id and the stride (``clip_latents``).

On Ray the work splits in two: :meth:`prepare` decodes on CPU workers, :meth:`process` encodes on
a GPU actor (or on CPU when no GPU is visible). Without a prepare step, :meth:`process` decodes too.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pyarrow as pa

from egocurate.actions.arrays import pack_f16
from egocurate.actions.common import (
    Device,
    Precision,
    classify_decode_error,
    config_digest,
    error_row,
    file_model_id,
    gpus_for,
    output_table,
    pick_device,
    pick_dtype,
)
from egocurate.actions.frames import (
    model_plan,
    pair_chunks,
    pairs_to_tensor,
    read_model_frames,
    source_problem,
    stride_for,
    strided_indices,
)
from egocurate.catalog import tables
from egocurate.media.crop import crop_resize
from egocurate.media.decode import FRAMES_COLUMN, FRAMES_SHAPE_COLUMN, FramePlan, frames_columns, frames_of
from egocurate.media.source import ClipSource, clip_source
from egocurate.stage_base import BaseStage, Resources

PASS_THROUGH = (("uri", pa.string()), ("duration_s", pa.float64()))


class LatentActionStage(BaseStage):
    """Label clips with DreamDojo latent actions (z_mu and log-variance per consecutive frame pair)."""

    name = "latent_actions"
    input_key = "clip_id"
    output_table = tables.CLIP_LATENTS.name
    reads = ("uri", "start_frame", "end_frame")
    has_prepare = True

    def __init__(
        self,
        checkpoint: str | None = None,
        trust_checkpoint: bool = False,
        model_id: str | None = None,
        lam_config: dict[str, int | bool] | None = None,
        seed: int = 0,
        height: int = 240,
        width: int = 320,
        stride: int = 1,
        target_fps: float | None = None,
        device: Device = "auto",
        precision: Precision = "auto",
        pair_batch_size: int = 64,
        chunk_frames: int = 64,
        batch_size: int = 8,
        cpus: float = 1.0,
        gpus: float | None = None,
        concurrency: int | None = None,
    ):
        if stride < 1 or pair_batch_size < 1 or height < 1 or width < 1:
            raise ValueError("stride, pair_batch_size, height and width must be >= 1")
        self.checkpoint, self.trust_checkpoint, self.model_id = checkpoint, trust_checkpoint, model_id
        self.lam_config, self.seed = dict(lam_config or {}), seed
        self.out_hw = (int(height), int(width))
        self.stride, self.target_fps = int(stride), target_fps
        self.device_choice, self.precision = device, precision
        self.pair_batch_size, self.chunk_frames = int(pair_batch_size), int(chunk_frames)
        self.resources = Resources(
            cpus=cpus, gpus=gpus_for(device, gpus), batch_size=batch_size, concurrency=concurrency or None
        )
        self.prepare_resources = Resources(cpus=1.0, batch_size=batch_size)
        self.model = None

    # ------------------------------------------------------------------ model
    def setup(self) -> None:
        """Load the LAM once per worker, on the GPU when there is one."""
        import torch

        from egocurate.actions.lam import LAMConfig, LatentActionModel

        if self.model is not None:
            return
        self.device = pick_device(self.device_choice)
        self.autocast_dtype = pick_dtype(self.precision, self.device)
        if self.checkpoint:
            config = LAMConfig.from_dict(self.lam_config) if self.lam_config else None
            model = LatentActionModel.from_checkpoint(self.checkpoint, config, self.trust_checkpoint)
            self.resolved_model_id = self.model_id or file_model_id(self.checkpoint)
        else:  # random init: demos and throughput benchmarks (same compute as real weights)
            config = dataclasses.replace(LAMConfig(), **self.lam_config)
            torch.manual_seed(self.seed)
            model = LatentActionModel(config)
            self.resolved_model_id = (
                self.model_id or f"lam-random-init-seed{self.seed}-{config_digest(config.as_dict())}"
            )
        self.model = model.to(self.device).eval()

    @property
    def lam_model_id(self) -> str:
        return self.resolved_model_id

    def encode(self, pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """μ and log-variance (K, latent_dim) of uint8 pairs (K, 2, H, W, 3), in model batches."""
        import torch

        mus, logvars = [], []
        for begin in range(0, len(pairs), self.pair_batch_size):
            chunk = pairs_to_tensor(pairs[begin : begin + self.pair_batch_size], self.device)
            with (
                torch.inference_mode(),
                torch.autocast(
                    device_type=self.device.split(":")[0],
                    dtype=self.autocast_dtype or torch.float32,
                    enabled=self.autocast_dtype is not None,
                ),
            ):
                mu, logvar = self.model.encode_pairs(chunk)
            mus.append(mu.float().cpu().numpy())
            logvars.append(logvar.float().cpu().numpy())
        return np.concatenate(mus), np.concatenate(logvars)

    # ------------------------------------------------------------------ frames
    def _stride(self, source: ClipSource) -> int:
        return stride_for(source.fps, self.stride, self.target_fps)

    def _indices(self, source: ClipSource) -> list[int]:
        return strided_indices(source.start, source.end, self._stride(source))

    def _check(self, row: dict) -> tuple[str, str] | None:
        problem = source_problem(row)
        if problem is not None:
            return problem
        source = clip_source(row)
        if len(self._indices(source)) < 2:
            return tables.TOO_SHORT, (
                f"clip [{source.start}, {source.end}) has fewer than 2 frames "
                f"at stride {self._stride(source)}"
            )
        return None

    def _pairs_of(self, row: dict) -> Iterator[np.ndarray]:
        shared = frames_of(row)  # decoded by `prepare` on a CPU worker, or once for several stages
        if shared is not None:
            frames = crop_resize(shared, self.out_hw[1], self.out_hw[0])
            yield np.stack([frames[:-1], frames[1:]], axis=1)
            return
        source = clip_source(row)
        yield from pair_chunks(source.uri, self._indices(source), self.out_hw, source.size, self.chunk_frames)

    def prepare(self, batch: pa.Table) -> pa.Table:
        """CPU step: decode each clip's frames into a bytes column (errors are marked, not raised)."""
        frames_col, kinds, messages = [], [], []
        for row in batch.to_pylist():
            problem = self._check(row)
            frames = None
            if problem is None:
                try:
                    source = clip_source(row)
                    frames = read_model_frames(source.uri, self._indices(source), self.out_hw, source.size)
                except Exception as exc:
                    problem = classify_decode_error(exc), f"{type(exc).__name__}: {exc}"
            frames_col.append(frames)
            kinds.append(problem[0] if problem else None)
            messages.append(problem[1] if problem else None)
        data, shapes = frames_columns(frames_col)
        out = batch.append_column(FRAMES_COLUMN, data).append_column(FRAMES_SHAPE_COLUMN, shapes)
        out = out.append_column("_lam_prepare_error", pa.array(kinds, pa.string()))
        return out.append_column("_lam_prepare_message", pa.array(messages, pa.string()))

    def frame_plan(self, row: dict) -> FramePlan | None:
        if self._check(row) is not None:
            return None  # process reports the row
        source = clip_source(row)
        return model_plan(source.uri, self._indices(source), self.out_hw, source.size)

    # ------------------------------------------------------------------ the stage
    def process(self, batch: pa.Table) -> pa.Table:
        """One output row per clip: latent actions, or an error row for a clip that cannot be used."""
        self.setup()
        rows = batch.to_pylist()
        out: list[dict | None] = [None] * len(rows)
        mus: dict[int, list[np.ndarray]] = {}
        logvars: dict[int, list[np.ndarray]] = {}
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            if not pending:
                return
            owners = np.concatenate([np.full(len(p), i) for i, p in pending])
            mu, logvar = self.encode(np.concatenate([p for _, p in pending]))
            for i in dict.fromkeys(owners.tolist()):
                if out[i] is None:  # a clip that failed later in the batch keeps its error row
                    mus.setdefault(i, []).append(mu[owners == i])
                    logvars.setdefault(i, []).append(logvar[owners == i])
            pending.clear()

        for i, row in enumerate(rows):
            # frames decoded by `prepare` (maybe on another node) need no second look at the file
            problem = None if row.get(FRAMES_COLUMN) is not None else self._check(row)
            if problem is None and row.get("_lam_prepare_error"):
                problem = row["_lam_prepare_error"], row.get("_lam_prepare_message") or ""
            if problem is not None:
                out[i] = error_row(row, self.input_key, *problem)
                continue
            try:
                for pairs in self._pairs_of(row):
                    pending.append((i, pairs))
                    if sum(len(p) for _, p in pending) >= self.pair_batch_size:
                        flush()
            except Exception as exc:
                out[i] = error_row(
                    row, self.input_key, classify_decode_error(exc), f"{type(exc).__name__}: {exc}"
                )
                mus.pop(i, None)
                logvars.pop(i, None)
        flush()
        for i, row in enumerate(rows):
            if out[i] is not None:
                continue
            mu, logvar = np.concatenate(mus[i]), np.concatenate(logvars[i])
            mu_bytes, shape = pack_f16(mu)
            out[i] = {
                "clip_id": row["clip_id"],
                "video_id": row.get("video_id"),
                "uri": row.get("uri"),
                "duration_s": row.get("duration_s"),
                "lam_model_id": self.lam_model_id,
                "lam_stride": self._stride(clip_source(row)),
                "latent_actions": mu_bytes,
                "latent_actions_shape": shape,
                "latent_logvar": pack_f16(logvar)[0],
            }
        return output_table(out, tables.CLIP_LATENTS.schema, PASS_THROUGH)
