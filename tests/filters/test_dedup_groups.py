"""Near-duplicate groups: exact vs clustered search, overlaps, representatives, re-encoded copies,
same-scene negatives on the near-duplicate set, and the corpus-level driver with its no-op rerun."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.filters.dedup import (
    ArraySource,
    DedupSettings,
    choose_representatives,
    find_groups,
    overlap_pairs,
)
from egocurate.filters.dedup_stage import DedupStage
from egocurate.filters.embed import TINY_MODEL
from egocurate.filters.embed_stage import EmbedStage
from egocurate.filters.vectors import decode_vectors, encode_vectors
from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.corpus.dedup import run_dedup
from egocurate.jobs.pipeline import run_pipeline
from egocurate.jobs.registry import build_stage

ROOT = Path(__file__).resolve().parents[2]
SHARED_DATA = ROOT.parent / "shared" / "data"
# The documented setting of the tiny random-init model (benchmarks/dedup.py, part near_dup: pair
# precision 0.99 on the near-duplicate set): centred cosine, eps 0.0005. A random network ranks
# copies above other clips of the same scene only at a very tight threshold.
TINY_EPS = 0.0005
# The `copies` corpus has 4 clips: centring on the mean of 4 vectors scales every distance up, so a
# CRF-34 copy sits at a centred cosine distance of ~1e-3 (it varies with the synthetic scene), while
# the next scene and the other video sit beyond 0.3. A threshold between the two tests the grouping.
COPIES_EPS = 0.01


def load_near_dup_data():
    spec = importlib.util.spec_from_file_location("near_dup_data", ROOT / "benchmarks" / "near_dup_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["near_dup_data"] = module
    spec.loader.exec_module(module)
    return module


def clustered_vectors(n_base: int, dim: int, seed: int) -> np.ndarray:
    """Scenes of similar clips (cosine ~0.75) and 30% of clips with near copies (~0.93-0.995)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(max(4, n_base // 20), dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    base = centers[rng.integers(0, len(centers), n_base)] + rng.normal(size=(n_base, dim)) * 0.6 / np.sqrt(
        dim
    )
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    source = rng.integers(0, n_base, int(0.3 * n_base))
    noise = rng.uniform(0.1, 0.4, (len(source), 1)) / np.sqrt(dim)
    copies = base[source] + rng.normal(size=(len(source), dim)) * noise
    copies /= np.linalg.norm(copies, axis=1, keepdims=True)
    vectors = np.concatenate([base, copies]).astype(np.float32)
    return vectors[rng.permutation(len(vectors))]


def pairs_of(vectors: np.ndarray, settings: DedupSettings) -> tuple[set[tuple[int, int]], object]:
    found: list[np.ndarray] = []
    ids = pa.array([f"c{i:06d}" for i in range(len(vectors))])
    groups = find_groups(
        ArraySource(ids, vectors.astype(np.float16), chunk_rows=1000), settings,
        pair_sink=lambda a, b, s: found.append(np.sort(np.stack([a, b], axis=1), axis=1)), progress=False,
    )  # fmt: skip
    pairs = set(map(tuple, np.concatenate(found).tolist())) if found else set()
    return pairs, groups


def test_clustered_search_recalls_the_exact_pairs() -> None:
    vectors = clustered_vectors(4000, 48, seed=1)
    exact, exact_groups = pairs_of(vectors, DedupSettings(eps=0.05, exact_max=10**9))
    clustered, groups = pairs_of(vectors, DedupSettings(eps=0.05, exact_max=0, cluster_size=64))
    assert exact_groups.method == "exact" and groups.method == "kmeans"
    assert groups.stats["clusters"] > 40
    assert len(exact) > 500
    assert len(clustered & exact) / len(exact) >= 0.98
    stored = vectors.astype(np.float16).astype(np.float32)
    stored /= np.linalg.norm(stored, axis=1, keepdims=True)
    extra = np.array(sorted(clustered - exact), dtype=np.int64).reshape(-1, 2)
    # Every reported pair really is above the threshold (up to float rounding at the boundary).
    assert np.all(np.sum(stored[extra[:, 0]] * stored[extra[:, 1]], axis=1) > 0.95 - 1e-4)
    assert len(extra) <= 0.001 * len(exact)
    # Groups: clips the exact search joins end up together in nearly every case.
    same = [groups.labels[a] == groups.labels[b] for a, b in exact]
    assert np.mean(same) >= 0.99
    # Nearest similarity of a duplicate is its best copy's, found by both searches (bar missed pairs).
    dup_rows = np.unique(np.array(sorted(exact)).ravel())
    agree = np.isclose(
        groups.nearest_similarity[dup_rows], exact_groups.nearest_similarity[dup_rows], atol=2e-3
    )
    assert agree.mean() >= 0.98


def test_the_guaranteed_margin_finds_every_pair() -> None:
    vectors = clustered_vectors(2000, 32, seed=2)
    exact, _ = pairs_of(vectors, DedupSettings(eps=0.05, exact_max=10**9))
    clustered, groups = pairs_of(
        vectors,
        DedupSettings(eps=0.05, exact_max=0, cluster_size=64, margin=None, max_assign=10**6, probe=10**6),
    )
    assert clustered == exact


def test_overlapping_frame_ranges_of_one_video_pair_up() -> None:
    videos = ["a", "a", "a", "b", "a", None]
    starts = np.array([0, 50, 100, 0, 400, 0])
    ends = np.array([100, 150, 200, 100, 500, 100])
    a, b = overlap_pairs(videos, starts, ends, min_overlap=0.5)
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == {(0, 1), (1, 2)}
    a, b = overlap_pairs(videos, starts, ends, min_overlap=0.6)  # 50 of 100 frames is not enough
    assert len(a) == 0


def test_representative_is_longest_then_best_quality_then_smallest_id() -> None:
    ids = pa.array(["d", "c", "b", "a", "e"])
    labels = np.array([0, 0, 0, 0, 1])
    duration = np.array([10.0, 12.0, 12.0, 3.0, 1.0])
    quality = np.array([9.0, 1.0, 5.0, 9.0, 0.0])
    reps = choose_representatives(labels, ids, duration, quality)
    assert reps.tolist() == [2, 2, 2, 2, 4]  # "b": as long as "c", better quality
    reps = choose_representatives(labels, ids, duration, np.zeros(5))
    assert reps.tolist() == [2, 2, 2, 2, 4]  # tie on both: the smaller id "b" over "c"


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """A clip, its re-encode at another CRF, and two other clips (another scene and another video)."""
    near_dup_data = load_near_dup_data()
    from egocurate.testing.videos import make_video

    folder = tmp_path_factory.mktemp("copies")
    make_video(folder / "a.mp4", seed=11, scenes=2, scene_seconds=2.0, fps=15.0, width=320, height=240)
    make_video(folder / "b.mp4", seed=12, scenes=1, scene_seconds=2.0, fps=15.0, width=320, height=240)
    near_dup_data._encode(folder / "a.mp4", folder / "a_crf34.mp4", 0.0, 4.0, "null", 34)
    rows = []
    layout = [("original", "a.mp4", 0, 30), ("reencoded", "a_crf34.mp4", 0, 30),
              ("next-scene", "a.mp4", 30, 60), ("other-video", "b.mp4", 0, 30)]  # fmt: skip
    for name, video, start, end in layout:
        rows.append({
            "clip_id": name, "video_id": video, "uri": str(folder / video), "start_frame": start,
            "end_frame": end, "fps": 15.0, "width": 320, "height": 240, "duration_s": 2.0,
        })  # fmt: skip
    return rows


def test_reencoded_copy_joins_its_originals_group(copies: list[dict]) -> None:
    embedded = EmbedStage(model=TINY_MODEL, pretrained=None).process(pa.Table.from_pylist(copies))
    batch = embedded.append_column("duration_s", pa.array([2.0, 2.0, 2.0, 2.0]))
    out = {r["clip_id"]: r for r in DedupStage(eps=COPIES_EPS, center=True).process(batch).to_pylist()}
    assert out["reencoded"]["group_id"] == out["original"]["group_id"]
    assert out["next-scene"]["group_id"] != out["original"]["group_id"]
    assert out["other-video"]["group_id"] not in (out["original"]["group_id"], out["next-scene"]["group_id"])
    assert sum(r["is_representative"] for r in out.values()) == 3
    assert out["original"]["nearest_clip_id"] == "reencoded"
    assert out["original"]["nearest_similarity"] >= 1 - COPIES_EPS


def test_same_scene_clips_stay_apart_on_the_near_duplicate_set(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    near_dup_data = load_near_dup_data()
    folder = tmp_path_factory.mktemp("near_dups")
    sources = near_dup_data.default_sources(folder / "sources", synthetic=2, real=False)
    if SHARED_DATA.is_dir():
        sources.append(
            near_dup_data.Source(SHARED_DATA / "EGO4D__Ego-Exo4D.github.io__cooking_aria.mp4", "real")
        )
    rows = near_dup_data.build(folder, sources, clip_seconds=1.5, transforms=("reencode", "speed"))
    duplicates, same_scene = near_dup_data.truth_pairs(rows)
    assert len(same_scene) >= 2 * 9 and len(duplicates) == len(sources) * 2 * 3
    embedded = EmbedStage(model=TINY_MODEL, pretrained=None).process(pa.Table.from_pylist(rows))
    out = DedupStage(eps=TINY_EPS, center=True).process(embedded).to_pylist()
    group = {r["clip_id"]: r["group_id"] for r in out}
    merged_same_scene = [p for p in same_scene if group[p[0]] == group[p[1]]]
    assert merged_same_scene == []
    found = [p for p in duplicates if group[p[0]] == group[p[1]]]
    assert len(found) >= len(duplicates) // 2  # the tiny model still finds the near-identical copies


# ------------------------------------------------------------------------------------- catalog driver
def write_catalog(root: Path, vectors: np.ndarray, ids: list[str]) -> Catalog:
    catalog = Catalog(root)
    n = len(ids)
    catalog.append(tables.CLIPS, pa.table({
        "clip_id": ids, "video_id": [f"v{i // 3}" for i in range(n)],
        "start_frame": pa.array([(i % 3) * 100 for i in range(n)], pa.int64()),
        "end_frame": pa.array([(i % 3) * 100 + 90 for i in range(n)], pa.int64()),
        "duration_s": pa.array([3.0 + (i % 2) for i in range(n)]),
    }))  # fmt: skip
    catalog.append(tables.CLIP_EMBEDDINGS, pa.table({
        "clip_id": ids, "video_id": [f"v{i // 3}" for i in range(n)], "model_id": ["m"] * n,
        "dim": pa.array([vectors.shape[1]] * n, pa.int32()), "vector": encode_vectors(vectors),
    }))  # fmt: skip
    return catalog


def test_driver_writes_every_clip_and_a_rerun_computes_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(size=(30, 16))
    vectors = np.concatenate([base, base[:5] + rng.normal(size=(5, 16)) * 0.01])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [f"c{i:03d}" for i in range(35)]
    catalog = write_catalog(tmp_path / "catalog", vectors, ids)
    stage = build_stage("dedup", {"eps": 0.01})
    first = stage.run_corpus(catalog, progress=False)
    assert (first.rows_out, first.commits) == (35, 1)
    dedup = {r["clip_id"]: r for r in catalog.read("clip_dedup").to_pylist()}
    assert len(dedup) == 35
    for i in range(5):  # each copy joined its base
        assert dedup[f"c{30 + i:03d}"]["group_id"] == dedup[f"c{i:03d}"]["group_id"]
    assert sum(r["is_representative"] for r in dedup.values()) == 30
    version = catalog.version("clip_dedup")
    again = stage.run_corpus(catalog, progress=False)
    assert (again.rows_in, again.rows_out, again.rows_skipped) == (0, 0, 35)
    assert catalog.version("clip_dedup") == version
    # A new clip changes the inputs: the groups are recomputed and replaced in one commit.
    late_clip = {"clip_id": ["late"], "video_id": ["v0"], "start_frame": pa.array([10], pa.int64()),
                 "end_frame": pa.array([95], pa.int64()), "duration_s": [2.8]}  # fmt: skip
    catalog.append(tables.CLIPS, pa.table(late_clip))
    third = run_dedup(catalog, stage, progress=False)
    assert third.rows_out == 36 and catalog.version("clip_dedup") == version + 1
    late = {r["clip_id"]: r for r in catalog.read("clip_dedup").to_pylist()}["late"]
    # No embedding, but its frames overlap c000's (same video): the exact overlap test groups them.
    assert late["group_id"] == dedup["c000"]["group_id"] and not late["is_representative"]
    assert late["nearest_similarity"] is None


def test_driver_refuses_mixed_models_without_a_model_id(tmp_path: Path) -> None:
    vectors = np.eye(4, 8, dtype=np.float32)
    catalog = write_catalog(tmp_path / "catalog", vectors, ["a", "b", "c", "d"])
    catalog.append(tables.CLIP_EMBEDDINGS, pa.table({
        "clip_id": ["e"], "video_id": ["v9"], "model_id": ["other"], "dim": pa.array([8], pa.int32()),
        "vector": encode_vectors(np.ones((1, 8), np.float32) / np.sqrt(8)),
    }))  # fmt: skip
    with pytest.raises(ValueError, match="set the dedup `model_id`"):
        run_dedup(catalog, build_stage("dedup", {}), progress=False)
    summary = run_dedup(catalog, build_stage("dedup", {"model_id": "m"}), progress=False)
    assert summary.rows_out == 4  # "e" is another model's vector and has no clip row


def test_quality_embed_and_dedup_run_as_pipeline_stages(copies: list[dict], tmp_path: Path) -> None:
    catalog = Catalog(tmp_path / "catalog")
    videos = {r["video_id"]: r["uri"] for r in copies}
    video_rows = {"video_id": list(videos), "uri": list(videos.values()),
                  "width": pa.array([320] * len(videos), pa.int32()),
                  "height": pa.array([240] * len(videos), pa.int32())}  # fmt: skip
    catalog.append(tables.VIDEOS, pa.table(video_rows))
    clip_columns = ["clip_id", "video_id", "start_frame", "end_frame", "fps", "width", "height", "duration_s"]
    catalog.append(tables.CLIPS, pa.Table.from_pylist([{k: r[k] for k in clip_columns} for r in copies]))
    config = PipelineConfig(catalog=str(tmp_path / "catalog"), progress=False, stages=[
        {"name": "quality", "params": {"batch_size": 2}},
        {"name": "embed", "params": {"model": TINY_MODEL, "pretrained": None}},
        {"name": "dedup", "params": {"eps": COPIES_EPS, "center": True}},
    ])  # fmt: skip
    first = {s.stage: s for s in run_pipeline(config)}
    assert (first["quality"].rows_out, first["embed"].rows_out, first["dedup"].rows_out) == (4, 4, 4)
    groups = {r["clip_id"]: r["group_id"] for r in catalog.read("clip_dedup").to_pylist()}
    assert groups["reencoded"] == groups["original"] != groups["next-scene"]
    versions = {name: catalog.version(name) for name in ("clip_quality", "clip_embeddings", "clip_dedup")}
    second = {s.stage: s for s in run_pipeline(config)}
    assert all(s.rows_in == 0 and s.rows_out == 0 for s in second.values())
    assert {name: catalog.version(name) for name in versions} == versions


def test_embeddings_round_trip_through_the_catalog(tmp_path: Path) -> None:
    vectors = clustered_vectors(20, 8, seed=3)
    catalog = write_catalog(tmp_path / "catalog", vectors, [f"c{i}" for i in range(len(vectors))])
    stored = decode_vectors(catalog.read("clip_embeddings").sort_by("clip_id").column("vector"))
    order = np.argsort([f"c{i}" for i in range(len(vectors))])
    np.testing.assert_allclose(stored, vectors[order], atol=1e-3)


@pytest.mark.gpu
def test_gpu_faiss_finds_the_same_groups() -> None:
    """Needs faiss with GPU support (the `gpu` extra, faiss-gpu-cu12, in place of faiss-cpu)."""
    import faiss

    assert faiss.get_num_gpus() > 0
    vectors = clustered_vectors(3000, 64, seed=4)
    cpu, _ = pairs_of(vectors, DedupSettings(eps=0.05, exact_max=0, cluster_size=64, use_gpu=False))
    gpu, groups = pairs_of(vectors, DedupSettings(eps=0.05, exact_max=0, cluster_size=64))
    assert groups.stats["gpu"] is True  # k-means trained on the GPU
    assert len(cpu & gpu) / len(cpu) >= 0.98
