"""Wan VAE latents through diffusers' AutoencoderKLWan: shapes, weight loading, the tokenizer stage."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import torch

from egocurate.actions.tokenizer import WanTokenizer, latent_shape, load_vae
from egocurate.actions.tokenizer_stage import TokenizerLatentStage, read_latent
from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.jobs.driver import run_stage
from egocurate.jobs.registry import build_stage
from egocurate.jobs.runners.local import LocalEngine
from egocurate.testing.videos import make_video

HW = (48, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def tiny() -> WanTokenizer:
    return WanTokenizer("wan2.1", tiny=True)


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(2, 5, *HW, 3), dtype=np.uint8)


def test_dreamdojo_latent_shapes():
    assert latent_shape("wan2.1", 13, 480, 640) == (16, 4, 60, 80)
    assert latent_shape("wan2.2", 13, 480, 640) == (48, 4, 30, 40)
    with pytest.raises(ValueError, match="1\\+4k"):
        latent_shape("wan2.1", 12, 480, 640)


def test_tiny_wan21_encodes_1_plus_4k_frames(tiny, windows):
    assert tiny.vae.config.base_dim == 16 and list(tiny.vae.config.dim_mult) == [1, 1, 1, 1]
    mu = tiny.encode(windows)
    assert tuple(mu.shape) == (2, *latent_shape("wan2.1", 5, *HW))
    assert torch.isfinite(mu).all()
    assert len(tiny.latents_mean) == len(tiny.latents_std) == 16
    with pytest.raises(ValueError, match="1\\+4k"):
        tiny.encode(windows[:, :4])


def test_tiny_wan22_has_48_channels_and_spatial_16(windows):
    tok = WanTokenizer("wan2.2", tiny=True)
    mu = tok.encode(windows[:1])
    assert tuple(mu.shape) == (1, 48, 2, HW[0] // 16, HW[1] // 16)
    assert len(tok.latents_mean) == 48 and tok.latents_std[0] == pytest.approx(0.4765)


def test_weights_load_from_a_folder_and_from_the_hf_cache(tiny, windows, tmp_path, monkeypatch):
    expected = tiny.encode(windows)
    folder = tmp_path / "wan_vae"
    tiny.vae.save_pretrained(folder)
    from_folder = WanTokenizer("wan2.1", weights=str(folder))
    assert torch.allclose(from_folder.encode(windows), expected, atol=1e-6)
    # The same weights as a cached Hub repo (`vae/` subfolder), resolved offline.
    snapshot = tmp_path / "hub" / "models--egocurate--tiny-wan" / "snapshots" / ("0" * 40)
    tiny.vae.save_pretrained(snapshot / "vae")
    (tmp_path / "hub" / "models--egocurate--tiny-wan" / "refs").mkdir()
    (tmp_path / "hub" / "models--egocurate--tiny-wan" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cached = WanTokenizer("wan2.1", weights="egocurate/tiny-wan", cache_dir=str(tmp_path / "hub"))
    assert cached.id == "wan2.1-vae:egocurate/tiny-wan"
    assert torch.allclose(cached.encode(windows), expected, atol=1e-6)
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE"):
        load_vae("egocurate/not-cached", cache_dir=str(tmp_path / "hub"))


@pytest.fixture(scope="module")
def clip_rows(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("wan_videos")
    truth = make_video(out / "v.mp4", seed=5, scenes=1, scene_seconds=1.0, fps=15, width=320, height=240)
    return [
        {
            "clip_id": "long",
            "video_id": "v",
            "uri": truth["uri"],
            "fps": 15.0,
            "start_frame": 0,
            "end_frame": 15,
            "width": 320,
            "height": 240,
        },
        {
            "clip_id": "short",
            "video_id": "v",
            "uri": truth["uri"],
            "fps": 15.0,
            "start_frame": 0,
            "end_frame": 4,
        },
        {
            "clip_id": "gone",
            "video_id": "x",
            "uri": str(out / "gone.mp4"),
            "fps": 15.0,
            "start_frame": 0,
            "end_frame": 15,
        },
    ]


def test_stage_stores_bf16_latents_and_quarantines(clip_rows, tmp_path):
    params = {"tiny": True, "height": HW[0], "width": HW[1], "window_frames": 5, "device": "cpu"}
    catalog = Catalog(tmp_path / "catalog")
    summary = run_stage(
        build_stage("tokenizer_latents", params),
        pa.Table.from_pylist(clip_rows),
        catalog,
        LocalEngine(),
        progress=False,
    )
    assert (summary.rows_out, summary.quarantined) == (1, 2)
    row = catalog.read(tables.CLIP_TOKENIZER_LATENTS.name).to_pylist()[0]
    assert row["latent_shape"] == [3, 16, 2, 6, 8]  # 15 frames = 3 windows of 5
    assert row["window_starts"] == [0, 5, 10] and row["latent_dtype"] == "bfloat16"
    assert len(row["latent_mean"]) == 16 and row["tokenizer_id"].startswith("wan2.1-vae-random-init-tiny")
    latent = read_latent(row)
    # the stored bf16 latent is the VAE's mean of the first window, up to bf16 rounding
    stage = TokenizerLatentStage(**params)
    stage.setup()
    from egocurate.actions.frames import read_model_frames

    frames = read_model_frames(clip_rows[0]["uri"], range(0, 5), HW, (320, 240))
    torch.testing.assert_close(latent[0], stage.tokenizer.encode(frames[None])[0], atol=0.05, rtol=0.02)
    kinds = {r["key"]: r["error_kind"] for r in catalog.read("quarantine").to_pylist()}
    assert kinds == {"short": "too_short", "gone": "not_found"}
    again = run_stage(
        build_stage("tokenizer_latents", params),
        pa.Table.from_pylist(clip_rows),
        catalog,
        LocalEngine(),
        progress=False,
    )
    assert (again.rows_in, again.rows_out) == (0, 0)


def test_stage_can_write_latent_files(clip_rows, tmp_path):
    stage = TokenizerLatentStage(
        tiny=True,
        height=HW[0],
        width=HW[1],
        window_frames=5,
        max_windows=1,
        device="cpu",
        output_dir=str(tmp_path / "latents"),
    )
    row = stage.process(pa.Table.from_pylist(clip_rows[:1])).to_pylist()[0]
    assert row["latent"] is None and row["latent_uri"].endswith("long.safetensors")
    assert os.path.exists(row["latent_uri"]) and row["latent_shape"] == [1, 16, 2, 6, 8]
    assert tuple(read_latent(row).shape) == (1, 16, 2, 6, 8)


def test_window_frames_must_be_1_plus_4k():
    with pytest.raises(ValueError, match="window_frames"):
        build_stage("tokenizer_latents", {"window_frames": 12})
    with pytest.raises(ValueError, match="variant"):
        build_stage("tokenizer_latents", {"variant": "wan3"})


@pytest.mark.gpu
def test_full_wan21_on_gpu_gives_dreamdojo_latent_shape():
    tok = WanTokenizer("wan2.1", device="cuda", dtype=torch.bfloat16)
    frames = np.random.default_rng(0).integers(0, 256, size=(1, 13, 480, 640, 3), dtype=np.uint8)
    assert tuple(tok.encode(frames).shape) == (1, 16, 4, 60, 80)


def test_prepare_decodes_on_the_cpu_side_and_process_gives_the_same_latents(clip_rows):
    """On Ray, `prepare` runs as a CPU task ahead of the VAE actors: what it decodes must give the
    same latents as the actor decoding for itself, and rows it cannot decode are left to `process`."""
    from egocurate.media.decode import frames_of

    stage = TokenizerLatentStage(tiny=True, height=HW[0], width=HW[1], window_frames=5, device="cpu")
    batch = pa.Table.from_pylist(clip_rows)
    prepared = stage.prepare(batch)
    rows = prepared.to_pylist()
    assert frames_of(rows[0]).shape == (3, 5, HW[0], HW[1], 3)  # 15 frames = 3 windows of 5
    assert all(frames_of(r) is None for r in rows[1:])  # too short, missing: process reports them
    direct = stage.process(batch).to_pylist()
    fed = stage.process(prepared).to_pylist()
    assert fed[0]["latent"] == direct[0]["latent"] and fed[0]["latent"] is not None
    assert [r["_error_kind"] for r in fed] == [r["_error_kind"] for r in direct]
