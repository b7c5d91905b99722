"""A merging stage's commit (ingest's fold): appended when no key exists, folded when one does.

The append checks only what others added since the base (cost independent of the table); every
way a key can already exist must still fold, never drop or double: present at the base, committed
by this writer earlier, committed by another writer since the base, or twice within the parts.
"""

from __future__ import annotations

import pyarrow as pa

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog, write_part
from egocurate.ingest.probe_stage import ProbeStage


def _videos(pairs: list[tuple[str, str]]) -> pa.Table:
    rows = [{"video_id": vid, "uri": uri, "duplicate_uris": []} for vid, uri in pairs]
    return tables.conform(pa.Table.from_pylist(rows), tables.VIDEOS)


def _commit(catalog: Catalog, base, pairs: list[tuple[str, str]], split: bool = False) -> None:
    data = _videos(pairs)
    chunks = [data.slice(i, 1) for i in range(data.num_rows)] if split else [data]
    parts = [write_part(catalog.root, tables.VIDEOS, c, "w") for c in chunks]
    catalog.commit_or_fold(tables.VIDEOS, parts, ProbeStage().merge_duplicates, "ingest", base)


def _state(catalog: Catalog) -> dict[str, tuple[str, list[str]]]:
    rows = catalog.read("videos", columns=["video_id", "uri", "duplicate_uris"]).to_pylist()
    assert len(rows) == len({r["video_id"] for r in rows}), "a video_id is doubled"
    return {r["video_id"]: (r["uri"], sorted(r["duplicate_uris"] or [])) for r in rows}


def _overwrites(catalog: Catalog) -> int:
    return sum(
        (h.get("operationParameters") or {}).get("mode") == "Overwrite" for h in catalog.history("videos")
    )


def test_every_way_a_key_can_exist_folds_and_new_keys_append(tmp_path):
    mine, other = Catalog(tmp_path / "cat"), Catalog(tmp_path / "cat")
    mine.ensure(tables.VIDEOS)
    _commit(mine, None, [("v0", "s3://a/0.mp4")])  # present before the base
    base = mine.commit_base("videos", key_column="video_id")
    overwrites = _overwrites(mine)

    _commit(mine, base, [("v1", "/a/1.mp4"), ("v2", "/a/2.mp4")])  # new keys: a plain append
    assert _overwrites(mine) == overwrites, "a commit without duplicates overwrote"

    _commit(mine, base, [("v0", "/b/0.mp4")])  # in the table at the base
    _commit(mine, base, [("v1", "/b/1.mp4")])  # committed by this writer since the base
    _commit(other, None, [("v3", "/c/3.mp4")])  # another writer, after the base
    _commit(mine, base, [("v3", "/d/3.mp4"), ("v4", "/d/4.mp4")])
    _commit(mine, base, [("v5", "/e/5.mp4"), ("v5", "/f/5.mp4")], split=True)  # twice in the parts
    assert _overwrites(mine) == overwrites + 5  # the four folds and the other (baseless) writer

    assert _state(mine) == {
        "v0": ("/b/0.mp4", ["s3://a/0.mp4"]),
        "v1": ("/a/1.mp4", ["/b/1.mp4"]),
        "v2": ("/a/2.mp4", []),
        "v3": ("/c/3.mp4", ["/d/3.mp4"]),
        "v4": ("/d/4.mp4", []),
        "v5": ("/e/5.mp4", ["/f/5.mp4"]),
    }


def test_known_keys_stay_sorted_runs_as_a_writer_adds(tmp_path):
    catalog = Catalog(tmp_path / "cat")
    catalog.ensure(tables.VIDEOS)
    base = catalog.commit_base("videos", key_column="video_id")
    for i in range(40):
        base.remember(pa.array([f"k{i:03d}"]))
    assert len(base.known) <= 8  # merged like a binary counter, not one run per commit
    assert all((run[:-1] <= run[1:]).all() for run in base.known)
    assert base.knows_any(pa.array(["zz", "k017"])) and not base.knows_any(pa.array(["k999"]))
