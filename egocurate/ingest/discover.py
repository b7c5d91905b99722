"""Find source videos: folders, globs, fsspec URLs (s3://, hf://, file://) and manifests.

A manifest is a CSV or JSONL file with one row per video: a `uri` (or `path`) column plus optional
`dataset`, `task_text` (or `task`, `caption`, `narration`, `description`: the first one present),
`split`, and any other columns. Every column not mapped to a `videos` column is kept as JSON in
`extra_json`, so with both `task` and `narration` the task is `task_text` and the narration stays
in `extra_json`. Relative uris in a manifest are resolved against its folder.

A manifest of generated rollouts may carry `prompt`, `initial_frame` and `generator` columns; its
rows are ``origin: generated`` (an explicit `origin` column wins), every other row is ``real``. A
LeRobot v2.x dataset folder (one with ``meta/info.json``), given or found inside a folder, lists one
row per episode (``ingest.lerobot``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence

import fsspec
import pyarrow as pa

from egocurate.ingest.lerobot import is_lerobot_dataset, lerobot_episodes
from egocurate.storage import fsspec_options, storage_error

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".mpg", ".mpeg", ".ts", ".mts")
MANIFEST_EXTENSIONS = (".csv", ".jsonl", ".ndjson")
TASK_ALIASES = ("task_text", "task", "caption", "narration", "description")
MAPPED = ("dataset", "split")
GENERATED_COLUMNS = ("generator", "prompt", "initial_frame")

DISCOVERED_SCHEMA = pa.schema(
    [
        ("uri", pa.string()),
        ("source", pa.string()),
        ("dataset", pa.string()),
        ("task_text", pa.string()),
        ("split", pa.string()),
        ("extra_json", pa.string()),
        ("origin", pa.string()),
        ("generator", pa.string()),
        ("prompt", pa.string()),
        ("initial_frame", pa.string()),
        ("dataset_uri", pa.string()),
        ("episode_index", pa.int64()),
        ("camera", pa.string()),
        ("actions_uri", pa.string()),
    ]
)


class SourceError(ValueError):
    """A source that cannot be listed (missing folder, bad manifest, broken LeRobot metadata)."""


def _is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def _local(uri: str) -> str:
    return os.path.abspath(os.path.expanduser(uri[len("file://") :] if uri.startswith("file://") else uri))


def _qualify(fs: fsspec.AbstractFileSystem, path: str, like: str) -> str:
    """Turn an fsspec path back into a URI of the same protocol as `like`."""
    if not _is_remote(like):
        return os.path.abspath(path)
    return fs.unstrip_protocol(path)


def _is_video(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return base.lower().endswith(VIDEO_EXTENSIONS) and not base.startswith(".")


def origin_of(meta: dict) -> str:
    """``generated`` for a row with an explicit `origin: generated` or any generated-rollout column."""
    given = str(meta.get("origin") or "").strip().lower()
    if given:
        if given not in ("real", "generated"):
            raise SourceError(f"origin must be 'real' or 'generated', got {meta.get('origin')!r}")
        return given
    return "generated" if any(meta.get(k) not in (None, "") for k in GENERATED_COLUMNS) else "real"


def _text(meta: dict, key: str) -> str | None:
    """`meta[key]` as text: a number or a boolean is written as JSON writes it (a split of 1 is "1"),
    so a hand-written manifest never fails on the column's type; a list or an object is an error."""
    value = meta.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    raise SourceError(f"{key!r} must be text or a number, got {json.dumps(value, default=str)[:60]}")


def _row(uri: str, source: str, meta: dict | None = None) -> dict:
    meta = dict(meta or {})
    task_key = next((k for k in TASK_ALIASES if meta.get(k) not in (None, "")), None)
    task = _text(meta, task_key) if task_key else _text(meta, "prompt")  # a rollout's prompt is its task
    uri_key = "uri" if meta.get("uri") else "path"
    mapped = {uri_key, task_key, "origin", *MAPPED, *GENERATED_COLUMNS}
    extra = {k: v for k, v in meta.items() if k not in mapped and v not in (None, "")}
    return {
        "uri": uri,
        "source": source,
        "dataset": _text(meta, "dataset"),
        "task_text": task,
        "split": _text(meta, "split"),
        "extra_json": json.dumps(extra, sort_keys=True, default=str) if extra else None,
        "origin": origin_of(meta),
        **{k: _text(meta, k) for k in GENERATED_COLUMNS},
    }


def _manifest_records(source: str, path: str, text: str) -> list[tuple[int, dict]]:
    """(line number, record) of each row of a CSV or JSONL manifest; a JSONL line that is not a
    JSON object is an error naming its line."""
    if path.lower().endswith(".csv"):
        reader = csv.DictReader(io.StringIO(text))
        return [(reader.line_num, record) for record in reader]
    records = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(f"{source}:{lineno}: not valid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise SourceError(
                f"{source}:{lineno}: expected a JSON object with a 'uri', got a {type(record).__name__}"
            )
        records.append((lineno, record))
    return records


def _manifest_uri(record: dict) -> str:
    """The row's `uri` (or `path`): non-empty text, else an error."""
    key = "uri" if record.get("uri") not in (None, "") else "path"
    uri = record.get(key)
    if uri in (None, ""):
        raise SourceError("no 'uri' or 'path' column")
    if not isinstance(uri, str):
        raise SourceError(f"{key!r} must be a path or URL in quotes, got {json.dumps(uri, default=str)[:60]}")
    return uri


def _read_manifest(source: str, storage_options: dict | None) -> list[dict]:
    fs, path = fsspec.core.url_to_fs(
        source if _is_remote(source) else _local(source), **fsspec_options(storage_options)
    )
    if not fs.exists(path):
        raise SourceError(_not_found("manifest", fs, path, source))
    records = _manifest_records(source, path, fs.cat_file(path).decode("utf-8-sig"))
    base = path.rsplit("/", 1)[0]

    def resolve(uri: str) -> str:
        if not _is_remote(uri) and not uri.startswith("/") and not uri.startswith("file://"):
            return _qualify(fs, f"{base}/{uri}", source)
        return uri if _is_remote(uri) else _local(uri)

    rows = []
    for lineno, record in records:
        try:
            uri = _manifest_uri(record)
            frame = _text(record, "initial_frame")
            if frame is not None:
                record["initial_frame"] = resolve(frame)
            rows.append(_row(resolve(uri), source, record))
        except SourceError as exc:
            raise SourceError(f"{source}:{lineno}: {exc}") from None
    return rows


def _not_found(what: str, fs: fsspec.AbstractFileSystem, path: str, source: str) -> str:
    """Why `source` is not there: its bucket is missing (object storage), or the path itself."""
    if _is_remote(source):
        bucket = path.split("/", 1)[0]
        if bucket and bucket != path and not fs.exists(bucket):
            return f"bucket {bucket!r} does not exist: {source}"
    return f"{what} not found: {source}"


def _list_source(source: str, storage_options: dict | None, camera: str | None = None) -> list[dict]:
    if source.lower().endswith(MANIFEST_EXTENSIONS):
        return _read_manifest(source, storage_options)
    target = source if _is_remote(source) else _local(source)
    fs, path = fsspec.core.url_to_fs(target, **fsspec_options(storage_options))
    if is_lerobot_dataset(fs, path):
        return _lerobot_rows(_qualify(fs, path, source), source, camera, storage_options)
    if any(ch in path for ch in "*?["):
        paths = [p for p in fs.glob(path) if _is_video(p) and fs.isfile(p)]
    elif fs.isdir(path):
        found = fs.find(path)
        # LeRobot datasets inside the folder are read as datasets (one camera, with their actions),
        # not as loose MP4s of every camera.
        roots = sorted(p[: -len("/meta/info.json")] for p in found if p.endswith("/meta/info.json"))
        rows = [r for root in roots for r in _lerobot_rows(_qualify(fs, root, source), source, camera,
                                                           storage_options)]  # fmt: skip
        paths = [p for p in found if _is_video(p) and not any(p.startswith(f"{r}/") for r in roots)]
        return rows + [_row(_qualify(fs, p, source), source) for p in sorted(paths)]
    elif fs.exists(path):
        paths = [path]
    else:
        raise SourceError(_not_found("source", fs, path, source))
    return [_row(_qualify(fs, p, source), source) for p in sorted(paths)]


def _listed(source: str, storage_options: dict | None, camera: str | None) -> list[dict]:
    """:func:`_list_source`, with an object-store failure (no credentials, no such bucket) as one
    :class:`SourceError` naming the source."""
    try:
        return _list_source(source, storage_options, camera)
    except SourceError:
        raise
    except Exception as exc:  # noqa: BLE001 - only storage failures are reworded, the rest re-raised
        message = storage_error(exc, [source])
        if message is None:
            raise
        raise SourceError(message) from exc


def _lerobot_rows(root: str, source: str, camera: str | None, storage_options: dict | None) -> list[dict]:
    rows = []
    for episode in lerobot_episodes(root, camera, storage_options):
        meta = {"dataset": episode.pop("dataset"), "task_text": episode.pop("task_text")}
        rows.append({**_row(episode.pop("uri"), source, meta), **episode})
    return rows


def discover(
    sources: Sequence[str] | str, storage_options: dict | None = None, camera: str | None = None
) -> pa.Table:
    """List every video of `sources` as rows of :data:`DISCOVERED_SCHEMA`, first mention of a uri wins.

    `camera` is the video key of LeRobot datasets (default: each dataset's first).
    """
    if isinstance(sources, str):
        sources = [sources]
    seen: set[str] = set()
    rows: list[dict] = []
    for source in sources:
        for row in _listed(str(source), storage_options, camera):
            if row["uri"] not in seen:
                seen.add(row["uri"])
                rows.append(row)
    return pa.Table.from_pylist(rows, schema=DISCOVERED_SCHEMA)


def iter_uris(table: pa.Table) -> Iterable[str]:
    return table.column("uri").to_pylist()
