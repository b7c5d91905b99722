"""A re-export never destroys a good export: it is staged next to --out and swapped in whole."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from egocurate.export.common import ExportRefused
from egocurate.export.dreamdojo import export_dreamdojo
from egocurate.export.lerobot import export_lerobot
from egocurate.testing.catalog import build_sample_catalog


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture()
def sample(tmp_path):
    """6 videos x 4 clips of 30 frames at 15 fps (20 frames at 10 Hz), sources under _media/."""
    catalog = build_sample_catalog(tmp_path / "cat", videos=6, seconds=4.0, clip_frames=30, clip_step=10,
                                   latents=False, tokenizer_latents=False)  # fmt: skip
    return catalog, tmp_path / "cat" / "_media"


def test_re_export_after_sources_moved_keeps_the_previous_export(sample, tmp_path):
    catalog, media = sample
    out = tmp_path / "export"
    first = export_dreamdojo(catalog, str(out), width=64, height=48, progress=False, workers=2)
    assert first.written == 24
    before = _snapshot(out)
    media.rename(tmp_path / "moved_media")
    with pytest.raises(ExportRefused, match=r"remove 24 of its 24 clip\(s\) \(24 selected but not writable"):
        export_dreamdojo(catalog, str(out), width=64, height=48, progress=False, workers=2)
    assert _snapshot(out) == before
    cli = [sys.executable, "-m", "egocurate.cli.main", "export", "lerobot", "-c", catalog.root, "--out",
           str(tmp_path / "lr"), "--no-progress"]  # fmt: skip
    done = subprocess.run(cli, capture_output=True, text=True)
    output = done.stdout + done.stderr  # the error line goes to stderr, the report to stdout
    assert done.returncode == 2 and "error: none of the 24 selected" in output, output
    assert not (tmp_path / "lr").exists()  # a failing export publishes nothing
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left behind


def test_lerobot_re_export_that_drops_most_clips_needs_replace(sample, tmp_path):
    catalog, _ = sample
    out = tmp_path / "lerobot"
    export_lerobot(catalog, str(out), width=64, height=48, progress=False, workers=2)
    before = _snapshot(out)
    narrow = "SELECT clip_id FROM clip_view WHERE clip_index = 0"
    with pytest.raises(ExportRefused, match=r"remove 18 of its 24 .* 18 no longer selected"):
        export_lerobot(catalog, str(out), query=narrow, width=64, height=48, progress=False, workers=2)
    assert _snapshot(out) == before
    report = export_lerobot(
        catalog, str(out), query=narrow, width=64, height=48, progress=False, replace=True
    )
    assert report.written == 6 and len(list(out.rglob("*.mp4"))) == 6


def test_a_re_export_killed_halfway_leaves_the_previous_export_exactly(sample, tmp_path):
    catalog, _ = sample
    out = tmp_path / "export"
    export_dreamdojo(catalog, str(out), width=64, height=48, progress=False, workers=2)
    before = _snapshot(out)
    cmd = [sys.executable, "-m", "egocurate.cli.main", "export", "dreamdojo", "-c", catalog.root, "--out",
           str(out), "--width", "320", "--height", "240", "--workers", "1", "--no-progress"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            assert proc.poll() is None, "the export finished before it could be killed"
            staged = [p for s in tmp_path.glob(".export.staging-*") for p in s.rglob("*.mp4")]
            if len(staged) >= 3:
                break
            time.sleep(0.02)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    assert _snapshot(out) == before  # exactly as it was
    assert list(tmp_path.glob(".export.staging-*")), "the kill must land mid-export"
    again = export_dreamdojo(catalog, str(out), width=32, height=24, progress=False, workers=2)
    assert again.written == 24 and _snapshot(out) != before
    assert not list(tmp_path.glob(".export.*"))  # the killed run's staging folder is cleaned up
