"""A stage writes the same values fused or alone (issue 23 item 8: values must not depend on run history).

Quality, embed and latent actions run one after another (each decodes for itself) and as one fused
pass (one decode per clip for all three, ``jobs.fused``); every value they write must be bit-identical.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from egocurate.catalog import tables
from egocurate.filters.vectors import decode_vectors
from egocurate.jobs.fused import FusedStage
from egocurate.jobs.registry import build_stage
from egocurate.media.tools import ffmpeg_exe
from egocurate.testing.videos import make_video

FPS = 15.0
EMBED = {"model": "egocurate-tiny-clip", "pretrained": None, "device": "cpu"}
LAM = {
    "lam_config": {"model_dim": 32, "enc_blocks": 1, "dec_blocks": 1, "num_heads": 2},
    "stride": 2,
    "device": "cpu",
}
# (name, width, height, display rotation): one at 640x360, one small, one phone clip shot upright.
VIDEOS = (("wide", 640, 360, 0), ("small", 256, 192, 0), ("portrait", 320, 192, 90))


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def _rotated_copy(src: Path, dst: Path, ccw: int) -> None:
    """`src` with a display rotation of `ccw` degrees (ffmpeg >= 6 flag, else the legacy tag)."""
    base = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
    new = subprocess.run(base + ["-display_rotation", str(ccw), "-i", str(src), "-c", "copy", str(dst)])
    if new.returncode != 0:
        subprocess.run(
            base + ["-i", str(src), "-c", "copy", "-metadata:s:v:0", f"rotate={ccw}", str(dst)], check=True
        )


@pytest.fixture(scope="module")
def clip_rows(tmp_path_factory) -> list[dict]:
    """Two clips (one covering the other's frames) of each generated video, as the clips input gives them."""
    out = tmp_path_factory.mktemp("fused_values")
    rows = []
    for name, width, height, rotation in VIDEOS:
        path = out / f"{name}.mp4"
        make_video(path, seed=11, scenes=1, scene_seconds=2.0, fps=FPS, width=width, height=height)
        if rotation:
            coded = path.with_name(f"{name}_coded.mp4")
            path.rename(coded)
            _rotated_copy(coded, path, rotation)
        upright = (height, width) if rotation % 180 else (width, height)
        for start, end in ((0, 30), (7, 23)):
            rows.append(
                {"clip_id": f"{name}_{start}", "video_id": name, "uri": str(path), "start_frame": start,
                 "end_frame": end, "fps": FPS, "duration_s": (end - start) / FPS, "width": upright[0],
                 "height": upright[1], "video_width": width, "video_height": height, "rotation": rotation}
            )  # fmt: skip
    return rows


def _stages() -> list:
    return [build_stage("quality", {}), build_stage("embed", EMBED), build_stage("latent_actions", LAM)]


def _alone(batch: pa.Table) -> dict[str, pa.Table]:
    """Each stage on its own: it decodes every clip for itself."""
    return {stage.name: stage.process(batch) for stage in _stages()}


def _fused(batch: pa.Table) -> dict[str, pa.Table]:
    """The three stages as one pass: one decode per clip, each member fed its own frames."""
    fused = FusedStage(_stages())
    fused.setup()
    prepared = fused.prepare(batch)
    out = {}
    for member, rows in fused.member_batches(prepared):
        assert "_frames" in rows.column_names  # the member is fed, it does not decode
        out[member.name] = member.process(rows)
    return out


@pytest.fixture(scope="module")
def outputs(clip_rows) -> tuple[dict[str, pa.Table], dict[str, pa.Table]]:
    batch = pa.Table.from_pylist(clip_rows)
    return _alone(batch), _fused(batch)


def test_quality_scores_are_identical_fused_or_alone(outputs, clip_rows):
    alone, fused = (o["quality"] for o in outputs)
    assert alone.column(tables.ERROR_KIND).null_count == len(clip_rows)
    assert alone.column("clip_id").to_pylist() == fused.column("clip_id").to_pylist()
    for name in alone.column_names:
        assert alone.column(name).to_pylist() == fused.column(name).to_pylist(), name
    blur = np.asarray(alone.column("blur").to_pylist(), dtype=np.float64)
    assert np.array_equal(blur, np.asarray(fused.column("blur").to_pylist(), dtype=np.float64))


def test_embeddings_are_identical_fused_or_alone(outputs, clip_rows):
    alone, fused = (o["embed"] for o in outputs)
    assert alone.column(tables.ERROR_KIND).null_count == len(clip_rows)
    assert alone.column("clip_id").to_pylist() == fused.column("clip_id").to_pylist()
    a, b = decode_vectors(alone.column("vector")), decode_vectors(fused.column("vector"))
    assert a.shape == (len(clip_rows), 64)
    assert np.array_equal(a, b), f"max abs difference {np.abs(a - b).max()}"


def test_latent_actions_are_identical_fused_or_alone(outputs, clip_rows):
    alone, fused = (o["latent_actions"] for o in outputs)
    assert alone.column(tables.ERROR_KIND).null_count == len(clip_rows)
    for name in ("clip_id", "latent_actions", "latent_actions_shape", "latent_logvar"):
        assert alone.column(name).to_pylist() == fused.column(name).to_pylist(), name
