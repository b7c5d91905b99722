"""Containment and recovery: a failing export publishes nothing, a killed swap loses nothing, bad
--fps values are one error line, the remove guard cannot be stepped down, nothing lands outside --out.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egocurate.cli.main import app
from egocurate.export import common, dreamdojo, lerobot
from egocurate.export.common import ExportRefused
from egocurate.export.dreamdojo import export_dreamdojo
from egocurate.export.lerobot import export_lerobot
from egocurate.testing.catalog import build_sample_catalog

SIZE = {"width": 32, "height": 24, "progress": False, "workers": 2}


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def _cli(*args: str):
    return CliRunner().invoke(app, [*args, "--no-progress"])


def _build(root: Path):
    """2 videos x 4 clips of 30 frames at 15 fps (20 frames at 10 Hz): 8 clips, sources under _media/."""
    return build_sample_catalog(root, videos=2, seconds=4.0, clip_frames=30,
                                clip_step=10, latents=False, tokenizer_latents=False)  # fmt: skip


@pytest.fixture()
def sample(tmp_path):
    """A fresh catalog per test (some tests move its sources away)."""
    return _build(tmp_path / "cat"), tmp_path / "cat" / "_media"


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One catalog for the tests that only read it."""
    return _build(tmp_path_factory.mktemp("safety_cat"))


def _dot_leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith(".")]


# 1. A failing command publishes nothing.


@pytest.mark.parametrize("kind", ["dreamdojo", "lerobot"])
def test_a_failing_replace_keeps_the_previous_export_byte_identical(sample, tmp_path, kind):
    catalog, media = sample
    out = tmp_path / "export"
    done = _cli("export", kind, "-c", catalog.root, "--out", str(out), "--width", "32", "--height", "24")
    assert done.exit_code == 0, done.output
    before = _snapshot(out)
    assert sum(name.endswith(".mp4") for name in before) == 8
    media.rename(tmp_path / "moved_media")
    done = _cli("export", kind, "-c", catalog.root, "--out", str(out), "--replace")
    assert done.exit_code == 2, done.output
    assert "error: none of the 8 selected clip(s) could be written" in done.output
    assert "left out 8 clip(s)" in done.output  # the reasons are still printed
    assert _snapshot(out) == before
    assert _dot_leftovers(tmp_path) == []  # the staging folder is removed


def test_a_failing_export_into_a_new_folder_creates_nothing(sample, tmp_path):
    catalog, media = sample
    media.rename(tmp_path / "moved_media")
    out = tmp_path / "new_export"
    with pytest.raises(ExportRefused, match=r"none of the 8 selected clip\(s\) could be written") as err:
        export_dreamdojo(catalog, str(out), **SIZE)
    assert len(err.value.report.skipped) == 8
    with pytest.raises(ExportRefused, match=r"none of the 8 selected"):
        export_lerobot(catalog, str(out), **SIZE)
    assert not out.exists() and _dot_leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", ["dreamdojo", "lerobot"])
def test_fps_zero_into_a_new_folder_publishes_nothing(shared, tmp_path, kind):
    out = tmp_path / "new_export"
    done = _cli("export", kind, "-c", shared.root, "--out", str(out), "--fps", "0")
    assert done.exit_code == 2 and "error:" in done.output, done.output
    assert not out.exists() and _dot_leftovers(tmp_path) == []


# 2. A kill at any step of the publish swap never leaves --out missing, and loses nothing.

KILL_QUERY = "SELECT clip_id FROM clip_view WHERE clip_index = 0"  # 2 clips: each killed run is short

KILLER = r"""
import os, shutil, sys
from egocurate.catalog.store import Catalog
from egocurate.export import common
from egocurate.export.dreamdojo import export_dreamdojo

catalog, out, query, kill_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
exchange = sys.argv[5] == "1"
state = {"publishing": False, "calls": 0}


def dying(fn):
    def wrapped(*args, **kwargs):
        result = fn(*args, **kwargs)
        if state["publishing"]:
            state["calls"] += 1
            if state["calls"] == kill_after:
                os._exit(9)  # killed right after this step of the swap
        return result
    return wrapped


os.rename, os.replace, shutil.rmtree = dying(os.rename), dying(os.replace), dying(shutil.rmtree)
if hasattr(common, "_exchange"):
    common._exchange = dying(common._exchange) if exchange else (lambda a, b: False)
publish = common.Staging.publish


def publishing(self, *args, **kwargs):
    state["publishing"] = True
    return publish(self, *args, **kwargs)


common.Staging.publish = publishing
export_dreamdojo(Catalog(catalog, create=False), out, query=query, width=16, height=16, progress=False,
                 workers=1)
"""


def _kill_after(catalog, out: Path, step: int, exchange: bool) -> int:
    cmd = [sys.executable, "-c", KILLER, catalog.root, str(out), KILL_QUERY, str(step), str(int(exchange))]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 9), done.stderr
    return done.returncode


def _complete(out: Path) -> bool:
    """`out` is a whole export: its marker, its index, and exactly the MP4s the index lists."""
    if not (out / dreamdojo.MARKER).is_file() or not (out / "clips.parquet").is_file():
        return False
    listed = set(pq.read_table(out / "clips.parquet").column("path").to_pylist())
    return len(listed) == 2 and listed == {str(p.relative_to(out)) for p in out.rglob("*.mp4")}


def test_a_kill_at_any_step_of_the_swap_never_leaves_out_missing(shared, tmp_path):
    # Linux filesystems the tests run on (ext4, tmpfs, overlayfs) all exchange folders atomically;
    # elsewhere the two-rename fallback is covered by the recovery tests below.
    assert common.exchange_supported(tmp_path), "no atomic exchange of two folders (renameat2) here"
    out = tmp_path / "export"
    export_dreamdojo(shared, str(out), query=KILL_QUERY, **SIZE)
    before = _snapshot(out)
    for step in range(1, 10):
        code = _kill_after(shared, out, step, exchange=True)
        assert out.is_dir() and _complete(out), f"--out broken after a kill at step {step}"
        if code == 0:
            break
    assert _snapshot(out) != before  # the last run published
    export_dreamdojo(shared, str(out), query=KILL_QUERY, **SIZE)
    assert _dot_leftovers(tmp_path) == []  # the killed runs' leftovers are cleaned up


def _kill_between_the_renames(catalog, out: Path, before: dict[str, str]) -> None:
    """Kill a fallback swap step by step until a kill leaves --out renamed away (the unavoidable gap)."""
    for step in range(1, 10):
        assert _kill_after(catalog, out, step, exchange=False) == 9
        if not out.exists():
            return
        assert _snapshot(out) == before  # killed before the swap: untouched
    raise AssertionError("no kill left --out renamed away")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_without_an_atomic_exchange_a_kill_mid_swap_is_recovered(shared, tmp_path):
    out = tmp_path / "export"
    export_dreamdojo(shared, str(out), query=KILL_QUERY, **SIZE)
    before = _snapshot(out)
    _kill_between_the_renames(shared, out, before)
    assert common.recover_export(out) is True  # what a reader or the next export does
    assert _snapshot(out) == before
    assert common.recover_export(out) is False  # nothing left to recover
    out.rename(tmp_path / f".export.previous-{_dead_pid()}")  # the state such a kill leaves
    done = CliRunner().invoke(app, ["export", "recover", "--out", str(out)])
    assert done.exit_code == 0 and "restored" in done.output, done.output
    assert _snapshot(out) == before
    _kill_between_the_renames(shared, out, before)
    export_dreamdojo(shared, str(out), query=KILL_QUERY, **SIZE)  # the next export restores, then publishes
    assert _complete(out) and _dot_leftovers(tmp_path) == []


# 3. --fps is validated up front.


@pytest.mark.parametrize("fps", ["0", "-1", "nan", "inf", "1e-9", "1000"])
@pytest.mark.parametrize("kind", ["dreamdojo", "lerobot"])
def test_a_bad_fps_is_one_error_line(shared, tmp_path, kind, fps):
    out = tmp_path / "x"
    done = _cli("export", kind, "-c", shared.root, "--out", str(out), f"--fps={fps}")
    assert done.exit_code == 2, done.output
    lines = done.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --fps must be from 1 to 240"), done.output
    assert "ZeroDivisionError" not in done.output and not out.exists()


@pytest.mark.parametrize("fps", [0.0, -1.0, float("nan"), float("inf"), 1e-9])
def test_the_library_refuses_a_bad_fps_before_staging(shared, tmp_path, fps):
    out = tmp_path / "x"
    with pytest.raises(ValueError, match="fps"):
        export_dreamdojo(shared, str(out), fps=fps, **SIZE)
    with pytest.raises(ValueError, match="fps"):
        export_lerobot(shared, str(out), fps=fps, **SIZE)
    assert list(tmp_path.iterdir()) == []


# 4. The remove guard compares against the largest export the folder has held.


def _query(clips_per_video: int) -> str:
    return f"SELECT clip_id FROM clip_view WHERE clip_index < {clips_per_video}"


def test_the_remove_guard_cannot_be_stepped_down(shared, tmp_path):
    out = tmp_path / "export"
    assert export_dreamdojo(shared, str(out), query=_query(4), **SIZE).written == 8
    assert export_dreamdojo(shared, str(out), query=_query(2), **SIZE).written == 4  # half: allowed
    marker = json.loads((out / dreamdojo.MARKER).read_text())
    assert marker["high_water"] == 8
    before = _snapshot(out)
    with pytest.raises(ExportRefused, match=r"2 clip\(s\).*high-water mark of 8.*selection") as err:
        export_dreamdojo(shared, str(out), query=_query(1), **SIZE)
    assert "--replace" in str(err.value)
    assert _snapshot(out) == before
    export_dreamdojo(shared, str(out), query=_query(1), replace=True, **SIZE)
    assert json.loads((out / dreamdojo.MARKER).read_text())["high_water"] == 2  # --replace resets it


def test_lerobot_records_its_high_water_mark_too(shared, tmp_path):
    out = tmp_path / "ds"
    export_lerobot(shared, str(out), query=_query(4), **SIZE)
    export_lerobot(shared, str(out), query=_query(2), **SIZE)
    assert json.loads((out / lerobot.MARKER).read_text())["high_water"] == 8
    with pytest.raises(ExportRefused, match=r"high-water mark of 8"):
        export_lerobot(shared, str(out), query=_query(1), **SIZE)


# 5. Nothing derived from data writes outside --out.

HOSTILE = "../../x"


def _hostile(select):
    """select_clips with hostile labels, datasets, splits and clip ids."""

    def hostile_select(*args, **kwargs):
        table = select(*args, **kwargs)
        rows = table.to_pylist()
        for i, row in enumerate(rows):
            row.update(task=HOSTILE, task_text=HOSTILE, dataset=HOSTILE, split=HOSTILE)
            row["clip_id"] = f"../../evil{i}" if i % 2 else f"/tmp/../evil{i}"
        return type(table).from_pylist(rows)

    return hostile_select


@pytest.mark.parametrize("kind", ["dreamdojo", "lerobot"])
def test_hostile_labels_write_nothing_outside_out(shared, tmp_path, monkeypatch, kind):
    module, export = (dreamdojo, export_dreamdojo) if kind == "dreamdojo" else (lerobot, export_lerobot)
    monkeypatch.setattr(module, "select_clips", _hostile(module.select_clips))
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    out = work / "export"
    before = _tree(tmp_path)
    report = export(shared, str(out), **SIZE)
    assert report.written == 8
    added = _tree(tmp_path) - before
    assert added and all(p == "a/b/export" or p.startswith("a/b/export/") for p in added), added
    assert not Path("/tmp/evil0.mp4").exists()
    if kind == "dreamdojo":
        index = pq.read_table(out / "clips.parquet").to_pylist()
        assert all(".." not in r["path"] and not r["path"].startswith("/") for r in index)
        assert {r["clip_id"] for r in index} == {f"../../evil{i}" for i in range(1, 8, 2)} | {
            f"/tmp/../evil{i}" for i in range(0, 8, 2)
        }
        assert all((out / r["path"]).is_file() for r in index)
