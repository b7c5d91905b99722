"""Shared fixtures: generated sample videos, real bad files, and engines started once per session."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from egocurate.media.tools import ffmpeg_exe
from egocurate.testing.videos import make_corrupt_copy, make_video

os.environ.setdefault("HF_HUB_OFFLINE", "1")
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module's model tests: on a shared 2-core machine more threads spin
    and run far slower (modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Real recordings from ../shared/data (CI has them); a machine without them fails, never skips."""
    if not SHARED_DATA.is_dir():
        pytest.fail("../shared/data is not present next to this checkout: the real-footage tests need it")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory) -> list[Path]:
    """Three small synthetic egocentric videos (2 scenes x 2 s at 10 fps, 320x240)."""
    out = tmp_path_factory.mktemp("samples")
    paths = []
    for i in range(3):
        path = out / f"clip_{i}.mp4"
        make_video(path, seed=100 + i, scenes=2, scene_seconds=2.0, fps=10.0, width=320, height=240)
        paths.append(path)
    return paths


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="session")
def bad_files(tmp_path_factory, sample_videos) -> dict[str, Path]:
    """One real file per quarantine kind, keyed by the kind ingest must report."""
    out = tmp_path_factory.mktemp("bad")
    files: dict[str, Path] = {}
    # A real mp4 cut short: moov atom at the front (faststart), most of the frames gone.
    files["truncated"] = out / "truncated.mp4"
    make_corrupt_copy(sample_videos[0], files["truncated"], keep=0.3)
    # Moov at the end (the ffmpeg default without faststart), cut short: the header is gone too.
    plain = out / "plain.mp4"
    _ffmpeg("-i", str(sample_videos[1]), "-c", "copy", str(plain))
    files["truncated_no_moov"] = out / "truncated_no_moov.mp4"
    files["truncated_no_moov"].write_bytes(plain.read_bytes()[: plain.stat().st_size // 2])
    plain.unlink()
    files["zero_length"] = out / "empty.mp4"
    files["zero_length"].write_bytes(b"")
    files["audio_only"] = out / "audio_only.mp4"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1", "-c:a", "aac", str(files["audio_only"]))
    files["unreadable"] = out / "notes.mp4"
    files["unreadable"].write_text("this is a text file, not a video\n" * 20)
    # A video stream whose frame rate no camera produces.
    files["absurd_metadata"] = out / "absurd_fps.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=5000:duration=0.01", "-c:v", "mpeg4",
            str(files["absurd_metadata"]))  # fmt: skip
    return files


@pytest.fixture(scope="session")
def ray_engine():
    """A local Ray (2 CPUs) shared by every test that needs one."""
    from egocurate.jobs.runners.ray import RayEngine

    engine = RayEngine(num_cpus=2)
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def spark_engine():
    """A local Spark session shared by every test that needs one."""
    from egocurate.jobs.runners.spark import SparkEngine

    engine = SparkEngine(master="local[2]", work_unit_rows=64)
    yield engine
    engine.spark.stop()


@pytest.fixture
def copy_tree(tmp_path):
    """Copy files into a fresh folder under tmp_path (a source folder a test may modify)."""

    def _copy(paths, name: str = "src") -> Path:
        dst = tmp_path / name
        dst.mkdir(parents=True, exist_ok=True)
        for p in paths:
            shutil.copy(p, dst / Path(p).name)
        return dst

    return _copy
