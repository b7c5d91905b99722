"""LeRobot v2.1 export: one episode per clip; ``action`` from recorded, IDM or latent actions.

Who reads it: ``lerobot``'s ``LeRobotDataset`` (v2.1 codebase, tested with lerobot 0.3.3) does.
DreamDojo's robot loader (``groot_dreams``' ``WrappedLeRobotSingleDataset``) does **not**: it accepts
only its embodiment tags (gr1, g1, agibot, yam; ``human_egocentric`` is no valid ``EmbodimentTag``),
reads hard-coded per-embodiment video keys (such as ``ego_view_freq20``) and needs ``state``
columns, which egocentric video does not have. Train DreamDojo on human video from the MP4 export
or, with the precomputed latent actions, from shards (``egocurate.integrations.dreamdojo``).

Layout: lerobot's v2.1 one, defined once in ``egocurate.lerobot_layout`` (the LeRobot reader of
ingest and the test writer use the same definitions), with one camera, ``observation.images.ego_view``;
``meta/stats.json`` holds mean/std/min/max/q01/q99 per numeric feature and for the video. Besides
lerobot's files, ``meta/modality.json`` (GR00T's modality map: action, video, annotation), the
episode -> clip sidecar and the export marker.

Row t of an episode holds the action taken at frame t (towards t+1). Its source is chosen per
episode from a preference order (``export.actions``): recorded robot actions (``real``), an IDM's
pseudo-actions (``idm``), latent actions (``latent``; the last frame, with no successor, is zero)
or ``zeros``. The default, ``latent,zeros``, is the export as it always was: latent actions, zeros
for clips without them. ``info.json`` (``egocurate_action``) says which sources were used, how
often and with which models; each episode's source, model and checkpoint hash are in
``meta/episodes.jsonl`` (``action_source``) and ``meta/egocurate_episodes.parquet`` (which maps
episodes back to catalog clips). A clip that has no action of an allowed source is left out and
counted (``episodes_left_out_without_action``).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from egocurate.catalog.rows import first_present
from egocurate.catalog.selection import DEFAULT_QUERY, catalog_version, select_clips, split_for
from egocurate.catalog.store import Catalog
from egocurate.export.actions import (
    KINDS,
    ActionPlan,
    ActionRows,
    episode_actions,
    parse_action_source,
    plan_actions,
)
from egocurate.export.common import ExportReport, Staging, check_fps, write_atomic
from egocurate.lerobot_layout import (
    ACTION_KEY,
    EPISODES,
    EPISODES_STATS,
    INDEX_FEATURES,
    INFO,
    STATS,
    TASKS,
    data_file,
    info_json,
    jsonl,
    scalar_feature,
    vector_feature,
    video_feature,
    video_file,
)
from egocurate.media.encode import encode_mp4, ordered_map, render_clip, render_rate_plan
from egocurate.media.source import clip_source

VIDEO_KEY = "observation.images.ego_view"
TASK_COLUMN = "annotation.human.task_description"  # GR00T's task annotation, beside task_index
LATENT_DIM = 32
SCALARS = {**INDEX_FEATURES, TASK_COLUMN: "int64"}
MODALITY = "meta/modality.json"
MARKER = "meta/egocurate_export.json"
SIDECAR = "meta/egocurate_episodes.parquet"  # episode -> clip_id (also how a re-export compares)
SPLIT_ORDER = {"train": 0, "val": 1}


def features(
    fps: float, width: int, height: int, action_dim: int = LATENT_DIM, names: list[str] | None = None
) -> dict[str, Any]:
    """The `features` block of info.json."""
    out: dict[str, Any] = {
        VIDEO_KEY: video_feature(height, width, fps),
        ACTION_KEY: vector_feature(action_dim, names or [f"latent_{i}" for i in range(action_dim)]),
    }
    out.update({name: scalar_feature(dtype) for name, dtype in SCALARS.items()})
    return out


def data_schema(action_dim: int = LATENT_DIM) -> pa.Schema:
    """Arrow schema of an episode's parquet (as HF datasets writes LeRobot features)."""
    fields = [(ACTION_KEY, pa.list_(pa.float32(), action_dim))]
    fields += [(name, pa.float32() if dtype == "float32" else pa.int64()) for name, dtype in SCALARS.items()]
    return pa.schema(fields)


def array_stats(values: np.ndarray) -> dict[str, list]:
    """min/max/mean/std/count over axis 0 (LeRobot's per-episode statistics)."""
    values = values.astype(np.float64)
    return {
        "min": values.min(axis=0).tolist(),
        "max": values.max(axis=0).tolist(),
        "mean": values.mean(axis=0).tolist(),
        "std": values.std(axis=0).tolist(),
        "count": [int(len(values))],
    }


class ImageStats:
    """Running per-channel statistics of frames in [0, 1] (LeRobot stores them as (3, 1, 1)).

    Every 4th pixel of every 4th row is sampled. Besides sums, it keeps a 256-bin histogram per
    channel of the sampled uint8 values: quantiles cannot be pooled from sums, but histograms add up
    across episodes and give the exact quantiles of the pooled sample (see :func:`image_quantiles`).
    """

    def __init__(self) -> None:
        self.n = 0
        self.total = np.zeros(3)
        self.total_sq = np.zeros(3)
        self.lo = np.full(3, np.inf)
        self.hi = np.full(3, -np.inf)
        self.frames = 0
        self.histogram = np.zeros((3, 256), dtype=np.int64)

    def update(self, frames: np.ndarray) -> None:
        pixels = frames[:, ::4, ::4].reshape(-1, 3)
        sample = pixels.astype(np.float64) / 255.0
        self.n += len(sample)
        self.total += sample.sum(axis=0)
        self.total_sq += (sample**2).sum(axis=0)
        self.lo = np.minimum(self.lo, sample.min(axis=0))
        self.hi = np.maximum(self.hi, sample.max(axis=0))
        self.frames += len(frames)
        levels = np.clip(pixels, 0, 255).astype(np.int64)
        for channel in range(3):
            self.histogram[channel] += np.bincount(levels[:, channel], minlength=256)

    def as_dict(self) -> dict[str, list]:
        """LeRobot's per-episode image statistics (min/max/mean/std/count, each (3, 1, 1))."""
        mean = self.total / max(self.n, 1)
        std = np.sqrt(np.maximum(self.total_sq / max(self.n, 1) - mean**2, 0))
        return {
            "min": chw(self.lo),
            "max": chw(self.hi),
            "mean": chw(mean),
            "std": chw(std),
            "count": [self.frames],
        }


def chw(values: np.ndarray) -> list:
    """Per-channel values as LeRobot's (3, 1, 1) nested list."""
    return [[[float(x)]] for x in values]


def histogram_quantile(counts: np.ndarray, q: float) -> float:
    """``np.quantile(values, q)`` (linear interpolation) of the integers whose counts are `counts`.

    The k-th smallest value is the first level whose cumulative count exceeds k, so this equals the
    quantile of the expanded sample without expanding it.
    """
    cumulative = np.cumsum(counts)
    total = int(cumulative[-1])
    if total == 0:
        raise ValueError("quantile of an empty histogram")
    position = (total - 1) * q
    below = int(np.floor(position))
    low = int(np.searchsorted(cumulative, below, side="right"))
    high = int(np.searchsorted(cumulative, min(below + 1, total - 1), side="right"))
    return low + (position - below) * (high - low)


def image_quantiles(histograms: Sequence[np.ndarray], qs: Mapping[str, float]) -> dict[str, list]:
    """Per-channel quantiles in [0, 1], as (3, 1, 1) lists, of the pooled uint8 `histograms`."""
    pooled = np.sum(histograms, axis=0)
    return {name: chw(np.array([histogram_quantile(c, q) for c in pooled]) / 255.0) for name, q in qs.items()}


def render_episode(
    view_row: Mapping[str, Any],
    rows: ActionRows,
    source: str,
    dim: int,
    fps: float,
    width: int,
    height: int,
    min_frames: int,
    crf: int,
) -> dict[str, Any]:
    """One clip as an episode: MP4 bytes, per-frame actions from `source` and image statistics.

    The dataset has one frame rate, so a source slower than `fps` is refused (``LowFrameRate``),
    never frame-duplicated up to it.
    """
    clip = clip_source(view_row)
    offsets, _ = render_rate_plan(clip.num_frames, clip.fps, fps, None, "refuse")
    if len(offsets) < min_frames:
        raise ValueError(f"{len(offsets)} frames at {fps:g} fps < {min_frames}")
    action = episode_actions(source, view_row, rows, offsets, clip.num_frames, dim)
    stats = ImageStats()

    def frames():
        for chunk in render_clip(clip, offsets, width, height):
            stats.update(chunk)
            yield chunk

    video = encode_mp4(frames(), fps, crf=crf)
    return {
        "video": video,
        "actions": action["values"],
        "image_stats": stats.as_dict(),
        "image_histogram": stats.histogram,
        "alignment": action["alignment"],
        "offsets": offsets,
        "action": action,
    }


def export_lerobot(
    catalog: Catalog,
    out: str,
    query: str | None = None,
    task: str | None = None,
    fps: float = 10.0,
    width: int = 640,
    height: int = 480,
    min_frames: int = 2,
    val_fraction: float = 0.0,
    robot_type: str = "human_egocentric",
    chunks_size: int = 1000,
    crf: int = 20,
    thresholds: Mapping[str, float] | None = None,
    workers: int | None = None,
    progress: bool = True,
    replace: bool = False,
    action_source: str | Sequence[str] | None = None,
    origin: str | None = None,
) -> ExportReport:
    """Write the selected clips as a LeRobot v2.1 dataset; ``action`` from `action_source`.

    `action_source` is a preference order of ``real``, ``idm``, ``latent`` and ``zeros`` (default
    ``latent,zeros``, see ``export.actions``); `origin` keeps only ``real`` or ``generated`` clips.

    Episodes are ordered by split, train first, then val, then any other: each clip's source split
    (a manifest ``split`` column) where it has one, else by a hash of ``video_id``. ``info.json``'s
    ``splits`` gives each range. The dataset is staged next to `out` and swapped in whole
    (``export.common.Staging``); `replace` accepts dropping most of an earlier export. Every path
    below `out` comes from the fixed templates and integer indices (labels, datasets and splits are
    only ever file contents), and each write is checked to stay inside the staging folder.
    """
    check_fps(fps)
    staging = Staging(out, MARKER)
    try:
        order = parse_action_source(action_source)
        return _export(staging, catalog, query, task, fps, width, height, min_frames, val_fraction,
                       robot_type, chunks_size, crf, thresholds, workers, progress, replace, order,
                       origin)  # fmt: skip
    finally:
        staging.abandon()  # a no-op once published


def _export(
    staging: Staging,
    catalog: Catalog,
    query: str | None,
    task: str | None,
    fps: float,
    width: int,
    height: int,
    min_frames: int,
    val_fraction: float,
    robot_type: str,
    chunks_size: int,
    crf: int,
    thresholds: Mapping[str, float] | None,
    workers: int | None,
    progress: bool,
    replace: bool,
    order: tuple[str, ...],
    origin: str | None,
) -> ExportReport:
    started = time.perf_counter()
    root = staging.path
    view = select_clips(catalog, query, task, thresholds, origin=origin).to_pylist()
    action_rows = ActionRows.load(catalog, view, order)
    plan = plan_actions(view, action_rows, order)
    for row in view:
        row["_split"] = split_for(row, val_fraction)
    view.sort(key=lambda r: (SPLIT_ORDER.get(r["_split"], len(SPLIT_ORDER)), r["_split"], r["clip_id"]))
    report = ExportReport(out=str(staging.out))
    report.skipped.update(plan.left_out)
    renderable = [r for r in view if r["clip_id"] in plan.chosen]

    def build(row: dict) -> dict[str, Any]:
        source = plan.chosen[row["clip_id"]]
        return render_episode(row, action_rows, source, plan.dim, fps, width, height, min_frames, crf)

    tasks: dict[str, int] = {}
    episodes, episode_stats, sidecar, image_histograms = [], [], [], []
    all_actions, all_scalars = [], {name: [] for name in SCALARS}
    split_counts: dict[str, int] = {}
    index = 0
    workers = workers or max(1, os.cpu_count() or 1)
    for row, result in tqdm(
        ordered_map(build, renderable, workers), total=len(renderable), desc="lerobot", disable=not progress
    ):
        if isinstance(result, Exception):
            report.skipped[row["clip_id"]] = f"{type(result).__name__}: {result}"
            continue
        episode = len(episodes)
        label = first_present(row.get("task"), row.get("task_text"), "untitled")
        task_index = tasks.setdefault(label, len(tasks))
        length = len(result["offsets"])
        frame_index = np.arange(length, dtype=np.int64)
        columns = {
            ACTION_KEY: result["actions"],
            "timestamp": (frame_index / fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(length, episode, dtype=np.int64),
            "index": np.arange(index, index + length, dtype=np.int64),
            "task_index": np.full(length, task_index, dtype=np.int64),
            TASK_COLUMN: np.full(length, task_index, dtype=np.int64),
        }
        table = pa.table(
            {
                ACTION_KEY: pa.FixedSizeListArray.from_arrays(pa.array(result["actions"].ravel()), plan.dim),
                **{name: pa.array(columns[name]) for name in SCALARS},
            },
            schema=data_schema(plan.dim),
        )
        data_path = staging.file(data_file(episode, chunks_size))
        data_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, data_path)
        write_atomic(
            staging.file(video_file(episode, VIDEO_KEY, chunks_size)),
            result["video"],
        )
        action = result["action"]
        episodes.append(
            {"episode_index": episode, "tasks": [label], "length": length, "action_source": action["source"]}
        )
        stats = {ACTION_KEY: array_stats(result["actions"]), VIDEO_KEY: result["image_stats"]}
        for name in SCALARS:
            stats[name] = array_stats(columns[name][:, None])
            all_scalars[name].append(columns[name])
        episode_stats.append({"episode_index": episode, "stats": stats})
        image_histograms.append(result["image_histogram"])
        all_actions.append(result["actions"])
        split_counts[row["_split"]] = split_counts.get(row["_split"], 0) + 1
        sidecar.append(
            {
                "episode_index": episode,
                "clip_id": row["clip_id"],
                "video_id": row.get("video_id"),
                "uri": row.get("uri"),
                "start_frame": row.get("start_frame"),
                "end_frame": row.get("end_frame"),
                "task": label,
                "split": row["_split"],
                "origin": row.get("origin") or "real",
                "action_source": action["source"],
                "action_alignment": action["alignment"],
                "action_model_id": action["model_id"],
                "action_checkpoint_hash": action["checkpoint_hash"],
                "has_latent_actions": action["source"] == "latent" and result["alignment"] is not None,
                "latent_actions_alignment": result["alignment"] if action["source"] == "latent" else None,
                "lam_model_id": action["model_id"] if action["source"] == "latent" else None,
            }
        )
        index += length
        report.written += 1

    (root / INFO).parent.mkdir(parents=True, exist_ok=True)
    total = len(episodes)
    fps_value: float | int = int(fps) if float(fps).is_integer() else float(fps)
    splits, first = {}, 0
    for name, count in split_counts.items():  # episodes are ordered by split: contiguous ranges
        splits[name] = f"{first}:{first + count}"
        first += count
    splits = splits or {"train": "0:0"}
    info = info_json(
        robot_type=robot_type,
        fps=fps_value,
        total_episodes=total,
        total_frames=index,
        total_tasks=len(tasks),
        total_videos=total,
        splits=splits,
        features=features(fps_value, width, height, plan.dim, plan.names),
        chunks_size=chunks_size,
    )
    info["egocurate_action"] = action_provenance(sidecar, plan)
    (root / INFO).write_text(json.dumps(info, indent=4))
    (root / EPISODES).write_text(jsonl(episodes))
    (root / TASKS).write_text(jsonl({"task_index": i, "task": t} for t, i in tasks.items()))
    (root / EPISODES_STATS).write_text(jsonl(episode_stats))
    (root / STATS).write_text(
        json.dumps(
            dataset_stats(all_actions, all_scalars, episode_stats, plan.dim, image_histograms), indent=2
        )
    )
    (root / MODALITY).write_text(json.dumps(modality(plan), indent=2))
    pq.write_table(
        pa.Table.from_pylist(sidecar) if sidecar else pa.table({"episode_index": pa.array([], pa.int64())}),
        root / SIDECAR,
    )
    marker = {
        "created": datetime.now(UTC).isoformat(),
        "catalog": catalog.root,
        "catalog_version": catalog_version(catalog),
        "query": query or DEFAULT_QUERY,
        "task": task,
        "fps": fps_value,
        "rendered_fps": [fps_value] if total else [],
        "action": action_provenance(sidecar, plan),
        "origin": origin,
        "skipped": report.skipped,
    }
    (root / MARKER).write_text(json.dumps(marker, indent=2))
    staging.publish(
        previous=staging.previous_ids(SIDECAR),
        written={r["clip_id"] for r in sidecar},
        selected={r["clip_id"] for r in view},
        files=[INFO, SIDECAR],
        replace=replace,
        report=report,
    )
    report.seconds = time.perf_counter() - started
    return report


def action_provenance(episodes: list[dict[str, Any]], plan: ActionPlan | None = None) -> dict[str, Any]:
    """Where ``action`` came from: the sources used (and how often), the models behind them.

    ``models`` are the latent-action models (id and checkpoint hash, episodes). Model ids are
    ``file@sha256-prefix`` for a weights file (``latent_actions.common.file_model_id``) or
    ``lam-random-init-...`` for an untrained model, which is flagged ``random_init``. ``idm_models``
    are the inverse dynamics models (id, checkpoint hash, episodes); ``real_formats`` the formats
    the recorded actions were read from. Per episode: ``meta/episodes.jsonl``'s ``action_source``.
    """
    by_source: dict[str, int] = {}
    idm_models: dict[str, dict[str, Any]] = {}
    real_formats: dict[str, int] = {}
    for episode in episodes:
        source = episode.get("action_source") or "latent"
        by_source[source] = by_source.get(source, 0) + 1
        if source == "idm":
            entry = idm_models.setdefault(
                episode.get("action_model_id") or "unknown",
                {"checkpoint_hash": episode.get("action_checkpoint_hash"), "episodes": 0},
            )
            entry["episodes"] += 1
        elif source == "real":
            name = episode.get("action_model_id") or "unknown"
            real_formats[name] = real_formats.get(name, 0) + 1
    models: dict[str, dict[str, Any]] = {}
    for episode in episodes:
        model_id = episode.get("lam_model_id")
        if model_id is None:
            continue
        name, _, digest = model_id.partition("@")
        entry = models.setdefault(
            model_id,
            {
                "checkpoint": name if digest else None,
                "checkpoint_hash": digest or None,
                "random_init": "random-init" in model_id,
                "episodes": 0,
            },
        )
        entry["episodes"] += 1
    used = [s for s in (plan.order if plan else KINDS) if by_source.get(s)]
    return {
        "kind": KINDS[used[0]] if len(used) == 1 else ("mixed" if used else "none"),
        "preference": list(plan.order) if plan else ["latent", "zeros"],
        "dim": plan.dim if plan else LATENT_DIM,
        "names": plan.names if plan else None,
        "episodes_by_source": by_source,
        "models": models,
        "idm_models": idm_models,
        "real_formats": real_formats,
        "episodes_without_actions": sum(1 for e in episodes if e.get("lam_model_id") is None
                                         and e.get("action_source") in (None, "latent", "zeros")),
        "episodes_left_out_without_action": len(plan.left_out) if plan else 0,
    }  # fmt: skip


def dataset_stats(
    actions: list[np.ndarray],
    scalars: Mapping[str, list[np.ndarray]],
    episode_stats: list[dict],
    dim: int = LATENT_DIM,
    image_histograms: Sequence[np.ndarray] | None = None,
) -> dict[str, Any]:
    """stats.json: mean/std/min/max/q01/q99 per numeric feature and for the video.

    Every feature carries all six because DreamDojo's ``DatasetStatisticalValues`` requires them
    and rejects the whole file otherwise. The video's q01/q99 come from the episodes' pixel
    histograms (`image_histograms`, :class:`ImageStats`), the same sampled pixels as its mean.
    """
    out: dict[str, Any] = {}
    arrays = {ACTION_KEY: np.concatenate(actions) if actions else np.zeros((0, dim))}
    arrays.update({k: np.concatenate(v)[:, None] if v else np.zeros((0, 1)) for k, v in scalars.items()})
    for name, values in arrays.items():
        if len(values) == 0:
            continue
        values = values.astype(np.float64)
        out[name] = {
            "mean": values.mean(axis=0).tolist(),
            "std": values.std(axis=0).tolist(),
            "min": values.min(axis=0).tolist(),
            "max": values.max(axis=0).tolist(),
            "q01": np.quantile(values, 0.01, axis=0).tolist(),
            "q99": np.quantile(values, 0.99, axis=0).tolist(),
        }
    images = [e["stats"][VIDEO_KEY] for e in episode_stats]
    if images:
        weights = np.array([s["count"][0] for s in images], dtype=np.float64)
        mean = np.average([np.array(s["mean"]) for s in images], axis=0, weights=weights)
        sq = np.average(
            [np.array(s["std"]) ** 2 + np.array(s["mean"]) ** 2 for s in images], axis=0, weights=weights
        )
        out[VIDEO_KEY] = {
            "mean": mean.tolist(),
            "std": np.sqrt(np.maximum(sq - mean**2, 0)).tolist(),
            "min": np.min([s["min"] for s in images], axis=0).tolist(),
            "max": np.max([s["max"] for s in images], axis=0).tolist(),
        }
        if image_histograms is None or len(image_histograms) != len(images):
            raise ValueError("the video's q01/q99 need one pixel histogram per episode")
        out[VIDEO_KEY].update(image_quantiles(image_histograms, {"q01": 0.01, "q99": 0.99}))
    return out


def modality(plan: ActionPlan | None = None) -> dict[str, Any]:
    """GR00T's meta/modality.json: how the packed columns split into named modalities."""
    latent = plan is None or set(plan.chosen.values()) <= {"latent", "zeros"}
    dim = plan.dim if plan else LATENT_DIM
    return {
        "state": {},
        "action": {("latent_action" if latent else "robot_action"): {"start": 0, "end": dim}},
        "video": {"ego_view": {"original_key": VIDEO_KEY}},
        "annotation": {"human.task_description": {"original_key": TASK_COLUMN}},
    }
