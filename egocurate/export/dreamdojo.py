"""Exports the DreamDojo trainer reads as they are: a plain MP4 tree, and LeRobot v2.1 (``lerobot.py``).

DreamDojo's human-video loader globs ``*.mp4`` under its dataset root and silently drops any path
whose *full* string contains ``left``, ``right``, ``resize`` or ``pad`` (any case), so "bright" or
"ipad" lose a clip without a word. A dataset root containing ``g1``, ``gr1``, ``yam``, ``agibot``,
``droid`` or ``egodex_21`` is routed to a robot or MANO loader instead, and one containing ``xdof``
keeps only ``320_240`` files. Its loader also draws ``randint(0, frames - 14)``, so each file needs
at least 14 frames.

The MP4 export therefore refuses a root that trips those rules, names files by ``clip_id`` (hex,
which can hold none of the words) inside a folder per task whose name is rewritten to avoid them
("bright pad" becomes ``brgt_pd``: renamed, not lost), renders every clip at the frame rate
shards use (by default the latent-action model's rate; see ``media.encode.render_rate_plan``: a slower
source is never frame-duplicated), and writes ``clips.parquet`` mapping each file back to the
catalog, with the fps each clip was rendered at (also in ``egocurate_export.json``).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from egocurate.catalog.rows import first_present
from egocurate.catalog.selection import DEFAULT_QUERY, catalog_version, select_clips, split_for
from egocurate.catalog.store import Catalog
from egocurate.export.common import ExportReport, Staging, check_fps, write_atomic
from egocurate.media.encode import encode_mp4, ordered_map, render_clip, render_rate_plan
from egocurate.media.source import clip_source

DROPPED_WORDS = ("left", "right", "resize", "pad")
ROUTING_WORDS = ("g1", "gr1", "yam", "agibot", "droid", "egodex_21", "xdof")
ABBREVIATIONS = {"left": "lft", "right": "rgt", "resize": "rsz", "pad": "pd"}
DREAMDOJO_MIN_FRAMES = 14
MARKER = "egocurate_export.json"


def loader_safe_name(text: str | None, max_len: int = 60) -> str:
    """A folder name from a label that DreamDojo's path filter keeps: [a-z0-9_], none of its words."""
    slug = re.sub(r"[^a-z0-9]+", "_", (text or "").lower()).strip("_")[:max_len].strip("_") or "untitled"
    while any(word in slug for word in DROPPED_WORDS):
        for word, short in ABBREVIATIONS.items():
            slug = slug.replace(word, short)
    return slug


def clip_file_stem(clip_id: str) -> str:
    """A clip's file name (without ``.mp4``): its id where that is plain hex, as catalog ids are.

    Any other id (``../../x``, ``/abs``, ``left_3``) becomes a loader-safe slug plus a hash of the
    id: it can neither leave the task folder nor trip the loader's path filter, and two ids never
    share a file. ``clips.parquet`` maps each file back to its exact id.
    """
    if re.fullmatch(r"[0-9a-f]{1,64}", clip_id):
        return clip_id
    return f"{loader_safe_name(clip_id, 40)}_{hashlib.sha256(clip_id.encode()).hexdigest()[:12]}"


def kept_by_dreamdojo(path: str) -> bool:
    """Whether DreamDojo's human-video filter keeps `path` (its full string, lower-cased)."""
    lowered = str(path).lower()
    return not any(word in lowered for word in DROPPED_WORDS)


def check_dreamdojo_root(root: str | os.PathLike[str]) -> str:
    """The absolute export root, or a ValueError if the trainer would drop or re-route it."""
    absolute = os.path.abspath(os.path.expanduser(str(root)))
    lowered = absolute.lower()
    dropped = [w for w in DROPPED_WORDS if w in lowered]
    routed = [w for w in ROUTING_WORDS if w in lowered]
    if dropped:
        raise ValueError(f"export root {absolute!r} contains {dropped}: DreamDojo drops every file under it")
    if routed:
        raise ValueError(f"export root {absolute!r} contains {routed}: DreamDojo routes it to another loader")
    return absolute


def render_export_clip(
    view_row: Mapping[str, Any],
    fps: float | None,
    width: int | None,
    height: int | None,
    min_frames: int,
    crf: int,
    lam_stride: int | None = None,
    low_fps: str = "native",
) -> tuple[bytes, list[int], float]:
    """(MP4 bytes, source offsets, fps) of one clip at the shared frame-rate rule, cropped and resized.

    See ``media.encode.render_rate_plan``: `fps` None is the latent-action model's rate, as in shards; a
    source below `fps` keeps its own rate or is refused (`low_fps`), never frame-duplicated.
    """
    clip = clip_source(view_row)
    offsets, out_fps = render_rate_plan(clip.num_frames, clip.fps, fps, lam_stride, low_fps)
    if len(offsets) < min_frames:
        raise ValueError(f"{len(offsets)} frames at {out_fps:g} fps < {min_frames}")
    return encode_mp4(render_clip(clip, offsets, width, height), out_fps, crf=crf), offsets, out_fps


def export_dreamdojo(
    catalog: Catalog,
    out: str,
    query: str | None = None,
    task: str | None = None,
    fps: float | None = None,
    min_frames: int = DREAMDOJO_MIN_FRAMES,
    width: int | None = 640,
    height: int | None = 480,
    crf: int = 20,
    thresholds: Mapping[str, float] | None = None,
    workers: int | None = None,
    progress: bool = True,
    replace: bool = False,
    low_fps: str = "native",
) -> ExportReport:
    """Write the selected clips as ``<out>/<task>/<clip_id>.mp4`` for DreamDojo's human-video loader.

    `fps` None renders at the latent-action model's rate (each clip's native rate / its LAM stride,
    the rate shards use), native where a clip has no latent actions; a number resamples down to it,
    and a slower source keeps its own rate or, with `low_fps` "refuse", is left out. `width`/`height`
    None keep the source size (the trainer centre-crops to 4:3 and resizes to 480x640 itself). The
    tree is staged next to `out` and swapped in whole (``export.common.Staging``); `replace` accepts
    dropping most of an earlier export. Every path below `out` is built from slugs and hex, never
    from a label or id as it is, so no data can write outside `out`.
    """
    check_fps(fps)
    staging = Staging(check_dreamdojo_root(out), MARKER)
    try:
        return _export(staging, catalog, query, task, fps, min_frames, width, height, crf, thresholds,
                       workers, progress, replace, low_fps)  # fmt: skip
    finally:
        staging.abandon()  # a no-op once published


def _export(
    staging: Staging,
    catalog: Catalog,
    query: str | None,
    task: str | None,
    fps: float | None,
    min_frames: int,
    width: int | None,
    height: int | None,
    crf: int,
    thresholds: Mapping[str, float] | None,
    workers: int | None,
    progress: bool,
    replace: bool,
    low_fps: str,
) -> ExportReport:
    started = time.perf_counter()
    root = staging.path
    view = select_clips(catalog, query, task, thresholds)
    rows = view.to_pylist()
    strides = {r["clip_id"]: r.get("lam_stride") for r in rows}  # clip_view carries clip_latents' stride
    report = ExportReport(out=str(staging.out))
    index_rows = []

    def build(row: dict) -> tuple[bytes, list[int], float]:
        stride = strides.get(row["clip_id"])
        return render_export_clip(row, fps, width, height, min_frames, crf, stride, low_fps)

    workers = workers or max(1, os.cpu_count() or 1)
    for row, result in tqdm(
        ordered_map(build, rows, workers), total=len(rows), desc="dreamdojo", disable=not progress
    ):
        if isinstance(result, Exception):
            report.skipped[row["clip_id"]] = f"{type(result).__name__}: {result}"
            continue
        data, offsets, out_fps = result
        label = first_present(row.get("task"), row.get("task_text"), "untitled")
        folder = loader_safe_name(label)
        if re.sub(r"[^a-z0-9]+", "_", label.lower()).strip("_") != folder:
            report.renamed[label] = folder
        rel = f"{folder}/{clip_file_stem(row['clip_id'])}.mp4"
        write_atomic(staging.file(rel), data)
        report.written += 1
        index_rows.append(
            {
                "path": rel,
                "clip_id": row["clip_id"],
                "video_id": row.get("video_id"),
                "uri": row.get("uri"),
                "start_frame": row.get("start_frame"),
                "end_frame": row.get("end_frame"),
                "start_s": row.get("start_s"),
                "end_s": row.get("end_s"),
                "fps": out_fps,
                "source_fps": row.get("fps"),
                "lam_stride": strides.get(row["clip_id"]),
                "num_frames": len(offsets),
                "task": label,
                "split": split_for(row, 0.0),  # the source's split; DreamDojo's loader reads every file
                "folder": folder,
                "source": row.get("source"),
                "dataset": row.get("dataset"),
                "caption": first_present(row.get("caption"), row.get("text"), row.get("task_text")),
            }
        )
    pq.write_table(
        pa.Table.from_pylist(index_rows) if index_rows else pa.table({"path": pa.array([], pa.string())}),
        root / "clips.parquet",
    )
    meta = {
        "format": "dreamdojo-mp4-tree",
        "created": datetime.now(UTC).isoformat(),
        "catalog": catalog.root,
        "catalog_version": catalog_version(catalog),
        "query": query or DEFAULT_QUERY,
        "task": task,
        "fps": fps,
        "low_fps": low_fps,
        "rendered_fps": sorted({round(float(r["fps"]), 4) for r in index_rows}),
        "size": [width, height],
        "min_frames": min_frames,
        "written": report.written,
        "skipped": report.skipped,
        "renamed": report.renamed,
    }
    (root / MARKER).write_text(json.dumps(meta, indent=2))
    staging.publish(
        previous=staging.previous_ids("clips.parquet"),
        written={r["clip_id"] for r in index_rows},
        selected={r["clip_id"] for r in rows},
        files=[r["path"] for r in index_rows] + ["clips.parquet"],
        replace=replace,
        report=report,
    )
    report.seconds = time.perf_counter() - started
    return report
