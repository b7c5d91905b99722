"""Issue 23: `shards write` writes and deletes only inside `--out`, and fails in one line.

Every test here snapshots the folder around `--out` (siblings, parents' other files) before and after
and asserts nothing outside the shard folder changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from egocurate.catalog.store import Catalog
from egocurate.shards import write as shard_write
from egocurate.shards.manifest import FORMAT, read_manifest
from egocurate.shards.write import ShardParams, write_shards
from egocurate.testing.catalog import build_sample_catalog

SMALL = dict(width=96, height=72, target_bytes=20_000, row_group_bytes=10_000, val_fraction=0.0)
CLI_SMALL = ["--width", "96", "--height", "72", "--target-mb", "0.02", "--row-group-mb", "0.01",
             "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    """2 videos, 3 clips each; video 0's source split is a path that climbs out of `--out`."""
    return build_sample_catalog(tmp_path_factory.mktemp("contain_cat"), videos=2, seconds=3.2,
                                clip_frames=24, clip_step=12, tokenizer_latents=False,
                                splits=["../../escaped_split", None])  # fmt: skip


@pytest.fixture(scope="module")
def plain_catalog(tmp_path_factory) -> Catalog:
    """The same clips, every split by hash."""
    return build_sample_catalog(tmp_path_factory.mktemp("contain_plain"), videos=2, seconds=3.2,
                                clip_frames=24, clip_step=12, tokenizer_latents=False)  # fmt: skip


@pytest.fixture
def work(tmp_path) -> Path:
    """W: a workspace with a victim folder beside the shard folder's parent, and a neighbour file."""
    w = tmp_path / "W"
    (w / "victim").mkdir(parents=True)
    (w / "victim" / "precious.txt").write_text("do not touch")
    (w / "out").mkdir()
    (w / "out" / "neighbour.txt").write_text("beside the shards")
    return w


def snapshot(root: Path, skip: Path) -> dict[str, str]:
    """Every path under `root` but `skip` (and what is under it), with a hash of each file's bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            dirnames[:] = []
            continue
        out[str(here.relative_to(root)) + "/"] = "dir"
        for name in filenames:
            path = here / name
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "egocurate.cli.main", *args], capture_output=True, text=True)


def assert_one_error_line(done: subprocess.CompletedProcess, needle: str) -> None:
    """Exit 2 and one ``error: ...`` line, whichever stream it went to, with no traceback."""
    text = done.stdout + done.stderr
    lines = [line for line in text.splitlines() if line.strip()]
    assert done.returncode == 2, text
    assert "Traceback" not in text, text
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert needle in lines[0], text


# ----------------------------------------------------------------------------- split names
def test_a_split_that_is_a_path_never_leaves_out(catalog, work):
    out = work / "out" / "sh"
    before = snapshot(work, out)
    done = cli("shards", "write", "-c", catalog.root, "--out", str(out), *CLI_SMALL)
    assert_one_error_line(done, "../../escaped_split")
    assert snapshot(work, out) == before
    assert not (work / "escaped_split").exists() and not out.exists()
    with pytest.raises(shard_write.ShardSplitError, match="not a safe split name"):
        write_shards(catalog, str(out), params=ShardParams(**SMALL), progress=False, register=False)
    assert snapshot(work, out) == before and not out.exists()


@pytest.mark.parametrize(
    ("given", "expected"),
    [("train", "train"), ("val", "val"), ("test", "test"), ("train.clean", "train.clean"),
     ("held_out-2", "held_out-2")],
)  # fmt: skip
def test_safe_split_names_pass_as_they_are(given, expected):
    assert shard_write.safe_split(given) == expected


@pytest.mark.parametrize(
    "bad",
    ["../../escaped_split", "..", ".", "a/b", "a\\b", "/abs", "", "Train", "two words", "x" * 65, ".hidden"],
)
def test_unsafe_split_names_are_refused(bad):
    with pytest.raises(shard_write.ShardSplitError, match="not a safe split name"):
        shard_write.safe_split(bad)


# ----------------------------------------------------------------------------- previous manifests
def evil_manifest(folder: Path, paths: list[str]) -> None:
    shards = [{"path": p, "split": "train", "rows": 1, "bytes": 1, "row_groups": [1]} for p in paths]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"format": FORMAT, "shards": shards, "schema": []}))


def test_a_previous_manifest_never_makes_the_writer_delete_outside_out(plain_catalog, work):
    out = work / "evil"
    absolute = str(work / "victim" / "precious.txt")
    evil_manifest(
        out, ["../victim/precious.txt", "../out/neighbour.txt", absolute, "train/../../victim/precious.txt"]
    )
    before = snapshot(work, out)
    done = cli("shards", "write", "-c", plain_catalog.root, "--out", str(out), *CLI_SMALL)
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(work, out) == before
    assert (work / "victim" / "precious.txt").read_text() == "do not touch"
    manifest, _ = read_manifest(str(out))
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*.parquet")}
    assert on_disk == {s.path for s in manifest.shards} and on_disk


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("{not json", "not an egocurate shard manifest"),
        ('{"format": "webdataset/1", "shards": []}', "not an egocurate shard manifest"),
        (json.dumps({"format": FORMAT, "shards": [{"path": "x"}]}), "not an egocurate shard manifest"),
        ("[1, 2, 3]", "not an egocurate shard manifest"),
    ],
)
def test_a_foreign_or_garbled_manifest_is_one_error_line(plain_catalog, work, text, needle):
    out = work / "garbled"
    out.mkdir()
    (out / "manifest.json").write_text(text)
    (out / "train").mkdir()
    (out / "train" / "shard-00000-0123abcd.parquet").write_bytes(b"someone's")
    before = snapshot(work, work / "nothing")
    done = cli("shards", "write", "-c", plain_catalog.root, "--out", str(out), *CLI_SMALL)
    assert_one_error_line(done, needle)
    assert snapshot(work, work / "nothing") == before  # the folder itself is left as it was, too


# ----------------------------------------------------------------------------- a bad query
def test_a_bad_query_is_one_error_line_and_writes_nothing(plain_catalog, work):
    out = work / "out" / "q"
    before = snapshot(work, work / "nothing")
    done = cli("shards", "write", "-c", plain_catalog.root, "--out", str(out), *CLI_SMALL,
               "--query", "SELECT no_such_column FROM clip_view")  # fmt: skip
    assert_one_error_line(done, "no_such_column")
    assert snapshot(work, work / "nothing") == before and not out.exists()


# ----------------------------------------------------------------------------- the shards table
def registered(catalog: Catalog, out: Path) -> list[str]:
    rows = catalog.read("shards").to_pylist() if catalog.exists("shards") else []
    return sorted(r["shard_uri"] for r in rows if r["shard_uri"].startswith(f"{out}/"))


def test_the_shards_table_lists_exactly_the_published_shards(plain_catalog, work):
    out = work / "out" / "table"
    before = snapshot(work, out)
    first = write_shards(plain_catalog, str(out), params=ShardParams(**SMALL), progress=False)
    assert registered(plain_catalog, out) == sorted(s.url for s in first.manifest.shards)
    second = write_shards(plain_catalog, str(out), query="SELECT clip_id FROM clip_view WHERE clip_index = 0",
                          params=ShardParams(**SMALL), progress=False)  # fmt: skip
    assert registered(plain_catalog, out) == sorted(s.url for s in second.manifest.shards)
    assert not set(registered(plain_catalog, out)) & {s.url for s in first.manifest.shards}
    on_disk = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert on_disk == {s.path for s in second.manifest.shards} | {"manifest.json"}
    assert snapshot(work, out) == before
