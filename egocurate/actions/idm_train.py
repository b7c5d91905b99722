"""Train an inverse dynamics model on robot episodes with recorded actions.

- Data: episode rows (a video uri, its frame range, and its ``episode_actions`` array; read from the
  catalog by the caller). Each episode is decoded once at the model's size and kept in memory; each
  sample is a random frame pair (s_t, s_{t+H}) with its action chunk a_t … a_{t+H−1}.
- Normalisation: per-dimension mean/std of the continuous dims over all training actions (binary
  dims keep their low/high values), written into the checkpoint's JSON config.
- AdamW with warm-up and cosine decay, gradient clipping, bf16 autocast on GPU, a CPU-time budget.
- Multi-GPU: under ``torchrun`` (process group from the environment) or Ray Train's ``TorchTrainer``
  (:func:`train_with_ray`), as LAM training does; each rank samples its own stream.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from egocurate.actions.frames import read_model_frames
from egocurate.actions.idm import (
    ActionDimError,
    IDMConfig,
    InverseDynamicsModel,
    action_statistics,
)
from egocurate.actions.train import _device, _maybe_init_distributed, _rank_world
from egocurate.media.source import clip_source


@dataclass
class IDMTrainConfig:
    """Options of ``egocurate idm train`` (YAML keys); `idm` holds IDMConfig architecture fields."""

    idm: dict[str, Any] = field(default_factory=dict)  # horizon, height, width, widths, hidden, model_id
    binary_actions: list[str] = field(default_factory=list)  # action names trained as classification
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 100
    grad_clip: float = 1.0
    max_steps: int = 5000
    max_seconds: float | None = None
    max_cpu_seconds: float | None = None  # CPU-time budget of this process
    out_dir: str = "idm_checkpoints"
    name: str = "idm"
    seed: int = 0
    device: str = "auto"
    bf16: bool = True
    log_every: int = 50

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IDMTrainConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown IDM training options {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**raw)


@dataclass
class IDMTrainResult:
    steps: int
    seconds: float
    last_loss: float
    checkpoint: str | None
    history: list[dict[str, float]]


# ----------------------------------------------------------------------------- data
def episode_actions(row: dict) -> np.ndarray:
    """The (num_frames, A) float32 actions of an episode row (``actions`` bytes + ``actions_shape``)."""
    shape = [int(s) for s in row["actions_shape"]]
    return np.frombuffer(row["actions"], dtype="<f4").reshape(shape).astype(np.float32)


class EpisodePairs:
    """Decoded episodes in memory; draws (pairs uint8 (B, 2, h, w, 3), chunks (B, H, A)) batches."""

    def __init__(self, rows: Sequence[dict], horizon: int, hw: tuple[int, int]):
        self.horizon = horizon
        self.frames: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        dims = set()
        for row in rows:
            actions = episode_actions(row)
            start, end = int(row.get("start_frame") or 0), int(row["end_frame"])
            end = min(end, start + len(actions))
            if end - start <= horizon:
                continue
            source = clip_source(row)
            frames = read_model_frames(source.uri, range(start, end), hw, source.size)
            self.frames.append(frames)
            self.actions.append(actions[: end - start])
            dims.add(actions.shape[1])
        if not self.frames:
            raise ValueError(f"no episode has more than horizon {horizon} frames with actions")
        if len(dims) > 1:
            raise ActionDimError(f"episodes disagree on the action dimension: {sorted(dims)}")
        self.weights = np.array([len(f) - horizon for f in self.frames], np.float64)
        self.weights /= self.weights.sum()

    @classmethod
    def from_arrays(
        cls, frames: Sequence[np.ndarray], actions: Sequence[np.ndarray], horizon: int
    ) -> EpisodePairs:
        """In-memory episodes: frames (N, h, w, 3) uint8 already at the model's size, actions (N, A)."""
        self = cls.__new__(cls)
        self.horizon, self.frames, self.actions = (
            horizon,
            list(frames),
            [np.asarray(a, np.float32) for a in actions],
        )
        self.weights = np.array([max(0, len(f) - horizon) for f in self.frames], np.float64)
        self.weights /= self.weights.sum()
        return self

    @property
    def all_actions(self) -> np.ndarray:
        return np.concatenate(self.actions)

    def batch(self, rng: np.random.Generator, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        episodes = rng.choice(len(self.frames), size=size, p=self.weights)
        pairs, chunks = [], []
        for e in episodes:
            t = int(rng.integers(0, len(self.frames[e]) - self.horizon))
            pairs.append(np.stack([self.frames[e][t], self.frames[e][t + self.horizon]]))
            chunks.append(self.actions[e][t : t + self.horizon])
        return torch.from_numpy(np.stack(pairs)), torch.from_numpy(np.stack(chunks))


def build_config(config: IDMTrainConfig, action_names: Sequence[str], actions: np.ndarray) -> IDMConfig:
    """The IDMConfig of a run: architecture from `config.idm`, action space and statistics from data."""
    unknown = [n for n in config.binary_actions if n not in action_names]
    if unknown:
        raise ActionDimError(
            f"binary_actions {unknown} are not among the dataset's actions {list(action_names)}"
        )
    binary = tuple(action_names.index(n) for n in config.binary_actions)
    if actions.shape[1] != len(action_names):
        raise ActionDimError(f"{len(action_names)} action names for {actions.shape[1]} action dims")
    return IDMConfig.from_dict(
        {
            "model_id": config.name,
            **config.idm,
            "action_names": tuple(action_names),
            "binary_dims": binary,
            **action_statistics(actions, binary),
        }
    )


# ----------------------------------------------------------------------------- the loop
def train_idm(
    rows: Sequence[dict],
    config: IDMTrainConfig,
    progress: bool = True,
    data: EpisodePairs | None = None,
) -> tuple[InverseDynamicsModel, IDMTrainResult]:
    """Train an IDM on episode rows; write ``<out_dir>/<name>.safetensors`` + ``.json`` (rank 0)."""
    device = _device(config.device)
    _maybe_init_distributed(device)
    rank, world = _rank_world()
    names = list(rows[0].get("action_names") or []) if rows else []
    probe = IDMConfig.from_dict({"action_names": ("x",), **config.idm})
    data = data or EpisodePairs(rows, probe.horizon, (probe.height, probe.width))
    actions = data.all_actions
    if not names:
        names = [f"action_{i}" for i in range(actions.shape[1])]
    idm_config = build_config(config, names, actions)
    torch.manual_seed(config.seed)
    model = InverseDynamicsModel(idm_config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    total = max(1, config.max_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            min(1.0, (s + 1) / max(1, config.warmup_steps))
            * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total))))
        ),
    )
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    rng = np.random.default_rng(config.seed * 1000 + rank)
    autocast = device.type == "cuda" and config.bf16
    history: list[dict[str, float]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    bar = tqdm(total=config.max_steps, desc="idm train", disable=not progress or rank != 0)
    step, last = 0, math.nan
    model.train()
    while step < config.max_steps:
        if config.max_seconds is not None and time.perf_counter() - start >= config.max_seconds:
            break
        if config.max_cpu_seconds is not None and time.process_time() - cpu_start >= config.max_cpu_seconds:
            break
        pairs, chunks = data.batch(rng, config.batch_size)
        pairs = pairs.to(device, non_blocking=True).float().div_(255.0)
        chunks = chunks.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            losses = model.loss_from(net(pairs), chunks)
        optimizer.zero_grad(set_to_none=True)
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        last = float(losses["loss"].detach())
        if step % config.log_every == 0 or step == config.max_steps:
            record = {
                "step": step,
                "loss": last,
                "mse": float(losses["mse"].detach()),
                "bce": float(losses["bce"].detach()),
                "seconds": time.perf_counter() - start,
            }
            history.append(record)
            bar.set_postfix(loss=f"{last:.4f}")
    bar.close()
    model.eval()
    saved = None
    if rank == 0:
        saved = str(model.save(Path(config.out_dir) / config.name))
    return model, IDMTrainResult(step, time.perf_counter() - start, last, saved, history)


def train_with_ray(
    rows: Sequence[dict], config: IDMTrainConfig, num_workers: int = 1, use_gpu: bool = True
) -> Any:
    """Run :func:`train_idm` on `num_workers` Ray Train workers (``TorchTrainer`` sets up DDP)."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(worker_config: dict) -> None:
        train_idm(worker_config["rows"], IDMTrainConfig.from_dict(worker_config["config"]), progress=False)

    trainer = TorchTrainer(
        loop,
        train_loop_config={"rows": list(rows), "config": asdict(config)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
    )
    return trainer.fit()
