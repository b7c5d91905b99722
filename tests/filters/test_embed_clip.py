"""CLIP embedding stage with the tiny random-init open_clip config: shape, norms, determinism,
float16 storage, model ids, errors, and a rerun that computes nothing new."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.filters.embed import MODEL_CONFIGS, TINY_MODEL, model_id_for, pool
from egocurate.filters.embed_stage import EmbedStage
from egocurate.filters.vectors import decode_vectors, encode_vectors
from egocurate.jobs.driver import run_stage
from egocurate.jobs.registry import build_stage
from egocurate.jobs.runners.local import LocalEngine
from egocurate.media.crop import center_crop
from egocurate.testing.videos import make_video

TINY = {"model": TINY_MODEL, "pretrained": None, "batch_size": 4}


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("embed") / "two_scenes.mp4"
    make_video(path, seed=7, scenes=2, scene_seconds=2.0, fps=15.0, width=320, height=240)
    return path


def clip(video: Path, clip_id: str, start: int, end: int) -> dict:
    return {"clip_id": clip_id, "video_id": "v1", "uri": str(video), "start_frame": start, "end_frame": end,
            "fps": 15.0, "width": 320, "height": 240, "duration_s": (end - start) / 15.0}  # fmt: skip


@pytest.fixture(scope="module")
def rows(video: Path) -> list[dict]:
    return [clip(video, "scene0", 0, 30), clip(video, "scene1", 30, 60), clip(video, "scene0-again", 0, 30)]


def test_vectors_are_unit_float16_with_model_id(rows: list[dict]) -> None:
    stage = build_stage("embed", TINY)
    out = stage.process(pa.Table.from_pylist(rows))
    assert out.column(tables.ERROR_KIND).null_count == out.num_rows
    assert out.schema.field("vector").type == pa.binary()
    vectors = decode_vectors(out.column("vector"))
    assert vectors.shape == (3, 64)
    assert out.column("dim").to_pylist() == [64] * 3
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=2e-3)
    assert set(out.column("model_id").to_pylist()) == {f"{TINY_MODEL}:random-init-seed0"}
    # The same frames give the same vector; another scene gives another one.
    np.testing.assert_array_equal(vectors[0], vectors[2])
    assert float(vectors[0] @ vectors[1]) < 0.9999


def test_frames_decoded_by_the_cpu_prepare_step_give_the_same_vectors(
    rows: list[dict], tmp_path: Path
) -> None:
    """What the Ray engine does for a GPU stage: CPU workers decode (`prepare`), the model actor embeds."""
    stage = build_stage("embed", TINY)
    batch = pa.Table.from_pylist(
        [*rows, {**rows[0], "clip_id": "gone", "uri": str(tmp_path / "missing.mp4")}]
    )
    prepared = stage.prepare(batch)
    assert prepared.column("_frames").null_count == 1  # the missing file is left to `process` to report
    direct, fed = stage.process(batch), stage.process(prepared)
    assert fed.column("vector").to_pylist() == direct.column("vector").to_pylist()
    assert fed.column(tables.ERROR_KIND).to_pylist() == direct.column(tables.ERROR_KIND).to_pylist()
    assert fed.column(tables.ERROR_KIND).to_pylist()[-1] is not None


def test_random_init_is_seeded_so_workers_agree(rows: list[dict]) -> None:
    a = decode_vectors(EmbedStage(**TINY).process(pa.Table.from_pylist(rows[:1])).column("vector"))
    b = decode_vectors(EmbedStage(**TINY).process(pa.Table.from_pylist(rows[:1])).column("vector"))
    c = decode_vectors(
        EmbedStage(**{**TINY, "seed": 1}).process(pa.Table.from_pylist(rows[:1])).column("vector")
    )
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_model_is_only_a_name_in_config(rows: list[dict], tmp_path: Path) -> None:
    """A new architecture plugs in as a model-config JSON path, without code changes."""
    config = json.loads((MODEL_CONFIGS / f"{TINY_MODEL}.json").read_text())
    config["embed_dim"] = 32
    path = tmp_path / "my-other-clip.json"
    path.write_text(json.dumps(config))
    stage = build_stage("embed", {"model": str(path), "pretrained": None})
    out = stage.process(pa.Table.from_pylist(rows[:2]))
    assert out.column("dim").to_pylist() == [32, 32]
    assert out.column("model_id")[0].as_py() == "my-other-clip:random-init-seed0"


def test_pooling_normalises_frames_then_the_mean() -> None:
    frames = np.array([[3.0, 0.0], [0.0, 0.5], [1.0, 1.0]], np.float32)
    pooled = pool(frames, [2, 1])
    np.testing.assert_allclose(pooled[0], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)  # not dominated by 3.0
    np.testing.assert_allclose(pooled[1], [np.sqrt(0.5), np.sqrt(0.5)], atol=1e-6)


def test_center_crop_and_vector_codec_round_trip() -> None:
    frames = np.arange(2 * 4 * 6 * 3, dtype=np.uint8).reshape(2, 4, 6, 3)
    assert center_crop(frames, 4, 4).shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(center_crop(frames, 4, 4)[0, 0, 0], frames[0, 0, 1])
    vectors = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    encoded = encode_vectors(vectors, missing=np.array([False, False, True, False, False]))
    assert encoded.null_count == 1
    decoded = decode_vectors(encoded.filter(encoded.is_valid()))
    np.testing.assert_allclose(decoded, vectors[[0, 1, 3, 4]], rtol=1e-3, atol=1e-3)


def test_k_frames_are_evenly_spaced_and_errors_quarantine(video: Path, tmp_path: Path) -> None:
    stage = EmbedStage(**TINY, num_frames=3)
    stage.setup()
    frames = stage.clip_frames(__import__("egocurate.media.source", fromlist=["clip_source"]).clip_source(
        clip(video, "x", 0, 30)))  # fmt: skip
    assert frames.shape == (3, 64, 64, 3)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 64)
    out = stage.process(pa.Table.from_pylist([clip(broken, "broken", 0, 30), clip(video, "empty", 5, 5),
                                              clip(video, "ok", 0, 30)]))  # fmt: skip
    kinds = dict(
        zip(out.column("clip_id").to_pylist(), out.column(tables.ERROR_KIND).to_pylist(), strict=True)
    )
    assert kinds == {"ok": None, "broken": tables.DECODE_ERROR, "empty": tables.TOO_SHORT}
    ok = out.filter(pa.compute.equal(out.column("clip_id"), "ok"))
    assert ok.column("vector").null_count == 0


def test_model_ids_name_the_weights() -> None:
    assert model_id_for("ViT-B-32", "laion2b_s34b_b79k", 0) == "ViT-B-32:laion2b_s34b_b79k"
    assert model_id_for("ViT-B-32", "/models/clip/open_clip_model.safetensors", 0) == (
        "ViT-B-32:open_clip_model.safetensors"
    )
    assert model_id_for("/cfg/tiny.json", None, 3) == "tiny:random-init-seed3"


def test_invalid_parameters_name_allowed_values() -> None:
    with pytest.raises(ValueError, match="'auto', 'cpu' or 'cuda'"):
        build_stage("embed", {**TINY, "device": "tpu"})
    with pytest.raises(ValueError, match="fp16"):
        build_stage("embed", {**TINY, "precision": "int8"})


def test_cpu_stage_asks_for_no_gpu_and_rerun_computes_nothing(rows: list[dict], tmp_path: Path) -> None:
    stage = build_stage("embed", {**TINY, "device": "cpu"})
    assert stage.resources.gpus == 0.0
    catalog = Catalog(tmp_path / "catalog")
    table = pa.Table.from_pylist(rows)
    first = run_stage(stage, table, catalog, LocalEngine(), progress=False)
    assert (first.rows_in, first.rows_out) == (3, 3)
    version = catalog.version("clip_embeddings")
    again = run_stage(stage, table, catalog, LocalEngine(), progress=False)
    assert (again.rows_in, again.rows_skipped, again.rows_out) == (0, 3, 0)
    assert catalog.version("clip_embeddings") == version
    stored = catalog.read("clip_embeddings")
    assert decode_vectors(stored.column("vector")).shape == (3, 64)


@pytest.mark.gpu
def test_gpu_embedding_matches_cpu_under_bf16(rows: list[dict]) -> None:
    import torch

    assert torch.cuda.is_available()
    gpu = EmbedStage(**TINY, device="cuda")
    assert gpu.resources.gpus == 1.0
    cpu_vectors = decode_vectors(
        EmbedStage(**TINY, device="cpu").process(pa.Table.from_pylist(rows)).column("vector")
    )
    gpu_vectors = decode_vectors(gpu.process(pa.Table.from_pylist(rows)).column("vector"))
    assert gpu.autocast_dtype == torch.bfloat16
    cosine = np.sum(cpu_vectors * gpu_vectors, axis=1)
    assert np.all(cosine > 0.99)
