"""Discovery over folders, globs, file:// URLs and manifests (CSV, JSONL)."""

from __future__ import annotations

import json

import pytest

from egocurate.ingest.discover import SourceError, discover


@pytest.fixture
def tree(tmp_path):
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for rel in ("a/one.mp4", "a/deep/two.MOV", "a/notes.txt", "a/.hidden.mp4", "a/odd name ü (1).mp4"):
        (tmp_path / rel).write_bytes(b"x")
    return tmp_path


def test_folder_is_walked_recursively_for_video_extensions(tree):
    uris = discover([str(tree / "a")]).column("uri").to_pylist()
    assert uris == sorted(str(tree / "a" / n) for n in ("deep/two.MOV", "odd name ü (1).mp4", "one.mp4"))


def test_glob_and_file_url(tree):
    assert discover([str(tree / "a" / "*.mp4")]).num_rows == 2
    table = discover([f"file://{tree / 'a' / 'one.mp4'}"])
    assert table.column("uri").to_pylist() == [str(tree / "a" / "one.mp4")]


def test_jsonl_manifest_keeps_metadata_and_extra_columns(tree):
    manifest = tree / "m.jsonl"
    rows = [
        {"uri": "a/one.mp4", "dataset": "egodex", "task": "pour water", "split": "train", "camera": "aria"},
        {"path": str(tree / "a" / "deep" / "two.MOV"), "narration": "cut bread"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    table = discover([str(manifest)]).to_pylist()
    assert table[0]["uri"] == str(tree / "a" / "one.mp4")
    assert (table[0]["dataset"], table[0]["task_text"], table[0]["split"]) == (
        "egodex",
        "pour water",
        "train",
    )
    assert json.loads(table[0]["extra_json"]) == {"camera": "aria"}
    assert table[1]["task_text"] == "cut bread" and table[1]["extra_json"] is None


def test_csv_manifest(tree):
    manifest = tree / "m.csv"
    manifest.write_text("uri,task_text,operator\na/one.mp4,slice a cucumber,p7\n")
    (row,) = discover([str(manifest)]).to_pylist()
    assert row["task_text"] == "slice a cucumber" and json.loads(row["extra_json"]) == {"operator": "p7"}


def test_first_mention_wins_across_sources(tree):
    manifest = tree / "m.jsonl"
    manifest.write_text(json.dumps({"uri": "a/one.mp4", "task_text": "from manifest"}) + "\n")
    table = discover([str(manifest), str(tree / "a")])
    assert table.num_rows == 3
    first = [r for r in table.to_pylist() if r["uri"].endswith("one.mp4")]
    assert len(first) == 1 and first[0]["task_text"] == "from manifest"


def test_missing_source_and_bad_manifest_are_clear_errors(tree):
    with pytest.raises(SourceError, match="source not found"):
        discover([str(tree / "nope")])
    bad = tree / "bad.jsonl"
    bad.write_text('{"uri": "a/one.mp4"}\n{not json}\n')
    with pytest.raises(SourceError, match=r"bad.jsonl:2: not valid JSON"):
        discover([str(bad)])
    nouri = tree / "nouri.jsonl"
    nouri.write_text('{"task": "x"}\n')
    with pytest.raises(SourceError, match="no 'uri' or 'path'"):
        discover([str(nouri)])


def test_every_unmapped_manifest_column_survives(tree):
    """`task` becomes task_text; `narration`, `caption` and a second uri column stay in extra_json."""
    manifest = tree / "both.jsonl"
    row = {"uri": "a/one.mp4", "path": "elsewhere/one.mp4", "task": "pour water", "narration": "I pour",
           "caption": "a cup", "split": "test", "dataset": "ego", "scene_id": 7}  # fmt: skip
    manifest.write_text(json.dumps(row) + "\n")
    (out,) = discover([str(manifest)]).to_pylist()
    assert (out["task_text"], out["split"], out["dataset"]) == ("pour water", "test", "ego")
    assert json.loads(out["extra_json"]) == {
        "path": "elsewhere/one.mp4", "narration": "I pour", "caption": "a cup", "scene_id": 7
    }  # fmt: skip
    csv_manifest = tree / "both.csv"
    csv_manifest.write_text("path,narration,task\na/one.mp4,I pour,pour water\n")
    (out,) = discover([str(csv_manifest)]).to_pylist()
    assert out["task_text"] == "pour water" and json.loads(out["extra_json"]) == {"narration": "I pour"}
