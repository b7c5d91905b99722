"""The catalog's ``shards`` table kept equal to what a shard folder's published manifest lists.

After every write, the rows of one folder (shard uris under ``<out>/``) are reconciled with the
manifest published *now*, in one compare-and-swap upsert: shards it lists get a row, rows of shards
it no longer lists (replaced, or a racing writer's that lost) are deleted. The manifest is read
inside the upsert's fold, after the table version the commit lands on is loaded; every writer
publishes before it reconciles, so the last commit always reflects the last published manifest.
A manifest written from another catalog means this catalog lists none of the folder's shards.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyarrow as pa

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.shards.manifest import MANIFEST_NAME, Manifest, join
from egocurate.shards.target import SHARD_FILE, ShardTargetError, read_own_manifest


class _Widen(Exception):  # noqa: N818 - control flow, never leaves this module
    """The fold found keys outside the upsert's predicate: retry with them included."""

    def __init__(self, keys: set[str]):
        super().__init__(f"{len(keys)} more key(s)")
        self.keys = keys


def shard_rows(manifest: Manifest, manifest_uri: str, now: datetime | None = None) -> list[dict]:
    """One ``shards`` row per shard of `manifest`."""
    now = now or datetime.now(UTC)
    return [
        {
            "shard_uri": shard.url,
            "split": shard.split,
            "rows": shard.rows,
            "bytes": shard.bytes,
            "query": manifest.query,
            "catalog_version": json.dumps(manifest.catalog_version, sort_keys=True),
            "manifest_uri": manifest_uri,
            "time": now,
        }
        for shard in manifest.shards
    ]


def folder_keys(catalog: Catalog, out: str) -> set[str]:
    """Shard uris the table holds for the shard folder `out` (named like our shards, directly in it)."""
    if not catalog.exists(tables.SHARDS.name):
        return set()
    prefix = f"{out.rstrip('/')}/"
    uris = catalog.read(tables.SHARDS.name, columns=["shard_uri"]).column("shard_uri").to_pylist()
    return {u for u in uris if u and u.startswith(prefix) and SHARD_FILE.match(u.removeprefix(prefix))}


def wanted_rows(catalog: Catalog, out: str, storage_options: dict | None) -> list[dict] | None:
    """Rows the folder should have now (None: its manifest is not ours, leave its rows alone)."""
    try:
        manifest = read_own_manifest(out, storage_options)
    except ShardTargetError:
        return None
    if manifest is None or manifest.catalog != catalog.root:
        return []
    return shard_rows(manifest, join(out, MANIFEST_NAME))


def sync_registry(catalog: Catalog, out: str, storage_options: dict | None = None) -> int | None:
    """Make the `shards` rows of folder `out` exactly the shards its published manifest lists.

    Returns the new table version, or None when nothing changed.
    """
    keys = folder_keys(catalog, out) | {
        r["shard_uri"] for r in wanted_rows(catalog, out, storage_options) or []
    }
    while True:
        if not keys:
            return None
        try:
            return _upsert(catalog, out, keys, storage_options)
        except _Widen as more:
            keys |= more.keys


def _upsert(catalog: Catalog, out: str, keys: set[str], storage_options: dict | None) -> int | None:
    spec = tables.SHARDS

    def fold(existing: pa.Table, incoming: pa.Table) -> pa.Table:
        wanted = wanted_rows(catalog, out, storage_options)
        if wanted is None:
            return existing
        extra = ({r["shard_uri"] for r in wanted} | folder_keys(catalog, out)) - keys
        if extra:
            raise _Widen(extra)
        have = {r["shard_uri"]: r for r in existing.to_pylist()}
        # A shard uri names one file of one run forever, so an existing row is kept as it is.
        return pa.Table.from_pylist([have.get(r["shard_uri"], r) for r in wanted], schema=spec.schema)

    probe = pa.table({"shard_uri": pa.array(sorted(keys), pa.string())})  # the keys the commit may touch
    return catalog.upsert(spec, probe, operation="shards.write", fold=fold)
