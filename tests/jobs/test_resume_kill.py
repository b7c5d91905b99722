"""A real ingest process killed with SIGKILL halfway, then rerun, equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from egocurate.catalog.store import Catalog
from egocurate.jobs.pipeline import ingest

N_FILES = 60


@pytest.fixture(scope="module")
def many_videos(tmp_path_factory, sample_videos):
    """Distinct real videos: copies of a sample with unique trailing bytes (demuxers ignore them)."""
    src = tmp_path_factory.mktemp("many")
    data = sample_videos[0].read_bytes()
    for i in range(N_FILES):
        (src / f"take_{i:03d}.mp4").write_bytes(data + f"egocurate-test-{i}".encode())
    return src


def _cli(catalog: str, src, env) -> list[str]:
    return [sys.executable, "-m", "egocurate.cli.main", "ingest", str(src), "--catalog", catalog,
            "--commit-every", "2", "--batch-size", "2", "--no-progress"]  # fmt: skip


def test_sigkill_halfway_then_rerun_equals_uninterrupted_run(tmp_path, many_videos):
    reference = Catalog(tmp_path / "reference")
    ingest([str(many_videos)], reference.root, progress=False)
    expected = reference.read("videos").sort_by("video_id").to_pylist()
    assert len(expected) == N_FILES

    killed = Catalog(tmp_path / "killed")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(_cli(killed.root, many_videos, env), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and (killed.version("videos") or 0) < 3:
            assert proc.poll() is None, "ingest finished before it could be killed; raise N_FILES"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
    partial = killed.read("videos").column("video_id").to_pylist()
    assert 0 < len(partial) < N_FILES, "the kill must land halfway"
    assert len(partial) == len(set(partial))

    # Rerun to completion: exactly the uninterrupted rows, no duplicates, nothing lost.
    subprocess.run(_cli(killed.root, many_videos, env), env=env, check=True, capture_output=True)
    assert killed.read("videos").sort_by("video_id").to_pylist() == expected
    ledger_keys = killed.read("_ledger").column("key").to_pylist()
    assert sorted(set(ledger_keys)) == sorted(str(p) for p in many_videos.glob("*.mp4"))
    # A third run finds nothing to do and commits nothing.
    version = killed.version("videos")
    subprocess.run(_cli(killed.root, many_videos, env), env=env, check=True, capture_output=True)
    assert killed.version("videos") == version
