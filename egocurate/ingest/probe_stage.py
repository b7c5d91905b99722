"""The ingest stage: discovered uris in, one `videos` row per distinct source video out."""

from __future__ import annotations

import pyarrow as pa

from egocurate.catalog import tables
from egocurate.ingest.fingerprint import fingerprint_uri, video_id_for
from egocurate.ingest.lerobot import episode_length
from egocurate.ingest.probe import Backend, ProbeError, probe
from egocurate.stage_base import BaseStage, Resources

_META_COLUMNS = (
    "source", "dataset", "task_text", "split", "extra_json", "origin", "generator", "prompt",
    "initial_frame", "dataset_uri", "episode_index", "camera", "actions_uri",
)  # fmt: skip
MISSING_ACTIONS = "missing_actions"
ACTION_LENGTH_MISMATCH = "action_length_mismatch"


def episode_problem(
    row: dict, num_frames: int | None, storage_options: dict | None
) -> tuple[str, str] | None:
    """(kind, message) when a robot episode's data file is missing or its length is not the video's."""
    actions_uri = row.get("actions_uri")
    if not actions_uri:
        return None
    where = f"episode {row.get('episode_index')} of {row.get('dataset_uri')}"
    try:
        length = episode_length(actions_uri, storage_options)
    except FileNotFoundError:
        return MISSING_ACTIONS, f"{where}: data file {actions_uri} not found"
    except Exception as exc:  # noqa: BLE001 - an unreadable data file is this episode's problem only
        return MISSING_ACTIONS, f"{where}: data file {actions_uri} unreadable ({type(exc).__name__}: {exc})"
    if num_frames is not None and length != int(num_frames):
        return ACTION_LENGTH_MISMATCH, (
            f"{where}: {length} action rows but the {row.get('camera')} video has {num_frames} frames"
        )
    return None


def _fold(rows: list[dict]) -> dict:
    """One row for several copies of the same content: the smallest uri is canonical.

    Choosing by order rather than by arrival makes the result the same on every engine.
    """
    uris = set()
    for row in rows:
        uris.add(row["uri"])
        uris.update(row.get("duplicate_uris") or [])
    canonical_uri = min(uris)
    base = (
        next(r for r in rows if r["uri"] == canonical_uri)
        if any(r["uri"] == canonical_uri for r in rows)
        else rows[0]
    )
    folded = dict(base)
    folded["uri"] = canonical_uri
    folded["duplicate_uris"] = sorted(uris - {canonical_uri})
    return folded


class ProbeStage(BaseStage):
    """Fingerprint and probe each uri; quarantine what cannot be used, fold exact duplicates."""

    name = "ingest"
    input_key = "uri"
    output_table = tables.VIDEOS.name
    merges_duplicates = True
    done_key_columns = ("uri", "duplicate_uris")

    def __init__(self, backend: Backend = "auto", batch_size: int = 8, storage_options: dict | None = None):
        if backend not in ("auto", "ffprobe", "pyav"):
            raise ValueError(f"backend must be one of auto, ffprobe, pyav; got {backend!r}")
        self.backend = backend
        self.storage_options = storage_options
        self.resources = Resources(cpus=1, batch_size=batch_size)

    def setup(self) -> None:
        """Nothing to load: PyAV (and ffprobe, when chosen or as the fallback) opens each file."""

    def _row(self, row: dict) -> dict:
        out = {k: row.get(k) for k in ("uri", *_META_COLUMNS)}
        try:
            size, fingerprint = fingerprint_uri(row["uri"], self.storage_options)
            info = probe(row["uri"], backend=self.backend, storage_options=self.storage_options)
        except ProbeError as exc:
            return {**out, tables.ERROR_KIND: exc.kind, tables.ERROR_MESSAGE: exc.message}
        except FileNotFoundError as exc:
            return {**out, tables.ERROR_KIND: tables.NOT_FOUND, tables.ERROR_MESSAGE: str(exc)}
        except Exception as exc:  # an unexpected failure still quarantines only this file
            kind = tables.ZERO_LENGTH if "size 0" in str(exc) else tables.UNREADABLE
            return {**out, tables.ERROR_KIND: kind, tables.ERROR_MESSAGE: f"{type(exc).__name__}: {exc}"}
        info_row = info.as_row()
        problem = episode_problem(row, info_row.get("num_frames"), self.storage_options)
        if problem is not None:
            return {**out, tables.ERROR_KIND: problem[0], tables.ERROR_MESSAGE: problem[1]}
        return {
            **out,
            "origin": out.get("origin") or "real",
            **info_row,
            "video_id": video_id_for(size, fingerprint),
            "bytes": size,
            "fingerprint": fingerprint,
            "duplicate_uris": [],
            tables.ERROR_KIND: None,
            tables.ERROR_MESSAGE: None,
        }

    def process(self, batch: pa.Table) -> pa.Table:
        results = [self._row(row) for row in batch.to_pylist()]
        good = [r for r in results if r[tables.ERROR_KIND] is None]
        bad = [r for r in results if r[tables.ERROR_KIND] is not None]
        by_id: dict[str, list[dict]] = {}
        for row in good:
            by_id.setdefault(row["video_id"], []).append(row)
        rows = [_fold(group) for group in by_id.values()] + bad
        schema = pa.schema(
            list(tables.VIDEOS.schema)
            + [(tables.ERROR_KIND, pa.string()), (tables.ERROR_MESSAGE, pa.string())]
        )
        return pa.Table.from_pylist(rows, schema=schema)

    def merge_duplicates(self, existing: pa.Table, incoming: pa.Table) -> pa.Table:
        """Fold incoming rows into committed rows with the same `video_id` (driver side)."""
        by_id: dict[str, list[dict]] = {}
        for row in existing.to_pylist() + incoming.to_pylist():
            by_id.setdefault(row["video_id"], []).append(row)
        return pa.Table.from_pylist([_fold(g) for g in by_id.values()], schema=tables.VIDEOS.schema)
