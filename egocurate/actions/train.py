"""Train a latent action model on our own clips, DreamDojo-style.

- Loss: MSE reconstruction of frame t+1 plus β·KL(q(z|f_t, f_t+1) ‖ N(0, I)), β = 1e-6 by default.
- AdamW with linear warm-up, gradient clipping, bf16 autocast on GPU, a random frame stride per pair.
- Checkpoints are safetensors (weights with DreamDojo's ``lam.`` prefix, loadable by
  ``LatentActionModel.from_checkpoint``; the optimiser state in a second file) and a run resumes
  from the newest one.
- Data streams from clip rows (read from the catalog by the caller): each clip is decoded once per
  visit at the model's size and yields many random pairs, shuffled across clips.
- Multi-GPU: run under ``torchrun`` (the process group is initialised from its environment) or Ray
  Train's ``TorchTrainer`` (:func:`train_with_ray`); each rank streams its own shard of clips.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from egocurate.actions.frames import read_model_frames
from egocurate.actions.lam import LAMConfig, LatentActionModel
from egocurate.media.source import clip_source


@dataclass
class TrainConfig:
    """Everything a training run needs besides the clips (YAML keys of ``egocurate lam train``)."""

    lam: dict[str, Any] = field(default_factory=dict)  # LAMConfig fields; empty = DreamDojo's full size
    height: int = 240
    width: int = 320
    stride_min: int = 1
    stride_max: int = 4
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    beta: float = 1e-6  # KL weight, as DreamDojo
    grad_clip: float = 1.0
    max_steps: int = 10_000
    max_seconds: float | None = None  # wall-clock budget
    max_cpu_seconds: float | None = None  # CPU-time budget of this process (fair on a shared machine)
    checkpoint_dir: str = "lam_checkpoints"
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    resume: bool = True
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast on GPU
    num_workers: int = 2
    pairs_per_clip: int = 32
    max_clip_frames: int = 256
    shuffle_buffer: int = 512
    cache_frames: bool = False  # keep decoded clips in memory (small datasets, benchmarks)
    log_every: int = 50

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TrainConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown LAM training options {sorted(unknown)}; allowed: {sorted(known)}")
        return cls(**raw)

    def lam_config(self) -> LAMConfig:
        return LAMConfig.from_dict({**LAMConfig().as_dict(), **self.lam})


# ----------------------------------------------------------------------------- data
def _rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class ClipPairStream(torch.utils.data.IterableDataset):
    """Endless random frame pairs (2, H, W, 3) uint8 from clip rows, sharded by rank and worker."""

    def __init__(self, rows: Sequence[dict], config: TrainConfig, seed: int = 0):
        self.rows = [r for r in rows if int(r["end_frame"]) - int(r["start_frame"]) > config.stride_min]
        if not self.rows:
            raise ValueError("no clip is long enough to draw a frame pair from")
        self.config, self.seed = config, seed
        self._cache: dict[int, np.ndarray] = {}

    def _frames(self, index: int, rng: random.Random) -> tuple[np.ndarray, int]:
        """Decoded frames of one clip (a random window of at most `max_clip_frames`) and its first index."""
        source = clip_source(self.rows[index])
        start, end = source.start, source.end
        if self.config.cache_frames and index in self._cache:
            return self._cache[index], start
        if end - start > self.config.max_clip_frames and not self.config.cache_frames:
            start = rng.randrange(start, end - self.config.max_clip_frames + 1)
            end = start + self.config.max_clip_frames
        frames = read_model_frames(
            source.uri, range(start, end), (self.config.height, self.config.width), source.size
        )
        if self.config.cache_frames:
            self._cache[index] = frames
        return frames, start

    def pairs(self, rng: random.Random, shard: int, shards: int) -> Iterator[np.ndarray]:
        mine = list(range(shard, len(self.rows), shards)) or list(range(len(self.rows)))
        buffer: list[np.ndarray] = []
        while True:
            rng.shuffle(mine)
            for index in mine:
                frames, _ = self._frames(index, rng)
                for _ in range(self.config.pairs_per_clip):
                    stride = rng.randint(self.config.stride_min, min(self.config.stride_max, len(frames) - 1))
                    t = rng.randrange(0, len(frames) - stride)
                    buffer.append(np.stack([frames[t], frames[t + stride]]))
                while len(buffer) >= self.config.shuffle_buffer:
                    yield buffer.pop(rng.randrange(len(buffer)))
            while buffer and len(mine) * self.config.pairs_per_clip < self.config.shuffle_buffer:
                yield buffer.pop(rng.randrange(len(buffer)))

    def __iter__(self) -> Iterator[torch.Tensor]:
        rank, world = _rank_world()
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        shard, shards = rank * workers + worker, world * workers
        rng = random.Random(self.seed * 1000 + shard)
        for pair in self.pairs(rng, shard, shards):
            yield torch.from_numpy(pair)


def pair_loader(rows: Sequence[dict], config: TrainConfig, seed: int) -> Iterator[torch.Tensor]:
    """Batches (B, 2, H, W, 3) of uint8 pairs, forever."""
    loader = torch.utils.data.DataLoader(
        ClipPairStream(rows, config, seed),
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=config.num_workers > 0,
    )
    while True:
        yield from loader


# ----------------------------------------------------------------------------- loss
def lam_loss(model: torch.nn.Module, videos: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """MSE reconstruction of frames 2..T plus β·KL to the unit Gaussian (mean over latents)."""
    out = model(videos)
    recon = out["recon"]
    target = videos[:, 1:, : recon.shape[2], : recon.shape[3]]
    mse = F.mse_loss(recon.float(), target.float())
    mu, logvar = out["z_mu"].float(), out["z_logvar"].float()
    kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(-1)).mean()
    return {"loss": mse + beta * kl, "mse": mse, "kl": kl}


def psnr(mse: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] from their mean squared error."""
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


# ----------------------------------------------------------------------------- checkpoints
def checkpoint_paths(directory: str | os.PathLike[str]) -> list[tuple[int, Path]]:
    """(step, weights file) of the checkpoints in `directory`, oldest first."""
    out = []
    for path in Path(directory).glob("lam-step*.safetensors"):
        stem = path.name[len("lam-step") : -len(".safetensors")]
        if stem.isdigit():
            out.append((int(stem), path))
    return sorted(out)


def save_checkpoint(
    model: LatentActionModel, optimizer: torch.optim.Optimizer, step: int, config: TrainConfig
) -> Path:
    """Weights (``lam.``-prefixed, with the LAM config in metadata), optimiser state and a JSON sidecar."""
    from safetensors.torch import save_file

    directory = Path(config.checkpoint_dir)
    directory.mkdir(parents=True, exist_ok=True)
    weights = directory / f"lam-step{step:08d}.safetensors"
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = float(value)
    meta = {
        "step": step,
        "train_config": asdict(config),
        "lam_config": model.config.as_dict(),
        "param_groups": state["param_groups"],
        "scalars": scalars,
    }
    save_file(tensors, str(directory / f"optim-step{step:08d}.safetensors"))
    (directory / f"lam-step{step:08d}.json").write_text(json.dumps(meta))
    tmp = weights.with_suffix(".tmp")
    model.save_safetensors(tmp)
    tmp.replace(weights)  # the weights file appears last: its presence marks a complete checkpoint
    for old_step, old in checkpoint_paths(directory)[: -max(1, config.keep_checkpoints)]:
        for sibling in (
            old,
            directory / f"optim-step{old_step:08d}.safetensors",
            directory / f"lam-step{old_step:08d}.json",
        ):
            sibling.unlink(missing_ok=True)
    return weights


def load_checkpoint(model: LatentActionModel, optimizer: torch.optim.Optimizer, weights: Path) -> int:
    """Restore model and optimiser from a checkpoint written by :func:`save_checkpoint`; returns its step."""
    from safetensors.torch import load_file

    from egocurate.actions.lam import strip_prefix

    step_text = weights.name[len("lam-step") : -len(".safetensors")]
    directory = weights.parent
    meta = json.loads((directory / f"lam-step{step_text}.json").read_text())
    model.load_state_dict(strip_prefix(load_file(str(weights))))
    tensors = load_file(str(directory / f"optim-step{step_text}.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainResult:
    steps: int
    seconds: float
    last_mse: float
    last_kl: float
    checkpoint: str | None
    history: list[dict[str, float]]


def _device(choice: str) -> torch.device:
    if choice == "auto":
        return (
            torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
    return torch.device(choice)


def _maybe_init_distributed(device: torch.device) -> None:
    """Join the process group `torchrun` describes in the environment (no-op for a single process)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")


def train(
    rows: Sequence[dict],
    config: TrainConfig,
    progress: bool = True,
    batches: Iterator[torch.Tensor] | None = None,
) -> tuple[LatentActionModel, TrainResult]:
    """Train (or resume training) a LAM on frame pairs from `rows` (clip rows with uri and frame range).

    `batches` may replace the clip stream (uint8 (B, 2, H, W, 3) batches), e.g. for in-memory data.
    """
    device = _device(config.device)
    _maybe_init_distributed(device)
    rank, world = _rank_world()
    torch.manual_seed(config.seed)
    model = LatentActionModel(config.lam_config()).to(device)
    decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.requires_grad and p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        betas=(0.9, 0.99),
    )
    step = 0
    existing = checkpoint_paths(config.checkpoint_dir) if config.resume else []
    if existing:
        step = load_checkpoint(model, optimizer, existing[-1][1])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / max(1, config.warmup_steps)),
        last_epoch=step - 1 if step else -1,
    )
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )
    stream = batches if batches is not None else pair_loader(rows, config, config.seed + step)
    autocast = device.type == "cuda" and config.bf16
    history: list[dict[str, float]] = []
    start, cpu_start = time.perf_counter(), time.process_time()
    last: dict[str, torch.Tensor] = {}
    saved: Path | None = existing[-1][1] if existing else None
    bar = tqdm(total=config.max_steps, initial=step, desc="lam train", disable=not progress or rank != 0)
    model.train()
    while step < config.max_steps:
        if config.max_seconds is not None and time.perf_counter() - start >= config.max_seconds:
            break
        if config.max_cpu_seconds is not None and time.process_time() - cpu_start >= config.max_cpu_seconds:
            break
        videos = next(stream).to(device, non_blocking=True).float().div_(255.0)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            last = lam_loss(net, videos, config.beta)
        optimizer.zero_grad(set_to_none=True)
        last["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        if step % config.log_every == 0 or step == config.max_steps:
            record = {
                "step": step,
                "mse": float(last["mse"].detach()),
                "kl": float(last["kl"].detach()),
                "psnr": float(psnr(last["mse"].detach())),
                "seconds": time.perf_counter() - start,
            }
            history.append(record)
            bar.set_postfix(mse=f"{record['mse']:.5f}", psnr=f"{record['psnr']:.2f}")
        if rank == 0 and config.checkpoint_every and step % config.checkpoint_every == 0:
            saved = save_checkpoint(model, optimizer, step, config)
    bar.close()
    if (
        rank == 0
        and config.checkpoint_every
        and (saved is None or not saved.name.endswith(f"{step:08d}.safetensors"))
    ):
        saved = save_checkpoint(model, optimizer, step, config)
    model.eval()
    result = TrainResult(
        steps=step,
        seconds=time.perf_counter() - start,
        last_mse=float(last["mse"].detach()) if last else math.nan,
        last_kl=float(last["kl"].detach()) if last else math.nan,
        checkpoint=str(saved) if saved else None,
        history=history,
    )
    return model, result


def train_with_ray(
    rows: Sequence[dict], config: TrainConfig, num_workers: int = 1, use_gpu: bool = True
) -> Any:
    """Run :func:`train` on `num_workers` Ray Train workers (``TorchTrainer`` sets up the process group)."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(worker_config: dict) -> None:
        train(worker_config["rows"], TrainConfig.from_dict(worker_config["config"]), progress=False)

    trainer = TorchTrainer(
        loop,
        train_loop_config={"rows": list(rows), "config": asdict(config)},
        scaling_config=ScalingConfig(num_workers=num_workers, use_gpu=use_gpu),
    )
    return trainer.fit()
