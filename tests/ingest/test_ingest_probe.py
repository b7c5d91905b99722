"""Probing real files: metadata from both backends, and every quarantine kind on real bad files."""

from __future__ import annotations

import subprocess

import imageio_ffmpeg
import pyarrow as pa
import pytest

from egocurate.catalog.store import Catalog
from egocurate.ingest.fingerprint import fingerprint_uri, sampled_ranges, video_id_for
from egocurate.ingest.probe import ProbeError, probe
from egocurate.ingest.probe_stage import ProbeStage
from egocurate.jobs.driver import run_stage
from egocurate.jobs.runners.local import LocalEngine
from egocurate.media.tools import ffmpeg_exe, ffprobe_exe

BACKENDS = ["ffprobe", "pyav"]
EXPECTED_KIND = {
    "truncated": "truncated",
    "truncated_no_moov": "truncated",
    "zero_length": "zero_length",
    "audio_only": "audio_only",
    "unreadable": "unreadable",
    "absurd_metadata": "absurd_metadata",
}


def test_ffprobe_binary_is_available_for_the_primary_backend():
    # .ci/run installs Debian's ffmpeg where it is missing, so both backends are exercised in CI.
    assert ffprobe_exe() is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_generated_video_metadata(sample_videos, backend):
    info = probe(str(sample_videos[0]), backend=backend)
    assert (info.width, info.height, info.codec, info.pix_fmt) == (320, 240, "h264", "yuv420p")
    assert info.fps == pytest.approx(10.0) and info.num_frames == 40
    assert info.duration_s == pytest.approx(4.0, abs=0.01)
    assert not info.has_audio and not info.is_vfr and info.rotation == 0
    assert info.bitrate == int(sample_videos[0].stat().st_size * 8 / info.duration_s)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(EXPECTED_KIND))
def test_each_bad_file_gets_its_error_kind(bad_files, name, backend):
    with pytest.raises(ProbeError) as err:
        probe(str(bad_files[name]), backend=backend)
    assert err.value.kind == EXPECTED_KIND[name], err.value.message
    assert err.value.message


def test_backends_agree_on_real_recordings(shared_data):
    files = sorted(shared_data.glob("*.mp4"))
    assert files
    for path in files:
        assert probe(str(path), backend="ffprobe").as_row() | {"probe_backend": ""} == probe(
            str(path), backend="pyav"
        ).as_row() | {"probe_backend": ""}, path.name


@pytest.mark.parametrize("backend", BACKENDS)
def test_rotation_audio_and_vfr_are_reported(tmp_path, sample_videos, backend):
    rotated = tmp_path / "rotated.mp4"
    # The rotation is written by the ffmpeg that imageio-ffmpeg pins (`-display_rotation`, ffmpeg >= 6.1),
    # not by whichever ffmpeg is on PATH: older builds only honour `-metadata rotate=`, newer ones ignore it.
    subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-display_rotation:v:0", "90", "-i",
         str(sample_videos[0]), "-f", "lavfi", "-i", "sine=duration=4", "-map", "0:v", "-map", "1:a",
         "-c:v", "copy", "-c:a", "aac", "-shortest", str(rotated)],
        check=True,
    )  # fmt: skip
    info = probe(str(rotated), backend=backend)
    assert info.rotation == 90 and info.has_audio
    vfr = tmp_path / "vfr.mkv"
    subprocess.run(
        [ffmpeg_exe(), "-loglevel", "error", "-y", "-i", str(sample_videos[0]), "-vf",
         r"select=lt(mod(n\,10)\,3)+gte(n\,30)", "-fps_mode", "vfr", "-c:v", "libx264", str(vfr)],
        check=True,
    )  # fmt: skip
    assert probe(str(vfr), backend=backend).is_vfr


def test_quarantine_rows_for_every_kind_and_the_run_goes_on(tmp_path, bad_files, sample_videos):
    catalog = Catalog(tmp_path / "cat")
    uris = [str(p) for p in bad_files.values()] + [str(p) for p in sample_videos]
    rows = pa.table({"uri": uris, "source": ["test"] * len(uris)})
    summary = run_stage(ProbeStage(batch_size=3), rows, catalog, LocalEngine(), progress=False)
    assert summary.rows_out == len(sample_videos) and summary.quarantined == len(bad_files)
    quarantine = {r["uri"]: r for r in catalog.read("quarantine").to_pylist()}
    for name, path in bad_files.items():
        row = quarantine[str(path)]
        assert row["error_kind"] == EXPECTED_KIND[name] and row["stage"] == "ingest" and row["message"]
    assert sorted(catalog.distinct("videos", "uri")) == sorted(str(p) for p in sample_videos)


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(ProbeError) as err:
        probe(str(tmp_path / "gone.mp4"))
    assert err.value.kind == "not_found"


def test_fingerprint_is_content_based_and_samples_large_files(tmp_path):
    big = tmp_path / "big.bin"
    payload = bytearray(8 << 20)
    payload[::4096] = b"\x01" * len(payload[::4096])
    big.write_bytes(bytes(payload))
    copy = tmp_path / "copy.bin"
    copy.write_bytes(bytes(payload))
    size, fp = fingerprint_uri(str(big))
    assert (size, fp) == fingerprint_uri(str(copy))
    ranges = sampled_ranges(size)
    assert sum(length for _, length in ranges) < size // 2  # a large file is never read whole
    changed = bytearray(payload)
    start, _ = ranges[3]
    changed[start] ^= 0xFF
    copy.write_bytes(bytes(changed))
    assert fingerprint_uri(str(copy))[1] != fp
    assert video_id_for(size, fp) != video_id_for(size, fingerprint_uri(str(copy))[1])
    assert len(video_id_for(size, fp)) == 16
