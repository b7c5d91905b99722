"""Synthetic catalog rows (videos, clips, quality, dedup, labels) with a long-tailed label mix.

For statistics tests and ``benchmarks/stats.py``: a million clip rows build in seconds with numpy,
and the label frequencies follow a Zipf law, as real corpora do, so the long tail is non-trivial.
Rows carry no pixels; the uris point nowhere.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from egocurate.annotate.vocabulary import Vocabulary
from egocurate.catalog import tables

DATASETS = ("ego4d-like", "egodex-like", "robot-teleop", "web-howto")
RESOLUTIONS = ((1920, 1080), (1280, 720), (640, 480), (360, 360), (3840, 2160), (426, 240))


def _ids(prefix: str, n: int, seed: int) -> np.ndarray:
    salt = hashlib.sha1(f"{prefix}{seed}".encode()).hexdigest()[:8]
    return np.char.add(f"{prefix}{salt}-", np.char.zfill(np.arange(n).astype(str), 8))


def _zipf_choice(rng: np.random.Generator, names: list[str], n: int, exponent: float = 1.1) -> np.ndarray:
    weights = 1.0 / np.arange(1, len(names) + 1) ** exponent
    order = rng.permutation(len(names))
    return np.asarray(names, dtype=object)[order][rng.choice(len(names), size=n, p=weights / weights.sum())]


def synthetic_tables(
    clips: int, videos: int | None = None, seed: int = 0, unlabelled: float = 0.05
) -> dict[str, pa.Table]:
    """Arrow tables named like the catalog tables, conforming to their specs."""
    rng = np.random.default_rng(seed)
    videos = videos or max(1, clips // 20)
    vocab = Vocabulary.load()
    video_ids = _ids("v", videos, seed)
    res = np.asarray(RESOLUTIONS)[rng.integers(0, len(RESOLUTIONS), videos)]
    fps = rng.choice([15.0, 24.0, 30.0, 60.0], size=videos)
    video_tables = pa.table(
        {
            "video_id": video_ids,
            "uri": np.char.add("/data/video/", np.char.add(video_ids, ".mp4")),
            "source": np.full(videos, "synthetic"),
            "dataset": np.asarray(DATASETS)[rng.integers(0, len(DATASETS), videos)],
            "task_text": _zipf_choice(rng, [t.name for t in vocab.tasks], videos).astype(str),
            "fps": fps,
            "width": res[:, 0].astype(np.int32),
            "height": res[:, 1].astype(np.int32),
        }
    )
    owner = rng.integers(0, videos, clips)
    clip_ids = _ids("c", clips, seed)
    duration_ms = np.clip(np.round(rng.lognormal(np.log(6000), 0.9, clips)), 500, 600_000).astype(np.int64)
    duration = duration_ms / 1000.0
    start = np.round(rng.uniform(0, 600, clips), 3)
    clip_fps = fps[owner]
    clip_table = pa.table(
        {
            "clip_id": clip_ids,
            "video_id": video_ids[owner],
            "clip_index": np.zeros(clips, np.int32),
            "start_frame": np.round(start * clip_fps).astype(np.int64),
            "end_frame": np.round((start + duration) * clip_fps).astype(np.int64),
            "start_s": start,
            "end_s": start + duration,
            "duration_s": duration,
            "fps": clip_fps,
            "split_method": np.full(clips, "synthetic"),
            "width": res[owner, 0].astype(np.int32),
            "height": res[owner, 1].astype(np.int32),
        }
    )
    quality = pa.table(
        {
            "clip_id": clip_ids,
            "video_id": video_ids[owner],
            "duration_s": duration,
            "motion": rng.gamma(2.0, 0.5, clips).astype(np.float32),
            "blur": rng.gamma(2.0, 60.0, clips).astype(np.float32),  # Laplacian variance: low is blurry
            "brightness": rng.beta(6.0, 6.0, clips).astype(np.float32),  # mean luma in [0, 1]
            "static_fraction": rng.uniform(0, 1, clips).astype(np.float32),
        }
    )
    group = np.where(rng.uniform(size=clips) < 0.1, rng.integers(0, max(1, clips // 50), clips), -1)
    group_ids = np.where(group >= 0, np.char.add("g", group.astype(str)), clip_ids)
    representative = np.ones(clips, bool)
    if clips:
        _, first = np.unique(group_ids, return_index=True)
        representative[:] = False
        representative[first] = True
    dedup = pa.table(
        {
            "clip_id": clip_ids,
            "group_id": group_ids,
            "is_representative": representative,
            "nearest_similarity": rng.uniform(0.5, 1.0, clips).astype(np.float32),
            "method": np.full(clips, "synthetic"),
        }
    )
    labelled = rng.uniform(size=clips) >= unlabelled
    object_names = list(vocab.objects)
    n_objects = rng.integers(1, 4, clips)
    flat = _zipf_choice(rng, object_names, int(n_objects.sum()))
    offsets = np.concatenate([[0], np.cumsum(n_objects)]).astype(np.int32)
    objects = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat.astype(str)))
    labels = pa.table(
        {
            "clip_id": clip_ids,
            "task": _zipf_choice(rng, [t.name for t in vocab.tasks], clips).astype(str),
            "task_score": rng.uniform(0.3, 1.0, clips).astype(np.float32),
            "scene": _zipf_choice(rng, list(vocab.scenes), clips).astype(str),
            "scene_score": rng.uniform(0.3, 1.0, clips).astype(np.float32),
            "objects": objects,
            "label_source": np.where(rng.uniform(size=clips) < 0.6, "given", "zeroshot"),
        }
    ).filter(pa.array(labelled))
    return {
        "videos": tables.conform(video_tables, tables.VIDEOS),
        "clips": tables.conform(clip_table, tables.CLIPS),
        "clip_quality": tables.conform(quality, tables.CLIP_QUALITY),
        "clip_dedup": tables.conform(dedup, tables.CLIP_DEDUP),
        "clip_labels": tables.conform(labels, tables.CLIP_LABELS),
    }
