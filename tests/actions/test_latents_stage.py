"""The latent-action labelling stage: explicit frame pairs, batching, catalog rows, reruns, quarantine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from egocurate.actions.arrays import unpack_f16
from egocurate.actions.lam_stage import LatentActionStage
from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.jobs.driver import run_stage
from egocurate.jobs.registry import build_stage
from egocurate.jobs.runners.local import LocalEngine
from egocurate.media.crop import cover_size, crop_box, crop_resize
from egocurate.media.decode import read_clip
from egocurate.testing.videos import make_corrupt_copy, make_video

TINY = {"model_dim": 32, "enc_blocks": 1, "dec_blocks": 1, "num_heads": 2}
HW = (48, 64)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("lam_videos")
    truth = make_video(out / "good.mp4", seed=3, scenes=2, scene_seconds=1.0, fps=15, width=320, height=240)
    make_corrupt_copy(out / "good.mp4", out / "corrupt.mp4", keep=0.3)
    return {"truth": truth, "corrupt": str(out / "corrupt.mp4"), "missing": str(out / "missing.mp4")}


def clip_rows(videos: dict) -> list[dict]:
    truth = videos["truth"]
    rows = [
        {
            "clip_id": f"good_{k}",
            "video_id": "good",
            "uri": truth["uri"],
            "fps": 15.0,
            "duration_s": 1.0,
            "start_frame": s["start_frame"],
            "end_frame": s["end_frame"],
            "width": 320,
            "height": 240,
        }
        for k, s in enumerate(truth["scenes"])
    ]
    rows.insert(
        1,
        {
            "clip_id": "short",
            "video_id": "good",
            "uri": truth["uri"],
            "fps": 15.0,
            "start_frame": 5,
            "end_frame": 6,
            "width": 320,
            "height": 240,
        },
    )
    rows.append(
        {
            "clip_id": "corrupt",
            "video_id": "bad",
            "uri": videos["corrupt"],
            "fps": 15.0,
            "start_frame": 0,
            "end_frame": 30,
            "width": 320,
            "height": 240,
        }
    )
    rows.append(
        {
            "clip_id": "missing",
            "video_id": "gone",
            "uri": videos["missing"],
            "fps": 15.0,
            "start_frame": 0,
            "end_frame": 30,
        }
    )
    return rows


def tiny_stage(**kwargs) -> LatentActionStage:
    params = {"lam_config": TINY, "height": HW[0], "width": HW[1], "device": "cpu", "pair_batch_size": 8}
    return LatentActionStage(**{**params, **kwargs})


def test_crop_and_decode_size_keep_4_to_3():
    assert crop_box(1920, 1080, 4 / 3) == (240, 0, 1440, 1080)
    assert crop_box(480, 640, 4 / 3) == (0, 140, 480, 360)  # portrait: crop height
    w, h = cover_size(1920, 1080, 320, 240)
    _, _, cw, ch = crop_box(w, h, 4 / 3)
    assert cw >= 320 and ch >= 240 and w < 1920
    assert cover_size(320, 240, 320, 240) is None  # never upscale while decoding
    frames = np.zeros((2, 1080, 1920, 3), np.uint8)
    frames[:, :, 240:1680] = 255  # the 4:3 centre is white, the side bars black
    out = crop_resize(frames, 320, 240)
    assert out.shape == (2, 240, 320, 3) and out.min() == 255


def test_pairs_are_consecutive_frames_at_the_clip_stride(videos):
    stage = tiny_stage(stride=2, chunk_frames=4)  # small chunks: pairs must still chain across chunks
    row = clip_rows(videos)[0]
    out = stage.process(pa.Table.from_pylist([row])).to_pylist()[0]
    assert out[tables.ERROR_KIND] is None
    size = cover_size(row["width"], row["height"], HW[1], HW[0])  # the smallest size the stage decodes at
    frames = read_clip(row["uri"], row["start_frame"], row["end_frame"], size=size)[::2]
    expected_pairs = len(frames) - 1
    assert out["latent_actions_shape"] == [expected_pairs, 32] and out["lam_stride"] == 2
    model_frames = crop_resize(frames, HW[1], HW[0])
    pairs = torch.from_numpy(np.stack([model_frames[:-1], model_frames[1:]], axis=1)).float() / 255
    mu, logvar = stage.model.encode_pairs(pairs)
    got = unpack_f16(out["latent_actions"], out["latent_actions_shape"])
    np.testing.assert_allclose(got, mu.numpy(), atol=2e-3, rtol=2e-3)  # float16 storage
    np.testing.assert_allclose(
        unpack_f16(out["latent_logvar"], out["latent_actions_shape"]), logvar.numpy(), atol=2e-3, rtol=2e-3
    )


def test_bad_clips_are_marked_and_the_batch_completes(videos):
    out = tiny_stage(chunk_frames=6).process(pa.Table.from_pylist(clip_rows(videos))).to_pylist()
    by_id = {r["clip_id"]: r for r in out}
    assert by_id["short"][tables.ERROR_KIND] == tables.TOO_SHORT
    assert by_id["corrupt"][tables.ERROR_KIND] == tables.DECODE_ERROR
    assert by_id["missing"][tables.ERROR_KIND] == tables.NOT_FOUND
    for key in ("good_0", "good_1"):
        assert by_id[key][tables.ERROR_KIND] is None
        assert by_id[key]["latent_actions_shape"] == [14, 32]


def test_prepare_on_cpu_then_encode_gives_the_same_latents(videos):
    rows = pa.Table.from_pylist(clip_rows(videos))
    direct = tiny_stage().process(rows).to_pylist()
    stage = tiny_stage()
    prepared = stage.prepare(rows)
    split = stage.process(prepared).to_pylist()
    for a, b in zip(direct, split, strict=True):
        assert a[tables.ERROR_KIND] == b[tables.ERROR_KIND]
        assert a["latent_actions"] == b["latent_actions"]


def test_ray_runs_prepare_as_cpu_tasks_feeding_the_actor_pool(videos, tmp_path, ray_engine):
    """On Ray, `prepare` (decode) runs as CPU tasks feeding the model actors; rows equal a local run.

    The local Ray has 2 CPUs: one actor holds one, so the other is left to the prepare tasks.
    """
    rows = pa.Table.from_pylist(clip_rows(videos))
    params = {"lam_config": TINY, "height": HW[0], "width": HW[1], "device": "cpu", "batch_size": 8}
    out = {}
    for engine in (LocalEngine(), ray_engine):
        catalog = Catalog(tmp_path / engine.name)
        summary = run_stage(build_stage("latent_actions", params), rows, catalog, engine, progress=False)
        assert (summary.rows_out, summary.quarantined) == (2, 3)
        latents = {
            r["clip_id"]: r["latent_actions"] for r in catalog.read(tables.CLIP_LATENTS.name).to_pylist()
        }
        quarantine = {r["key"]: r["error_kind"] for r in catalog.read("quarantine").to_pylist()}
        out[engine.name] = (latents, quarantine)
    assert out["ray"] == out["local"]
    assert ray_engine.last_stats["prepare_tasks"] > 0


def test_catalog_run_quarantines_and_a_rerun_recomputes_nothing(videos, tmp_path):
    catalog = Catalog(tmp_path / "catalog")
    rows = pa.Table.from_pylist(clip_rows(videos))
    stage = build_stage(
        "latent_actions",
        {"lam_config": TINY, "height": HW[0], "width": HW[1], "device": "cpu", "batch_size": 8},
    )
    first = run_stage(stage, rows, catalog, LocalEngine(), progress=False)
    assert (first.rows_out, first.quarantined) == (2, 3)
    latents = catalog.read(tables.CLIP_LATENTS.name)
    assert sorted(latents.column("clip_id").to_pylist()) == ["good_0", "good_1"]
    for row in latents.to_pylist():
        assert unpack_f16(row["latent_actions"], row["latent_actions_shape"]).shape == (14, 32)
        assert row["lam_model_id"].startswith("lam-random-init") and row["lam_stride"] == 1
    quarantine = {r["key"]: r["error_kind"] for r in catalog.read("quarantine").to_pylist()}
    assert quarantine == {"short": "too_short", "corrupt": "decode_error", "missing": "not_found"}
    version = catalog.version(tables.CLIP_LATENTS.name)

    class Exploding(LatentActionStage):
        def process(self, batch):  # a rerun must not call the model at all
            raise AssertionError(f"recomputed {batch.column('clip_id').to_pylist()}")

    again = run_stage(
        Exploding(lam_config=TINY, height=HW[0], width=HW[1], device="cpu"),
        rows,
        catalog,
        LocalEngine(),
        progress=False,
    )
    assert (again.rows_in, again.rows_skipped, again.rows_out) == (0, 5, 0)
    assert catalog.version(tables.CLIP_LATENTS.name) == version


def test_pipeline_params_are_validated():
    with pytest.raises(ValueError, match="precision"):
        build_stage("latent_actions", {"precision": "int3"})
    with pytest.raises(ValueError, match="trust_checkpoint"):
        build_stage("latent_actions", {"trust_checkpoint": "maybe"})


def test_checkpoint_stage_uses_the_file_as_model_id(tmp_path, videos):
    from egocurate.actions.lam import LAMConfig, LatentActionModel

    model = LatentActionModel(LAMConfig(**TINY))
    path = Path(tmp_path) / "mine.safetensors"
    model.save_safetensors(path)
    stage = LatentActionStage(checkpoint=str(path), height=HW[0], width=HW[1], device="cpu")
    out = stage.process(pa.Table.from_pylist(clip_rows(videos)[:1])).to_pylist()[0]
    assert out["lam_model_id"].startswith("mine.safetensors@")
    assert out["latent_actions_shape"] == [14, 32]
