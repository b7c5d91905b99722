"""Training shards: Parquet files of ready-to-train clips, written from a query over the catalog.

One row per clip: the clip as H.264 MP4 bytes at the training resolution and frame rate, its
tokenizer latents and latent actions (when the catalog has them), labels, source and quality.
Rows are written in a seeded hash order, so every shard and row group is a random mix of videos;
the streaming loader then only needs a shard permutation and a bounded buffer to shuffle well.

Each clip goes to its source's split (a manifest ``split`` column, kept in ``videos.split``); where
a source has none, train and validation are split by a hash of ``video_id``; a split is a folder
name, so one that is not a safe path segment is refused (``shards.target.safe_split``). Shards are
closed, then renamed into place; the manifest is published last and atomically; then the shard
files of ours it does not list are deleted (``shards.target.remove_orphans``: only inside ``out``,
never a live writer's) and the ``shards`` table is made to list exactly its shards
(``shards.registry``). A writer killed at any point leaves no manifest entry pointing at a partial
file, and the next write removes what it left.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from egocurate.actions.align import align_idm_actions, align_latent_actions, align_real_actions
from egocurate.catalog.rows import first_present, quality_scores
from egocurate.catalog.selection import (
    DEFAULT_QUERY,
    catalog_version,
    episode_actions_for,
    idm_actions_for,
    latents_for,
    select_clips,
    shuffled_ids,
    split_for,
)
from egocurate.catalog.store import Catalog
from egocurate.media.encode import encode_mp4, ordered_map, render_rate_plan
from egocurate.media.encode import render_clip as render_frames
from egocurate.media.source import clip_source
from egocurate.shards.manifest import Manifest, ShardInfo, filesystem, join, write_manifest
from egocurate.shards.registry import sync_registry
from egocurate.shards.target import (  # noqa: F401 - errors, OWN_FILE: re-exported
    OWN_FILE,
    ShardSplitError,
    ShardTargetError,
    WriterLease,
    check_splits,
    check_target,
    inside,
    is_local,
    remove_orphans,
    safe_split,
)

MB = 1 << 20
SHARD_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("video_id", pa.string()),
        ("split", pa.string()),
        ("source", pa.string()),
        ("dataset", pa.string()),
        ("uri", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("fps", pa.float32()),
        ("num_frames", pa.int32()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("video", pa.binary()),  # H.264 MP4 bytes at the training resolution and fps
        ("latent", pa.binary()),  # tokenizer latent, bfloat16 little-endian bytes
        ("latent_shape", pa.list_(pa.int32())),
        ("latent_dtype", pa.string()),
        ("tokenizer_id", pa.string()),
        ("latent_mean", pa.list_(pa.float32())),  # per-channel normalisation of the latent
        ("latent_std", pa.list_(pa.float32())),
        ("latent_window_starts", pa.list_(pa.int64())),  # source frame of each encoded window
        ("latent_window_frames", pa.int32()),
        ("latent_actions", pa.binary()),  # (num_frames-1, 32) float16, row i = frames (i, i+1) of `video`
        ("latent_actions_shape", pa.list_(pa.int32())),
        ("latent_actions_dtype", pa.string()),
        ("latent_actions_alignment", pa.string()),  # "exact" (LAM rate = video rate) or "nearest"
        ("lam_model_id", pa.string()),
        ("lam_stride", pa.int32()),
        # Robot actions (issue 16): recorded ones per rendered frame (num_frames, A) float32, and IDM
        # pseudo-actions per frame pair (num_frames-1, A) float16; ShardDataset(action_source=...)
        # yields whichever comes first in its order as `action`.
        ("real_actions", pa.binary()),
        ("real_actions_shape", pa.list_(pa.int32())),
        ("real_actions_dtype", pa.string()),
        ("idm_actions", pa.binary()),
        ("idm_actions_shape", pa.list_(pa.int32())),
        ("idm_actions_dtype", pa.string()),
        ("idm_model_id", pa.string()),
        ("idm_checkpoint_hash", pa.string()),
        ("action_names", pa.list_(pa.string())),
        ("origin", pa.string()),
        ("task", pa.string()),
        ("scene", pa.string()),
        ("verb", pa.string()),
        ("objects", pa.list_(pa.string())),
        ("caption", pa.string()),
        ("label_source", pa.string()),
        ("quality", pa.map_(pa.string(), pa.float32())),
    ]
)
# Columns holding array bytes, each with the companion columns needed to decode it.
ARRAY_COLUMNS = {
    "latent": ("latent_shape", "latent_dtype"),
    "latent_actions": ("latent_actions_shape", "latent_actions_dtype"),
    "real_actions": ("real_actions_shape", "real_actions_dtype"),
    "idm_actions": ("idm_actions_shape", "idm_actions_dtype"),
}
INCOMPRESSIBLE = ("video", "latent")


@dataclass(frozen=True)
class ShardParams:
    """How clips are rendered and packed (recorded in the manifest)."""

    fps: float | None = None  # None: the latent-action model's rate (native / lam_stride), else native
    low_fps: str = "native"  # a source below `fps`: "native" keeps its rate, "refuse" leaves it out
    width: int = 640
    height: int = 480
    crf: int = 23
    gop: int | None = None  # keyframe interval in frames; default one second
    min_frames: int = 13  # the DreamDojo adapter reads 13-frame windows
    target_bytes: int = 512 * MB
    row_group_bytes: int = 32 * MB
    row_group_rows: int = 4096
    val_fraction: float = 0.05
    split_salt: str = "egocurate-split"
    seed: int = 0


@dataclass
class WriteReport:
    """What a shard write produced and what it left out (and why)."""

    manifest_url: str
    manifest: Manifest
    skipped: dict[str, str] = field(default_factory=dict)  # clip_id -> reason
    seconds: float = 0.0


# ----------------------------------------------------------------------------- arrays
def bf16_bytes(array: Any) -> tuple[bytes, list[int]]:
    """(bfloat16 little-endian bytes, shape) of a float array or tensor (rounded to nearest even)."""
    if hasattr(array, "detach"):
        import torch

        t = array.detach().to(torch.bfloat16).contiguous().cpu()
        return t.view(torch.int16).numpy().astype("<i2").tobytes(), [int(s) for s in t.shape]
    bits = np.ascontiguousarray(np.asarray(array, dtype=np.float32)).view(np.uint32)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype("<u2")
    return rounded.tobytes(), [int(s) for s in bits.shape]


def load_latent(
    uri: str, shape: list[int] | None, storage_options: dict | None = None
) -> tuple[bytes, list[int]]:
    """A tokenizer latent from `latent_uri` as bf16 bytes + shape (.safetensors, .npy, .pt or raw bf16)."""
    fs, path = filesystem(uri, storage_options)
    with fs.open(path, "rb") as fh:
        data = fh.read()
    if path.endswith(".safetensors"):
        from safetensors.torch import load

        tensors = load(data)
        tensor = tensors.get("latent", next(iter(tensors.values())))
        return bf16_bytes(tensor)
    if path.endswith(".npy"):
        import io

        return bf16_bytes(np.load(io.BytesIO(data), allow_pickle=False))
    if path.endswith((".pt", ".pth")):
        import io

        import torch

        obj = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        tensor = obj.get("latent", next(iter(obj.values()))) if isinstance(obj, dict) else obj
        return bf16_bytes(tensor)
    if not shape:
        raise ValueError(f"raw latent {uri} has no shape in clip_latents")
    return data, [int(s) for s in shape]


# ----------------------------------------------------------------------------- rows
def clip_offsets(
    num_frames: int, src_fps: float, fps: float | None, lam_stride: int | None, low_fps: str = "native"
) -> tuple[list[int], float]:
    """(source frame offsets, output fps) of a rendered clip (see ``media.encode.render_rate_plan``).

    `fps` None renders at the latent-action model's rate (every `lam_stride`-th frame, the frames
    the LAM saw), so latent actions line up exactly with consecutive frames; native rate otherwise.
    """
    return render_rate_plan(num_frames, src_fps, fps, lam_stride, low_fps)


def render_clip(
    view_row: Mapping[str, Any], params: ShardParams, lam_stride: int | None = None
) -> tuple[bytes, list[int], float]:
    """(MP4 bytes, source frame offsets, fps) of one clip at the training resolution and frame rate."""
    clip = clip_source(view_row)
    offsets, out_fps = clip_offsets(clip.num_frames, clip.fps, params.fps, lam_stride, params.low_fps)
    if len(offsets) < params.min_frames:
        raise ClipTooShort(f"{len(offsets)} frames at {out_fps:g} fps < min_frames {params.min_frames}")
    frames = render_frames(clip, offsets, params.width, params.height)
    return encode_mp4(frames, out_fps, crf=params.crf, gop=params.gop), offsets, out_fps


class ClipTooShort(ValueError):
    """The clip has fewer frames than the consumer needs (after resampling)."""


def shard_row(
    view_row: Mapping[str, Any],
    latent_row: Mapping[str, Any] | None,
    split: str,
    params: ShardParams,
    storage_options: dict | None = None,
    real_row: Mapping[str, Any] | None = None,
    idm_row: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One shard row: the rendered clip plus latents, robot actions, labels, source and quality."""
    lat = latent_row or {}
    video, offsets, fps = render_clip(view_row, params, lat.get("lam_stride"))
    robot = robot_action_columns(view_row, real_row, idm_row, offsets)
    latent, latent_shape = None, None
    if lat.get("latent"):  # stored inline (bf16 bytes)
        latent, latent_shape = lat["latent"], lat.get("latent_shape")
    elif lat.get("latent_uri"):
        latent, latent_shape = load_latent(lat["latent_uri"], lat.get("latent_shape"), storage_options)
    actions, alignment = align_latent_actions(
        lat.get("latent_actions"), lat.get("latent_actions_shape"), lat.get("lam_stride"), offsets
    )
    return {
        "clip_id": view_row["clip_id"],
        "video_id": view_row.get("video_id"),
        "split": split,
        "source": view_row.get("source"),
        "dataset": view_row.get("dataset"),
        "uri": view_row.get("uri"),
        "start_s": view_row.get("start_s"),
        "end_s": view_row.get("end_s"),
        "fps": fps,
        "num_frames": len(offsets),
        "width": params.width,
        "height": params.height,
        "video": video,
        "latent": latent,
        "latent_shape": latent_shape,
        "latent_dtype": "bfloat16" if latent is not None else None,
        "tokenizer_id": lat.get("tokenizer_id"),
        "latent_mean": lat.get("latent_mean"),
        "latent_std": lat.get("latent_std"),
        "latent_window_starts": lat.get("window_starts"),
        "latent_window_frames": lat.get("window_frames"),
        "latent_actions": None if actions is None else actions.astype("<f2").tobytes(),
        "latent_actions_shape": None if actions is None else list(actions.shape),
        "latent_actions_dtype": None if actions is None else "float16",
        "latent_actions_alignment": alignment,
        "lam_model_id": lat.get("lam_model_id"),
        "lam_stride": lat.get("lam_stride"),
        **robot,
        "origin": view_row.get("origin") or "real",
        "task": first_present(view_row.get("task"), view_row.get("task_text")),
        "scene": view_row.get("scene"),
        "verb": view_row.get("verb"),
        "objects": view_row.get("objects"),
        "caption": first_present(view_row.get("caption"), view_row.get("text"), view_row.get("task_text")),
        "label_source": view_row.get("label_source"),
        "quality": quality_scores(view_row),
    }


def robot_action_columns(
    view_row: Mapping[str, Any],
    real_row: Mapping[str, Any] | None,
    idm_row: Mapping[str, Any] | None,
    offsets: list[int],
) -> dict[str, Any]:
    """Shard columns of the clip's recorded actions (per frame) and IDM pseudo-actions (per pair)."""
    out: dict[str, Any] = {}
    names = None
    if real_row and real_row.get("actions") is not None:
        real = align_real_actions(real_row["actions"], real_row.get("actions_shape"), view_row, offsets)
        if real is not None:
            out.update(
                real_actions=real.astype("<f4").tobytes(),
                real_actions_shape=list(real.shape),
                real_actions_dtype="float32",
            )
            names = real_row.get("action_names")
    if idm_row and idm_row.get("actions") is not None:
        span = clip_source(view_row).num_frames
        idm, _ = align_idm_actions(idm_row["actions"], idm_row.get("actions_shape"), span, offsets)
        if idm is not None and len(idm) > 1:
            pairs = idm[:-1]
            out.update(
                idm_actions=pairs.astype("<f2").tobytes(),
                idm_actions_shape=list(pairs.shape),
                idm_actions_dtype="float16",
                idm_model_id=idm_row.get("idm_model_id"),
                idm_checkpoint_hash=idm_row.get("checkpoint_hash"),
            )
            names = names or idm_row.get("action_names")
    out["action_names"] = list(names) if names else None
    return out


# ----------------------------------------------------------------------------- files
def _row_bytes(row: Mapping[str, Any]) -> int:
    return sum(len(v) for v in row.values() if isinstance(v, bytes | bytearray)) + 256


class ShardFileWriter:
    """Packs rows into Parquet shards of about `target_bytes`, in row groups of `row_group_bytes`.

    Local shards are written under a temporary name and renamed when closed; object stores publish
    an object only when its upload completes, so they are written in place.
    """

    def __init__(
        self,
        out: str,
        split: str,
        run_id: str,
        schema: pa.Schema = SHARD_SCHEMA,
        target_bytes: int = 512 * MB,
        row_group_bytes: int = 32 * MB,
        row_group_rows: int = 4096,
        storage_options: dict | None = None,
    ):
        self.out, self.split, self.run_id, self.schema = out, safe_split(split), run_id, schema
        self.target_bytes, self.row_group_bytes, self.row_group_rows = (
            target_bytes,
            row_group_bytes,
            row_group_rows,
        )
        self.fs, self.base = filesystem(out, storage_options)
        self.local = is_local(self.fs)
        self.shards: list[ShardInfo] = []
        self._rows: list[dict] = []
        self._pending_bytes = 0
        self._file = None
        self._writer: pq.ParquetWriter | None = None
        self._groups: list[int] = []
        self._shard_bytes = 0
        self._path = ""
        self._tmp = ""

    def _open(self) -> None:
        rel = f"{self.split}/shard-{len(self.shards):05d}-{self.run_id}.parquet"
        self._path = rel
        final = f"{self.base.rstrip('/')}/{rel}"
        self._tmp = f"{final}.partial" if self.local else final
        folder = final.rsplit("/", 1)[0]
        self.fs.makedirs(folder, exist_ok=True)
        if not inside(self.fs, self.base, final):  # e.g. <out>/<split> is a link to another folder
            raise ShardTargetError(f"{folder} leads outside {self.out}; remove that link")
        self._file = self.fs.open(self._tmp, "wb")
        names = self.schema.names
        self._writer = pq.ParquetWriter(
            self._file,
            self.schema,
            compression={n: ("none" if n in INCOMPRESSIBLE else "zstd") for n in names},
            write_statistics=[n for n in names if n not in INCOMPRESSIBLE and n not in ARRAY_COLUMNS],
            use_dictionary=[f.name for f in self.schema if pa.types.is_string(f.type)],
        )
        self._groups = []
        self._shard_bytes = 0

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        self._pending_bytes += _row_bytes(row)
        if self._pending_bytes >= self.row_group_bytes or len(self._rows) >= self.row_group_rows:
            self._flush_group()

    def _flush_group(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            self._open()
        table = pa.Table.from_pylist(self._rows, schema=self.schema)
        self._writer.write_table(table, row_group_size=table.num_rows)
        self._groups.append(table.num_rows)
        # The Parquet writer holds the last row group until the next one starts, so the file
        # position lags; the payload (mostly incompressible media bytes) is the better measure.
        self._shard_bytes += self._pending_bytes
        self._rows, self._pending_bytes = [], 0
        if max(self._file.tell(), self._shard_bytes) >= self.target_bytes:
            self._close_shard()

    def _close_shard(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        self._file.close()
        final = f"{self.base.rstrip('/')}/{self._path}"
        if self._tmp != final:
            self.fs.mv(self._tmp, final)
        size = int(self.fs.size(final))
        self.shards.append(
            ShardInfo(
                path=self._path,
                split=self.split,
                rows=sum(self._groups),
                bytes=size,
                row_groups=list(self._groups),
                url=join(self.out, self._path),
            )
        )
        self._writer, self._file = None, None

    def close(self) -> list[ShardInfo]:
        self._flush_group()
        self._close_shard()
        return self.shards


def write_rows(
    rows: Iterable[dict[str, Any]],
    out: str,
    split: str,
    run_id: str | None = None,
    schema: pa.Schema = SHARD_SCHEMA,
    storage_options: dict | None = None,
    **sizes: int,
) -> list[ShardInfo]:
    """Pack already-built rows of one split into shard files (no manifest); returns what was written."""
    writer = ShardFileWriter(
        out, split, run_id or uuid.uuid4().hex[:8], schema, storage_options=storage_options, **sizes
    )
    for row in rows:
        writer.add(row)
    return writer.close()


def schema_description(schema: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": str(f.type)} for f in schema]


# ----------------------------------------------------------------------------- the writer
def write_shards(
    catalog: Catalog,
    out: str,
    query: str | None = None,
    task: str | None = None,
    params: ShardParams | None = None,
    thresholds: Mapping[str, float] | None = None,
    workers: int | None = None,
    storage_options: dict | None = None,
    register: bool = True,
    progress: bool = True,
) -> WriteReport:
    """Write training shards of the clips `query` (SQL over `clip_view`) selects, plus the manifest.

    Clips too short for `params.min_frames` or that fail to decode are left out and reported.
    Everything written or deleted is inside `out` (see ``shards.target``): the folder and the split
    names are checked before the first file, the run's marker protects its shards from racing
    writers until its manifest is published, and afterwards the shard files of ours that the
    published manifest does not list (an earlier write's, a racing writer's that lost, a killed
    one's) are deleted and the catalog's ``shards`` table is made to list exactly its shards.
    """
    started = time.perf_counter()
    params = params or ShardParams()
    out = out if "://" in out else os.path.abspath(out)  # one spelling per folder in the shards table
    check_target(out, storage_options)  # refuses a foreign non-empty folder or manifest, first
    versions = catalog_version(catalog)
    view = select_clips(catalog, query, task, thresholds)
    rows_by_id = {row["clip_id"]: row for row in view.to_pylist()}
    by_split = split_clips(rows_by_id, params)  # refuses a split name that is not a safe folder name
    run_id = uuid.uuid4().hex[:8]
    lease = WriterLease(out, run_id, storage_options).acquire()
    try:
        manifest, skipped = render_splits(
            catalog, out, run_id, rows_by_id, by_split, params, workers, storage_options, progress
        )
        manifest.query = (query or DEFAULT_QUERY) + (f" /* task GLOB {task!r} */" if task else "")
        manifest.catalog_version = versions
        manifest.params = {
            **params.__dict__,
            "thresholds": dict(thresholds or {}),
            "task": task,
            "skipped": len(skipped),
            "rendered_fps": manifest.params["rendered_fps"],
        }
        murl = write_manifest(manifest, out, storage_options)
    except BaseException:
        with contextlib.suppress(Exception):  # the first error is the one to report
            lease.release()
            remove_orphans(out, storage_options)  # this run's own shards: nothing lists them
        raise
    lease.release()
    remove_orphans(out, storage_options)
    if register:
        sync_registry(catalog, out, storage_options)
    return WriteReport(murl, manifest, skipped, time.perf_counter() - started)


def split_clips(rows_by_id: Mapping[str, Mapping[str, Any]], params: ShardParams) -> dict[str, list[str]]:
    """Clip ids by split (train and val always present); every split must be a safe folder name."""
    by_split: dict[str, list[str]] = {"train": [], "val": []}
    example: dict[str, str] = {}
    for cid, row in rows_by_id.items():
        split = split_for(row, params.val_fraction, params.split_salt)
        by_split.setdefault(split, []).append(cid)
        example.setdefault(split, str(row.get("uri") or cid))
    check_splits(by_split, example)
    return by_split


def render_splits(
    catalog: Catalog,
    out: str,
    run_id: str,
    rows_by_id: dict[str, dict[str, Any]],
    by_split: dict[str, list[str]],
    params: ShardParams,
    workers: int | None,
    storage_options: dict | None,
    progress: bool,
) -> tuple[Manifest, dict[str, str]]:
    """Render every clip into the shard files of run `run_id`; (the manifest to publish, skipped)."""
    latents = latents_for(catalog, list(rows_by_id))
    real = episode_actions_for(catalog, [r.get("video_id") for r in rows_by_id.values()])
    idm = idm_actions_for(catalog, list(rows_by_id))
    skipped: dict[str, str] = {}
    rendered_fps: set[float] = set()  # stated in the manifest: the rates the clips were rendered at
    shards: list[ShardInfo] = []
    splits: dict[str, dict[str, int]] = {}
    workers = workers or max(1, os.cpu_count() or 1)
    bar = tqdm(total=len(rows_by_id), desc="shards", unit="clip", disable=not progress)
    for split, ids in by_split.items():
        writer = ShardFileWriter(
            out,
            split,
            run_id,
            SHARD_SCHEMA,
            params.target_bytes,
            params.row_group_bytes,
            params.row_group_rows,
            storage_options,
        )

        def build(cid: str, split: str = split) -> dict[str, Any]:
            row = rows_by_id[cid]
            return shard_row(
                row, latents.get(cid), split, params, storage_options,
                real_row=real.get(row.get("video_id") or ""), idm_row=idm.get(cid),
            )  # fmt: skip

        for cid, result in ordered_map(build, shuffled_ids(ids, params.seed), workers):
            bar.update(1)
            if isinstance(result, Exception):
                skipped[cid] = f"{type(result).__name__}: {result}"
                continue
            rendered_fps.add(round(float(result["fps"]), 4))
            writer.add(result)
        written = writer.close()
        shards.extend(written)
        splits[split] = {
            "rows": sum(s.rows for s in written),
            "shards": len(written),
            "videos": len({rows_by_id[c].get("video_id") for c in ids if c not in skipped}),
        }
    bar.close()
    manifest = Manifest(
        shards=shards,
        schema=schema_description(SHARD_SCHEMA),
        catalog=catalog.root,
        created=datetime.now(UTC).isoformat(),
        run_id=run_id,
        params={**params.__dict__, "skipped": len(skipped), "rendered_fps": sorted(rendered_fps)},
        splits=splits,
    )
    return manifest, skipped
