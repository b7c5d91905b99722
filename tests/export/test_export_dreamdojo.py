"""The DreamDojo MP4 export, walked with the trainer's own human-video loader rules."""

from __future__ import annotations

import random
from pathlib import Path

import av
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egocurate.export.common import ExportRefused
from egocurate.export.dreamdojo import check_dreamdojo_root, export_dreamdojo, loader_safe_name
from egocurate.testing.catalog import build_sample_catalog

LAB_TASKS = ("pour water into the cup", "bright pad wiping", "open the left drawer", "Resize the iPad window")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """4 videos (one per task) x 2 clips of 24 frames at 15 fps (16 frames at 10 Hz)."""
    return build_sample_catalog(
        tmp_path_factory.mktemp("dd_export_cat"),
        videos=4,
        seconds=3.2,
        clip_frames=24,
        clip_step=24,
        tasks=LAB_TASKS,
        tokenizer_latents=False,
    )


def dreamdojo_walk(dataset_path: str) -> list[Path]:
    """What DreamDojo's MultiVideoActionDataset + VideoDataset keep of a dataset root."""
    lowered = dataset_path.lower()
    assert "egodex_21" not in lowered, "routed to MANODataset"
    assert not any(w in lowered for w in ("gr1", "g1", "yam", "agibot", "droid")), (
        "routed to a LeRobot loader"
    )
    assert "xdof" not in dataset_path, "xdof roots keep only 320_240 files"
    files = list(Path(dataset_path).rglob("*.mp4"))
    return [f for f in files if not any(w in str(f).lower() for w in ("left", "right", "resize", "pad"))]


def loader_frames(path: Path) -> list:
    """Decode the way the loader does (PyAV frame iteration), and draw its random 13-frame window."""
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    start = random.randint(0, len(frames) - 13 - 1)  # the trainer's own draw: needs >= 14 frames
    return frames[start : start + 13]


def test_export_survives_the_trainer_filters_and_renames_tricky_tasks(catalog, tmp_path):
    out = tmp_path / "human_video"
    report = export_dreamdojo(catalog, str(out), fps=10.0, width=160, height=120, progress=False)
    assert report.skipped == {} and report.written == 8
    kept = dreamdojo_walk(str(out))
    index = pq.read_table(out / "clips.parquet").to_pylist()
    assert len(kept) == len(index) == 8, "every exported clip must reach the trainer"
    assert sorted(str(out / r["path"]) for r in index) == sorted(str(p) for p in kept)
    clip_ids = {r["clip_id"] for r in catalog.read("clips", columns=["clip_id"]).to_pylist()}
    assert {r["clip_id"] for r in index} == clip_ids and all(
        Path(r["path"]).stem == r["clip_id"] for r in index
    )
    folders = {r["task"]: r["folder"] for r in index}
    assert folders["bright pad wiping"] == "brgt_pd_wiping"  # renamed, not lost
    assert folders["open the left drawer"] == "open_the_lft_drawer"
    assert folders["Resize the iPad window"] == "rsz_the_ipd_window"
    assert set(report.renamed) == {"bright pad wiping", "open the left drawer", "Resize the iPad window"}
    for path in kept:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            assert float(stream.average_rate) == pytest.approx(10.0)
            count = sum(1 for _ in container.decode(stream))
        assert count == 16 >= 14
        assert len(loader_frames(path)) == 13


def test_task_query_and_rerun_removes_clips_no_longer_selected(catalog, tmp_path):
    out = tmp_path / "export"
    export_dreamdojo(catalog, str(out), width=160, height=120, progress=False)
    before = sorted(p.relative_to(out) for p in out.rglob("*.mp4"))
    # Dropping 6 of 8 clips is more than REMOVE_LIMIT: refused, the previous export untouched.
    with pytest.raises(ExportRefused, match=r"remove 6 of its 8 clip\(s\).*6 no longer selected"):
        export_dreamdojo(catalog, str(out), task="pour*", width=160, height=120, progress=False)
    assert sorted(p.relative_to(out) for p in out.rglob("*.mp4")) == before
    report = export_dreamdojo(
        catalog, str(out), task="pour*", width=160, height=120, progress=False, replace=True
    )
    kept = dreamdojo_walk(str(out))
    assert report.written == len(kept) == 2 and {p.parent.name for p in kept} == {"pour_water_into_the_cup"}


def test_short_clips_are_skipped_with_a_reason(catalog, tmp_path):
    with pytest.raises(ExportRefused, match=r"none of the 8 selected clip\(s\) could be written") as refused:
        export_dreamdojo(catalog, str(tmp_path / "slow"), fps=5.0, width=160, height=120, progress=False)
    report = refused.value.report  # a failing export publishes nothing but still says why
    assert report.written == 0 and len(report.skipped) == 8
    assert all("< 14" in why for why in report.skipped.values())
    assert not (tmp_path / "slow").exists()


@pytest.mark.parametrize("root", ["bright_videos", "ipad_clips", "data_g1", "GR1-set", "agibot", "egodex_21"])
def test_roots_the_trainer_would_drop_or_reroute_are_refused(root, tmp_path):
    with pytest.raises(ValueError, match="DreamDojo"):
        check_dreamdojo_root(tmp_path / root)


def test_safe_names_never_contain_filtered_words():
    for text in ("leftright", "Right-Left", "padpad", "upside down", "", "x" * 200):
        name = loader_safe_name(text)
        assert name and len(name) <= 60 and not any(w in name for w in ("left", "right", "resize", "pad"))


def test_cli_export_dreamdojo(catalog, tmp_path):
    from egocurate.cli.main import app

    out = tmp_path / "cli_export"
    args = [
        "export",
        "dreamdojo",
        "-c",
        catalog.root,
        "--out",
        str(out),
        "--task",
        "*pad*",
        "--width",
        "160",
        "--height",
        "120",
        "--no-progress",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(dreamdojo_walk(str(out))) == 4 and "renamed" in result.output
    bad = CliRunner().invoke(
        app, ["export", "dreamdojo", "-c", catalog.root, "--out", str(tmp_path / "left")]
    )
    assert bad.exit_code == 2 and "drops every file" in " ".join(bad.output.split())
