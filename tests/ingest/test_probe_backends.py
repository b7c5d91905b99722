"""The in-process probe (PyAV, the default) against the ffprobe reference, field for field.

Every column ingest writes to `videos` (and every quarantine kind and message) must be the same
whichever backend probed the file: on the real recordings of ../shared/data, on the edge cases
derived from them (Matroska without a frame count, display rotations, variable frame rate, the
truncated copy the demo makes, a recording cut a few seconds short) and on every bad file; and
over S3, where only PyAV can read.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import av
import imageio_ffmpeg
import pyarrow as pa
import pytest

from egocurate.catalog import tables
from egocurate.ingest import probe as probe_module
from egocurate.ingest.probe import ProbeError, probe
from egocurate.ingest.probe_stage import ProbeStage
from egocurate.media.tools import ffmpeg_exe
from egocurate.testing.videos import make_corrupt_copy

COMPARED = [name for name in tables.VIDEOS.schema.names if name != "probe_backend"]
ERRORS = [tables.ERROR_KIND, tables.ERROR_MESSAGE]


def _ffmpeg(exe: str, *args: str) -> None:
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def edge_cases(tmp_path_factory, shared_data, sample_videos) -> dict[str, Path]:
    """Files whose fields each backend derives differently: no nb_frames, rotation, VFR, truncation."""
    out = tmp_path_factory.mktemp("probe_edges")
    recording = shared_data / "facebookresearch__sam2__02_cups.mp4"  # h264 + aac, 29.97 fps
    files = {"mkv_no_frame_count": out / "remux.mkv"}
    _ffmpeg(ffmpeg_exe(), "-i", str(recording), "-c", "copy", str(files["mkv_no_frame_count"]))
    for degrees in (90, 270):
        files[f"rotated_{degrees}"] = out / f"rotated_{degrees}.mp4"
        # imageio-ffmpeg's ffmpeg (>= 6.1) writes `-display_rotation`; the one on PATH may be older.
        _ffmpeg(imageio_ffmpeg.get_ffmpeg_exe(), "-display_rotation:v:0", str(degrees), "-i", str(recording),
                "-c", "copy", str(files[f"rotated_{degrees}"]))  # fmt: skip
    files["vfr_mkv"] = out / "vfr.mkv"
    _ffmpeg(ffmpeg_exe(), "-i", str(sample_videos[0]), "-vf", r"select=lt(mod(n\,10)\,3)+gte(n\,30)",
            "-fps_mode", "vfr", "-c:v", "libx264", str(files["vfr_mkv"]))  # fmt: skip
    files["demo_corrupt"] = out / "corrupt.mp4"
    make_corrupt_copy(recording, files["demo_corrupt"])  # what `egocurate demo` generates
    # Cut 3 s before the end of a recording with a keyframe every 8 s: the last keyframe's data is
    # there, the last seconds' are not, so only reading on from that keyframe finds the cut.
    files["cut_late"] = out / "cut_late.mp4"
    long_gop = shared_data / "EGO4D__Ego-Exo4D.github.io__cooking_aria.mp4"
    make_corrupt_copy(long_gop, files["cut_late"], keep=0.9)
    return files


def _rows_by_uri(uris: list[str], backend: str) -> dict[str, dict]:
    stage = ProbeStage(backend=backend)
    stage.setup()
    out = stage.process(pa.table({"uri": uris, "source": ["test"] * len(uris)}))
    return {row["uri"]: row for row in out.to_pylist()}


def test_every_videos_field_agrees_with_ffprobe(shared_data, edge_cases, bad_files):
    uris = sorted(str(p) for p in shared_data.glob("*.mp4"))
    assert len(uris) >= 17
    uris += [str(p) for p in edge_cases.values()] + [str(p) for p in bad_files.values()]
    reference = _rows_by_uri(uris, "ffprobe")
    default = _rows_by_uri(uris, "auto")
    assert sorted(reference) == sorted(default) == sorted(uris)
    for uri in uris:
        ref, got = reference[uri], default[uri]
        assert {k: got[k] for k in COMPARED + ERRORS} == {k: ref[k] for k in COMPARED + ERRORS}, uri
        if ref[tables.ERROR_KIND] is None:
            assert (ref["probe_backend"], got["probe_backend"]) == ("ffprobe", "pyav"), uri
    probed = [r for r in default.values() if r[tables.ERROR_KIND] is None]
    assert len(probed) == len(uris) - len(bad_files) - 2  # of the edge cases, only the two cut short
    assert default[str(edge_cases["demo_corrupt"])][tables.ERROR_KIND] == tables.TRUNCATED
    assert default[str(edge_cases["cut_late"])][tables.ERROR_KIND] == tables.TRUNCATED
    # The edge cases are what they claim to be, so the comparison covered each derivation.
    assert default[str(edge_cases["rotated_90"])]["rotation"] == 90
    assert default[str(edge_cases["rotated_270"])]["rotation"] == 270
    assert default[str(edge_cases["vfr_mkv"])]["is_vfr"]
    with av.open(str(edge_cases["mkv_no_frame_count"])) as container:
        assert container.streams.video[0].frames == 0  # no count in the header: duration x fps
    assert abs(default[str(edge_cases["mkv_no_frame_count"])]["num_frames"] - 300) <= 1  # the MP4 says 300
    assert any(r["has_audio"] for r in probed) and any(not r["has_audio"] for r in probed)
    assert {r["codec"] for r in probed} >= {"h264", "mpeg4"}


def test_ffprobe_names_what_pyav_cannot_open(bad_files):
    # PyAV refuses these containers; the default asks ffprobe, whose message is the one reported.
    for name in ("unreadable", "truncated_no_moov"):
        with pytest.raises(ProbeError) as reference:
            probe(str(bad_files[name]), backend="ffprobe")
        with pytest.raises(ProbeError) as pyav_only:
            probe(str(bad_files[name]), backend="pyav")
        with pytest.raises(ProbeError) as default:
            probe(str(bad_files[name]))
        assert (default.value.kind, default.value.message) == (reference.value.kind, reference.value.message)
        assert pyav_only.value.message != reference.value.message  # so the fallback did run


def test_a_file_only_ffprobe_opens_is_unreadable(shared_data, monkeypatch):
    # A container PyAV's libav cannot open (none of ours is one): stages decode with PyAV, so the
    # file is quarantined at ingest, with what ffprobe saw in the message.
    path = str(shared_data / "facebookresearch__sam2__02_cups.mp4")

    def refuse(source):
        raise ProbeError(tables.UNREADABLE, "no demuxer for this container")

    monkeypatch.setattr(probe_module, "_open_av", refuse)
    with pytest.raises(ProbeError) as err:
        probe(path)
    assert err.value.kind == tables.UNREADABLE
    assert "ffprobe reads a h264 1280x720 video" in err.value.message
    assert "no demuxer for this container" in err.value.message


def test_default_probe_starts_no_process(shared_data, monkeypatch):
    def no_process(*args, **kwargs):
        raise AssertionError(f"a process was started: {args[:1]}")

    monkeypatch.setattr(subprocess, "Popen", no_process)
    info = probe(str(shared_data / "microsoft__villa-x__xhand_flick_the_ball.mp4"))
    assert info.probe_backend == "pyav" and info.is_vfr and info.num_frames == 373


@pytest.fixture(scope="module")
def s3_recordings(shared_data, edge_cases):
    """The recordings and two edge cases in a bucket on moto's S3 server (loopback)."""
    import s3fs
    from moto.server import ThreadedMotoServer

    from egocurate.storage import fsspec_options

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    options = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ALLOW_HTTP": "true",
    }
    import boto3

    client = boto3.client("s3", endpoint_url=options["AWS_ENDPOINT_URL"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket="videos")
    fs = s3fs.S3FileSystem(**fsspec_options(options))
    local = [shared_data / "EGO4D__Ego-Exo4D.github.io__cooking_aria.mp4", edge_cases["rotated_90"],
             edge_cases["mkv_no_frame_count"], edge_cases["demo_corrupt"]]  # fmt: skip
    pairs = {}
    for path in local:
        fs.put(str(path), f"videos/{path.name}")
        pairs[f"s3://videos/{path.name}"] = str(path)
    yield options, pairs
    server.stop()


def test_s3_objects_probe_like_local_files(s3_recordings):
    options, pairs = s3_recordings
    stage = ProbeStage(storage_options=options)
    remote = {r["uri"]: r for r in stage.process(pa.table({"uri": list(pairs)})).to_pylist()}
    local = _rows_by_uri(list(pairs.values()), "ffprobe")
    for uri, path in pairs.items():
        compared = [k for k in COMPARED + [tables.ERROR_KIND] if k not in ("uri", "source")]
        assert {k: remote[uri][k] for k in compared} == {k: local[path][k] for k in compared}, uri
    kinds = sorted(str(r[tables.ERROR_KIND]) for r in remote.values())
    assert kinds == ["None", "None", "None", tables.TRUNCATED]


def test_ffprobe_missing_means_pyav_alone(shared_data, bad_files, monkeypatch):
    # imageio-ffmpeg ships no ffprobe: the default then never falls back and still classifies.
    monkeypatch.setattr(probe_module, "ffprobe_exe", lambda: None)
    info = probe(str(shared_data / "EGO4D__Ego-Exo4D.github.io__cooking_cam01.mp4"))
    assert (info.probe_backend, info.width, info.height) == ("pyav", 640, 360)
    with pytest.raises(ProbeError) as err:
        probe(str(bad_files["truncated_no_moov"]))
    assert err.value.kind == tables.TRUNCATED
