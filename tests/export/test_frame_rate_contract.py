"""One frame-rate rule for shards and exports: stated in their metadata, never upsampled."""

from __future__ import annotations

import json

import av
import numpy as np
import pyarrow.parquet as pq
import pytest

from egocurate.export.common import ExportRefused
from egocurate.export.dreamdojo import export_dreamdojo
from egocurate.export.lerobot import export_lerobot
from egocurate.media.encode import LowFrameRate, render_rate_plan
from egocurate.shards.stream import ShardDataset
from egocurate.shards.write import ShardParams, write_shards
from egocurate.testing.catalog import build_sample_catalog


def test_frame_plan_never_duplicates_a_frame():
    for src in (4.0, 5.0, 7.5, 10.0, 14.99, 15.0, 24.0, 29.97, 30.0, 60.0):
        for target in (None, 5.0, 7.5, 10.0, 15.0, 30.0):
            for stride in (None, 1, 2, 3):
                offsets, fps = render_rate_plan(90, src, target, stride)
                assert np.all(np.diff(offsets) > 0), (src, target, stride)
                assert fps <= src + 1e-9 and (target is None or fps <= target + 1e-9 or fps == src)


def test_frame_plan_rates():
    assert render_rate_plan(20, 15.0, None, 2) == (list(range(0, 20, 2)), 7.5)  # the LAM's pairs
    assert render_rate_plan(20, 15.0, None, None) == (list(range(20)), 15.0)
    offsets, fps = render_rate_plan(31, 30.0, 10.0)
    assert fps == 10.0 and offsets == list(range(0, 31, 3))
    assert render_rate_plan(10, 5.0, 10.0) == (list(range(10)), 5.0)  # kept at its own rate
    with pytest.raises(LowFrameRate, match="below the target"):
        render_rate_plan(10, 5.0, 10.0, low_fps="refuse")
    with pytest.raises(ValueError, match="low_fps"):
        render_rate_plan(10, 5.0, 10.0, low_fps="duplicate")


def stream_info(data: bytes | str) -> tuple[float, int]:
    """(stream frame rate, decoded frames) of an MP4 file or bytes."""
    import io

    with av.open(io.BytesIO(data) if isinstance(data, bytes) else data) as container:
        stream = container.streams.video[0]
        return float(stream.average_rate), sum(1 for _ in container.decode(stream))


@pytest.fixture(scope="module")
def stride2_catalog(tmp_path_factory):
    """2 videos at 15 fps, clips of 30 frames, latent actions at stride 2 (7.5 Hz)."""
    return build_sample_catalog(
        tmp_path_factory.mktemp("fps_cat"), videos=2, seconds=2.0, clip_frames=30, clip_step=30,
        tokenizer_latents=False, lam_stride=2,
    )  # fmt: skip


def test_shards_and_the_mp4_export_agree_on_the_rate_and_state_it(stride2_catalog, tmp_path):
    shards = write_shards(
        stride2_catalog, str(tmp_path / "shards"), params=ShardParams(width=160, height=120, val_fraction=0),
        progress=False,
    )  # fmt: skip
    manifest = json.loads((tmp_path / "shards" / "manifest.json").read_text())
    assert manifest["params"]["rendered_fps"] == [7.5] and shards.skipped == {}
    rows = {r["clip_id"]: r for r in ShardDataset(str(tmp_path / "shards"), columns=None)}
    out = tmp_path / "mp4"
    report = export_dreamdojo(stride2_catalog, str(out), width=160, height=120, progress=False)
    assert report.written == len(rows) == 2
    marker = json.loads((out / "egocurate_export.json").read_text())
    assert marker["rendered_fps"] == [7.5]
    for entry in pq.read_table(out / "clips.parquet").to_pylist():
        shard = rows[entry["clip_id"]]
        assert entry["fps"] == shard["fps"] == 7.5 and entry["lam_stride"] == 2
        assert entry["num_frames"] == shard["num_frames"] == 15  # frames 0, 2, ..., 28
        assert stream_info(str(out / entry["path"])) == pytest.approx((7.5, 15))
        assert stream_info(shard["video"]) == pytest.approx((7.5, 15))
        # Shard pair i is exactly LAM pair i: the stored rows arrive as they are.
        assert shard["latent_actions_alignment"] == "exact"
        assert shard["latent_actions"][:, 1].tolist() == list(range(14))


@pytest.fixture(scope="module")
def slow_catalog(tmp_path_factory):
    """A 5 fps source: 40 frames per clip."""
    return build_sample_catalog(
        tmp_path_factory.mktemp("slow_cat"), videos=1, seconds=8.0, fps=5.0, clip_frames=40, clip_step=40,
        tokenizer_latents=False,
    )  # fmt: skip


def test_a_slow_source_keeps_its_rate_or_is_refused_never_upsampled(slow_catalog, tmp_path):
    kept = export_dreamdojo(slow_catalog, str(tmp_path / "native"), fps=10.0, width=160, height=120,
                            progress=False)  # fmt: skip
    assert kept.written == 1
    entry = pq.read_table(tmp_path / "native" / "clips.parquet").to_pylist()[0]
    assert entry["fps"] == 5.0 and entry["num_frames"] == 40
    assert stream_info(str(tmp_path / "native" / entry["path"])) == pytest.approx((5.0, 40))  # not 80 frames

    with pytest.raises(ExportRefused) as failed:  # nothing writable: nothing published, reasons kept
        export_dreamdojo(slow_catalog, str(tmp_path / "refuse"), fps=10.0, low_fps="refuse",
                         width=160, height=120, progress=False)  # fmt: skip
    refused = failed.value.report
    assert refused.written == 0 and all("LowFrameRate" in why for why in refused.skipped.values())

    shards = write_shards(slow_catalog, str(tmp_path / "shards"),
                          params=ShardParams(fps=10.0, low_fps="refuse", width=160, height=120),
                          progress=False, register=False)  # fmt: skip
    assert len(shards.skipped) == 1 and "below the target" in next(iter(shards.skipped.values()))

    with pytest.raises(ExportRefused) as failed:
        export_lerobot(slow_catalog, str(tmp_path / "lerobot"), fps=10.0, width=160, height=120,
                       progress=False)  # fmt: skip
    lerobot = failed.value.report
    assert lerobot.written == 0 and all("LowFrameRate" in why for why in lerobot.skipped.values())
    assert not (tmp_path / "refuse").exists() and not (tmp_path / "lerobot").exists()


def test_cli_low_fps_flag(slow_catalog, tmp_path):
    from typer.testing import CliRunner

    from egocurate.cli.main import app

    args = ["export", "dreamdojo", "-c", slow_catalog.root, "--out", str(tmp_path / "x"), "--fps", "10",
            "--low-fps", "refuse", "--width", "160", "--height", "120", "--no-progress"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    # The only clip is refused, so the export writes nothing: said per clip, and an error (exit 2).
    assert result.exit_code == 2 and "left out 1 clip" in result.output, result.output
    assert "below the target 10 fps (low_fps=refuse)" in " ".join(result.output.split())
    bad = CliRunner().invoke(app, [*args[:-7], "--low-fps", "duplicate"])
    assert bad.exit_code == 2
