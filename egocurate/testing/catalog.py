"""A small catalog of synthetic clips with latents and labels, for tests, benchmarks and demos.

It writes `videos`, `clips`, `clip_labels` and `clip_latents` rows directly (as the ingest, shots,
annotate and latent-action stages would), over videos from ``egocurate.testing.videos.make_video``.
Latent actions are random but deterministic, and each one encodes its clip and frame pair in its
first two dims, so a test can check that the right rows reach the right sample.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog

LATENT_DIM = 32
TOKENIZER_SHAPE = (1, 16, 2, 4, 5)  # [windows, C, 1+k, H/s, W/s]


def stable_id(*parts: object) -> str:
    return hashlib.sha256(":".join(str(p) for p in parts).encode()).hexdigest()[:16]


def latent_actions_for(clip_index: int, num_frames: int) -> np.ndarray:
    """(num_frames - 1, 32) float16 actions; dims 0 and 1 hold the clip index and the pair index."""
    rng = np.random.default_rng(clip_index)
    actions = rng.normal(0, 1, size=(num_frames - 1, LATENT_DIM)).astype(np.float16)
    actions[:, 0] = clip_index
    actions[:, 1] = np.arange(num_frames - 1)
    return actions


def tokenizer_latent_for(clip_index: int) -> np.ndarray:
    """A deterministic float32 latent (values exact in bfloat16: small integers and halves)."""
    rng = np.random.default_rng(clip_index + 10_000)
    latent = rng.integers(-8, 8, size=TOKENIZER_SHAPE).astype(np.float32) / 2
    latent.flat[0] = clip_index
    return latent


def bf16_bytes(clip_index: int) -> bytes:
    bits = tokenizer_latent_for(clip_index).view(np.uint32)
    return (bits >> 16).astype("<u2").tobytes()


def build_sample_catalog(
    root: str | Path,
    videos: int = 3,
    seconds: float = 3.0,
    fps: float = 15.0,
    width: int = 320,
    height: int = 240,
    clip_frames: int = 20,
    clip_step: int = 10,
    tasks: Sequence[str] = ("pour water into the cup", "bright pad wiping", "open the left drawer"),
    latents: bool = True,
    tokenizer_latents: bool = True,
    seed: int = 0,
    lam_stride: int = 1,
    splits: Sequence[str | None] | None = None,
) -> Catalog:
    """A catalog under `root` with `videos` synthetic videos cut into overlapping clips.

    Video i gets task ``tasks[i % len(tasks)]`` (a label in `clip_labels`), and clips are windows of
    `clip_frames` frames every `clip_step` frames. Latent actions cover the pairs (k*s, (k+1)*s) of
    source frames at `lam_stride` s, as the latent-action stage writes them. `splits[i]` is video i's
    source split (as a manifest ``split`` column gives it); None leaves it to the hash split.
    """
    from egocurate.testing.videos import make_video

    root = Path(root)
    media = root / "_media"
    media.mkdir(parents=True, exist_ok=True)
    catalog = Catalog(root / "catalog")
    video_rows, clip_rows, label_rows, latent_rows, tokenizer_rows = [], [], [], [], []
    clip_counter = 0
    for v in range(videos):
        path = media / f"video_{v:03d}.mp4"
        truth = make_video(
            path, seed=seed + v, scenes=1, scene_seconds=seconds, fps=fps, width=width, height=height
        )
        n = int(truth["num_frames"])
        video_id = stable_id("video", seed, v)
        task = tasks[v % len(tasks)]
        video_rows.append(
            {
                "video_id": video_id,
                "uri": str(path.resolve()),
                "source": "synthetic",
                "dataset": "egocurate-sample",
                "task_text": task,
                "split": splits[v] if splits else None,
                "bytes": path.stat().st_size,
                "duration_s": n / fps,
                "fps": fps,
                "num_frames": n,
                "width": width,
                "height": height,
                "codec": "h264",
                "rotation": 0,
                "has_audio": False,
            }
        )
        for k, start in enumerate(range(0, n - clip_frames + 1, clip_step)):
            end = start + clip_frames
            clip_id = stable_id("clip", video_id, start, end)
            clip_rows.append(
                {
                    "clip_id": clip_id,
                    "video_id": video_id,
                    "clip_index": k,
                    "start_frame": start,
                    "end_frame": end,
                    "start_s": start / fps,
                    "end_s": end / fps,
                    "duration_s": clip_frames / fps,
                    "fps": fps,
                    "num_frames": clip_frames,
                    "split_method": "fixed",
                    "split_config": "sample",
                    "width": width,
                    "height": height,
                }
            )
            label_rows.append(
                {
                    "clip_id": clip_id,
                    "task": task,
                    "task_score": 1.0,
                    "scene": "table",
                    "label_source": "given",
                    "caption": f"a hand: {task}",
                    "objects": ["cup"],
                    "object_scores": [1.0],
                    "verb": task.split()[0],
                }
            )
            if latents:
                actions = latent_actions_for(clip_counter, (clip_frames - 1) // lam_stride + 1)
                row = {
                    "clip_id": clip_id,
                    "video_id": video_id,
                    "lam_model_id": "sample-lam",
                    "lam_stride": lam_stride,
                    "latent_actions": actions.astype("<f2").tobytes(),
                    "latent_actions_shape": list(actions.shape),
                }
                latent_rows.append(row)
            if tokenizer_latents:
                tokenizer_rows.append(
                    {
                        "clip_id": clip_id,
                        "video_id": video_id,
                        "tokenizer_id": "sample-tokenizer",
                        "window_frames": clip_frames - 3,
                        "window_starts": [start],
                        "latent": bf16_bytes(clip_counter),
                        "latent_dtype": "bfloat16",
                        "latent_shape": list(TOKENIZER_SHAPE),
                        "latent_mean": [0.0] * TOKENIZER_SHAPE[1],
                        "latent_std": [1.0] * TOKENIZER_SHAPE[1],
                    }
                )
            clip_counter += 1
    catalog.append(tables.VIDEOS, pa.Table.from_pylist(video_rows))
    catalog.append(tables.CLIPS, pa.Table.from_pylist(clip_rows))
    catalog.append(tables.CLIP_LABELS, pa.Table.from_pylist(label_rows))
    if latent_rows:
        catalog.append(tables.CLIP_LATENTS, pa.Table.from_pylist(latent_rows))
    tokenizer_spec = tables.SPECS.get("clip_tokenizer_latents")
    if tokenizer_rows and tokenizer_spec is not None:
        catalog.append(tokenizer_spec, pa.Table.from_pylist(tokenizer_rows))
    return catalog
