"""The sample dict the DreamDojo trainer consumes, built from a shard row.

DreamDojo's human-video loader (``groot_dreams/data/dataset_video.py``) yields, per sample:

- ``video``: uint8 (3, 13, 480, 640), 13 consecutive frames centre-cropped to 4:3, resized bilinearly;
- ``lam_video``: float in [0, 1], (24, 240, 320, 3): the 12 consecutive frame pairs for the LAM;
- ``action``: float32 (12, 384): zeros, with the 32 latent-action dims at [352:384] set to ones;
- ``fps``, ``num_frames``, ``dataset``, ``__key__``, ``padding_mask``, ``image_size``, ``ai_caption``.

``fps`` is a conditioning input, not metadata: the conditioner passes it through uncast and the DiT's
3D RoPE scales temporal positions by ``base_fps / fps`` (``VideoRopePosition3DEmb``; a video batch
must have one rate). Upstream's loader hard-codes it (``VideoDataset``: 30, the LeRobot loader: 4);
here it is the rate the clip was rendered at, as a float (7.5 stays 7.5; it collates to a float64
tensor, which upstream's arithmetic accepts, as Cosmos' own ``item_dataset`` already sends floats).

The world model multiplies ``action[..., -32:]`` by the latent action it computes online from
``lam_video``. With shards, ``action[:, 352:384]`` holds the precomputed latent actions instead, and
``latent_action_precomputed`` is True; ``egocurate.integrations.dreamdojo`` names the dataset and
the model subclass DreamDojo's config uses so that the trainer keeps them as they are (no patch).
Clips without latent actions keep the ones placeholder and the flag False, so a mixed batch falls
back to the online LAM for those samples. With ``lam_video=False`` the adapter skips building
``lam_video`` (only the online LAM reads it).
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from egocurate.media.crop import crop_box
from egocurate.media.encode import decode_mp4

ACTION_DIM = 384
LATENT_DIM = 32
COLUMNS = (
    "clip_id",
    "video",
    "num_frames",
    "fps",
    "latent_actions",
    "caption",
    "task",
    "dataset",
)


def frame_rate(value: Any) -> float:
    """The clip's rendered frame rate as a float, as the writer stated it (7.5 stays 7.5, never 8).

    The shard column is float32, so 29.97 reads back as 29.969999...; the shortest decimal that
    round-trips float32 recovers the stated rate. A missing or non-positive rate is refused: DreamDojo
    divides by it in its RoPE, so 0 would train on infinite positions without an error.
    """
    rate = float(str(np.float32(value))) if value is not None else math.nan
    if not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"frame rate {value!r}: a shard row needs a positive, finite fps")
    return rate


def center_crop_resize(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(C, T, H, W) uint8 -> centre crop to width:height, bilinear resize, as DreamDojo's loader does."""
    left, top, crop_w, crop_h = crop_box(video.shape[3], video.shape[2], width / height)
    video = video[:, :, top : top + crop_h, left : left + crop_w]
    if (crop_h, crop_w) == (height, width):
        return video.contiguous()
    return F.interpolate(video.contiguous(), (height, width), mode="bilinear")  # uint8 in, uint8 out


def lam_frames(video: torch.Tensor, size: tuple[int, int] = (240, 320)) -> torch.Tensor:
    """(C, T, H, W) uint8 -> (2(T-1), h, w, C) float in [0, 1]: frames 0,1,1,2,...,T-2,T-1."""
    small = F.interpolate(video, size, mode="bilinear")
    small = torch.clamp(small / 255.0, 0, 1)
    pairs = torch.repeat_interleave(small, 2, dim=1)[:, 1:-1]
    return pairs.permute(1, 2, 3, 0)


class DreamDojoSample:
    """Picklable transform for ``ShardDataset``: a shard row -> DreamDojo's training sample dict.

    The 13-frame window starts at a deterministic offset from (seed, epoch, sample), so a resumed
    run sees the same windows. Use ``ShardDataset(..., columns=DreamDojoSample.columns,
    transform=DreamDojoSample())``.
    """

    columns = COLUMNS

    def __init__(
        self,
        num_frames: int = 13,
        height: int = 480,
        width: int = 640,
        lam_size: tuple[int, int] = (240, 320),
        action_dim: int = ACTION_DIM,
        dataset: str = "human_video",
        seed: int = 0,
        lam_video: bool = True,
    ):
        self.num_frames, self.height, self.width, self.lam_size = num_frames, height, width, tuple(lam_size)
        self.action_dim, self.dataset, self.seed, self.lam_video = action_dim, dataset, seed, lam_video

    def window_start(self, clip_frames: int, epoch: int, index: int) -> int:
        span = clip_frames - self.num_frames
        if span < 0:
            raise ValueError(
                f"clip has {clip_frames} frames, fewer than the {self.num_frames} DreamDojo needs"
            )
        digest = hashlib.blake2b(f"dd:{self.seed}:{epoch}:{index}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "big") % (span + 1)

    def actions(self, latent_actions: torch.Tensor | None, start: int) -> tuple[torch.Tensor, bool]:
        """(T-1, action_dim) float32: latent actions of the window at [-32:], else the ones placeholder."""
        action = torch.zeros(self.num_frames - 1, self.action_dim, dtype=torch.float32)
        rows = None if latent_actions is None else latent_actions[start : start + self.num_frames - 1]
        if rows is None or rows.shape[0] < self.num_frames - 1:
            action[:, -LATENT_DIM:] = 1.0
            return action, False
        action[:, -LATENT_DIM:] = rows[:, :LATENT_DIM].float()
        return action, True

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        index, epoch = int(sample.get("__index__", 0)), int(sample.get("__epoch__", 0))
        start = self.window_start(int(sample["num_frames"]), epoch, index)
        frames = decode_mp4(sample["video"], start, self.num_frames)
        if frames.shape[0] < self.num_frames:
            raise ValueError(
                f"decoded {frames.shape[0]} < {self.num_frames} frames of {sample.get('clip_id')}"
            )
        video = torch.from_numpy(np.ascontiguousarray(frames)).permute(3, 0, 1, 2)  # (C, T, H, W)
        video = center_crop_resize(video, self.height, self.width)
        latent_actions = sample.get("latent_actions")
        if latent_actions is not None and not isinstance(latent_actions, torch.Tensor):
            latent_actions = torch.as_tensor(np.asarray(latent_actions, dtype=np.float32))
        action, precomputed = self.actions(latent_actions, start)
        out = {
            "video": video,
            "action": action,
            "dataset": self.dataset,
            "fps": frame_rate(sample.get("fps")),
            "num_frames": self.num_frames,
            "__key__": sample.get("clip_id"),
            "padding_mask": torch.zeros(1, 256, 256),
            "image_size": 256 * torch.ones(4),
            "ai_caption": sample.get("caption") or sample.get("task") or "",
            "latent_action_precomputed": torch.tensor(precomputed),
            "frame_start": start,
        }
        if self.lam_video:
            out["lam_video"] = lam_frames(video, self.lam_size)
        return out
