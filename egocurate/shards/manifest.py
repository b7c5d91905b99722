"""The shard manifest: which shard files make a training set, and where they came from.

A reader trusts only the manifest: the writer publishes it last, in one atomic step, after every
shard it lists is closed. Shard paths are stored relative to the manifest so a shard folder can be
copied between a disk, S3 and the Hugging Face hub as it is.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

import fsspec

from egocurate.storage import fsspec_options

MANIFEST_NAME = "manifest.json"
FORMAT = "egocurate-shards/1"


def filesystem(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem and path of `url` (local paths, ``s3://``, ``hf://``, ...)."""
    return fsspec.core.url_to_fs(url, **fsspec_options(storage_options))


def join(base: str, path: str) -> str:
    """`path` under the folder URL `base` (absolute paths and URLs are returned unchanged)."""
    if "://" in path or path.startswith("/"):
        return path
    return f"{base.rstrip('/')}/{path}"


@dataclass
class ShardInfo:
    """One shard file: its split, rows, bytes and the row count of each row group."""

    path: str  # relative to the manifest's folder
    split: str
    rows: int
    bytes: int
    row_groups: list[int]
    url: str = ""  # absolute URL when written (informational; readers resolve `path`)


@dataclass
class Manifest:
    """Everything a reader needs to stream a split without listing or opening shard footers."""

    shards: list[ShardInfo]
    schema: list[dict[str, str]]
    query: str = ""
    catalog: str = ""
    catalog_version: dict[str, int] = field(default_factory=dict)
    created: str = ""
    run_id: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    splits: dict[str, dict[str, int]] = field(default_factory=dict)
    format: str = FORMAT

    def split_shards(self, split: str) -> list[ShardInfo]:
        shards = [s for s in self.shards if s.split == split]
        if not shards and split not in self.splits:
            known = sorted({s.split for s in self.shards})
            raise KeyError(f"no split {split!r} in the manifest; splits: {known}")
        return shards

    def fingerprint(self, split: str | None = None) -> str:
        """Stable id of the shard set (of one split), stored in loader states to catch mix-ups."""
        shards = self.shards if split is None else self.split_shards(split)
        text = json.dumps([(s.path, s.rows, s.row_groups) for s in shards])
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        if data.get("format") != FORMAT:
            raise ValueError(
                f"not an egocurate shard manifest (format {data.get('format')!r}, want {FORMAT!r})"
            )
        shards = [ShardInfo(**s) for s in data.get("shards", [])]
        rest = {k: v for k, v in data.items() if k != "shards"}
        return cls(shards=shards, **rest)


def manifest_url(url: str) -> str:
    """The manifest's URL from a shard folder URL or the manifest URL itself."""
    return url if url.rstrip("/").endswith(".json") else join(url, MANIFEST_NAME)


def read_manifest(url: str, storage_options: dict[str, Any] | None = None) -> tuple[Manifest, str]:
    """(manifest, folder URL its shard paths are relative to) from a folder or manifest URL."""
    murl = manifest_url(url)
    fs, path = filesystem(murl, storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(
            f"no shard manifest at {murl} (was the shard writer killed before it finished?)"
        )
    with fs.open(path, "rb") as fh:
        manifest = Manifest.from_dict(json.loads(fh.read()))
    return manifest, murl.rsplit("/", 1)[0]


def write_manifest(manifest: Manifest, folder: str, storage_options: dict[str, Any] | None = None) -> str:
    """Publish `manifest` in `folder` atomically (a temporary object renamed into place).

    The temporary name carries the run id, so a killed writer's leftover is known to be its own.
    """
    fs, base = filesystem(folder, storage_options)
    fs.makedirs(base, exist_ok=True)
    final = f"{base.rstrip('/')}/{MANIFEST_NAME}"
    tag = manifest.run_id if re.fullmatch(r"[0-9a-f]{8}", manifest.run_id or "") else uuid.uuid4().hex[:8]
    tmp = f"{base.rstrip('/')}/.{MANIFEST_NAME}.{tag}.tmp"
    with fs.open(tmp, "wb") as fh:
        fh.write(manifest.to_json().encode())
    fs.mv(tmp, final)
    return join(folder, MANIFEST_NAME)
