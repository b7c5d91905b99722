"""Zero-shot labels from CLIP embeddings, and the label stage end to end on a catalog (tiny CLIP)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from egocurate.annotate.embedders import ClipTextEmbedder
from egocurate.annotate.vocabulary import Vocabulary
from egocurate.annotate.zeroshot import ZeroShotLabeler, gerund, task_prompts
from egocurate.catalog import tables
from egocurate.catalog.query import sql
from egocurate.catalog.store import Catalog
from egocurate.jobs.driver import run_stage
from egocurate.jobs.inputs import label_inputs
from egocurate.jobs.registry import build_stage
from egocurate.jobs.runners.local import LocalEngine

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
NAME = "annotate-test-clip"


@pytest.fixture(scope="module")
def clip_config(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("clipcfg") / f"{NAME}.json"
    path.write_text(json.dumps(TINY))
    return str(path)


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    """One text-embedding cache for the module: the vocabulary prompts are encoded once."""
    return str(tmp_path_factory.mktemp("text-cache"))


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.load()


class Counting:
    """A text embedder that counts how many texts it was asked to encode."""

    def __init__(self, inner):
        self.inner, self.model_id, self.cache_key, self.calls = inner, inner.model_id, inner.cache_key, 0
        self.logit_scale = inner.logit_scale

    def encode(self, texts):
        self.calls += len(texts)
        return self.inner.encode(texts)


def test_prompts_are_ensembled_per_entry(vocab):
    assert gerund("pick and place") == "picking and placing" and gerund("type on") == "typing on"
    task = next(t for t in vocab.tasks if t.name == "cut vegetable")
    prompts = task_prompts(task, vocab)
    assert any("cutting the vegetable" in p for p in prompts) and any("cucumber" in p for p in prompts)


def test_zeroshot_top_k_and_text_cache(vocab, clip_config, cache):
    embedder = Counting(ClipTextEmbedder(NAME, None, model_config=clip_config, seed=0))
    labeler = ZeroShotLabeler(vocab, embedder, top_k=3, cache=cache)
    assert embedder.calls > len(vocab.tasks) and list(Path(cache).rglob("*.npy"))
    # The text side is cached per (model, vocabulary, templates): a second labeler encodes nothing.
    again = Counting(embedder.inner)
    ZeroShotLabeler(vocab, again, top_k=3, cache=cache)
    assert again.calls == 0
    names = [t.name for t in vocab.tasks]
    planted = np.stack(
        [labeler.task_vectors[names.index("pour liquid")], labeler.task_vectors[names.index("open drawer")]]
    )
    results = labeler.label(planted.astype(np.float16))  # stored embeddings are float16
    assert [r.tasks[0] for r in results] == ["pour liquid", "open drawer"]
    for r in results:
        assert len(r.tasks) == len(r.scenes) == len(r.objects) == 3
        assert r.task_scores == sorted(r.task_scores, reverse=True) and 0 < r.task_scores[0] <= 1
    with pytest.raises(ValueError, match="dimension"):
        labeler.label(np.zeros((1, 7), np.float32))


def _image_embeddings(clip_config: str, count: int) -> np.ndarray:
    """Real image embeddings of random frames from the tiny model's vision tower (same seed as the text)."""
    import open_clip
    import torch

    open_clip.add_model_config(clip_config)
    torch.manual_seed(0)
    model = open_clip.create_model(NAME, pretrained=None).eval()
    images = torch.rand(count, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        vectors = model.encode_image(images).numpy()
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _catalog(root, clip_config: str, planted: np.ndarray) -> Catalog:
    cat = Catalog(root)
    cat.append(
        tables.VIDEOS,
        pa.table(
            {
                "video_id": ["v1", "v2"],
                "uri": ["/x/v1.mp4", "/x/v2.mp4"],
                "dataset": ["egodex", "ego4d"],
                "task_text": ["whisking eggs in a bowl in the kitchen", None],
                "width": [640, 640],
                "height": [480, 480],
            }
        ),
    )
    cat.append(
        tables.CLIPS,
        pa.table(
            {
                "clip_id": ["c1", "c2", "c3", "c4", "c5"],
                "video_id": ["v1", "v2", "v2", "v2", "v1"],
                "start_frame": [0, 0, 30, 60, 30],
                "end_frame": [30, 30, 60, 90, 60],
                "duration_s": [2.0] * 5,
            }
        ),
    )
    images = _image_embeddings(clip_config, 2)
    vectors = [planted, images[0], images[1], images[1]]
    cat.append(
        tables.CLIP_EMBEDDINGS,
        pa.table(
            {
                "clip_id": ["c2", "c3", "c4", "c5"],
                "video_id": ["v2", "v2", "v2", "v1"],
                "model_id": [
                    f"{NAME}:random-init-seed0",
                    f"{NAME}:random-init-seed0",
                    "ViT-L-14:openai",
                    f"{NAME}:random-init-seed0",
                ],
                "dim": [32] * 4,
                "vector": pa.array([v.astype("<f2").tobytes() for v in vectors], pa.binary()),
            }
        ),
    )
    return cat


def test_label_stage_end_to_end(vocab, clip_config, cache, tmp_path):
    params = {
        "text_embedder": f"clip:{NAME}",
        "clip_model": NAME,
        "clip_pretrained": None,
        "clip_config": clip_config,
        "cache_dir": cache,
        "top_k": 4,
    }
    stage = build_stage("labels", params)
    names = [t.name for t in vocab.tasks]
    stage.setup()
    planted = stage.zeroshot.task_vectors[names.index("fold clothing")]
    cat = _catalog(tmp_path / "catalog", clip_config, planted)
    rows = label_inputs(cat)
    assert rows.column("clip_id").to_pylist() == ["c1", "c2", "c3", "c4", "c5"]
    summary = run_stage(stage, rows, cat, LocalEngine(), progress=False)
    assert (summary.rows_out, summary.quarantined) == (4, 1)
    labels = {r["clip_id"]: r for r in cat.read("clip_labels").to_pylist()}
    # c1: manifest text, which names its scene; c5: same text, scene from its pixels is not needed.
    assert labels["c1"]["label_source"] == "given" and labels["c1"]["task"] == "stir egg"
    assert labels["c1"]["scene"] == "kitchen" and labels["c1"]["scene_source"] == "given"
    assert labels["c1"]["text"] == "whisking eggs in a bowl in the kitchen"
    # c2: no text, an embedding planted on "fold clothing": zero-shot finds it.
    assert labels["c2"]["label_source"] == "zeroshot" and labels["c2"]["task"] == "fold clothing"
    assert labels["c2"]["verb"] == "fold" and len(labels["c2"]["task_topk"]) == 4
    assert labels["c3"]["label_source"] == "zeroshot" and len(labels["c3"]["objects"]) == 4
    # c4: an embedding of another model is not scored with our text tower.
    bad = cat.read("quarantine").to_pylist()
    assert [(r["key"], r["error_kind"]) for r in bad] == [("c4", "embedding_mismatch")]
    # Labels are in the clip view, and a rerun does nothing.
    view = sql(
        cat, "SELECT clip_id, task, label_source FROM clip_view WHERE task IS NOT NULL ORDER BY clip_id"
    )
    assert view.column("clip_id").to_pylist() == ["c1", "c2", "c3", "c5"]
    again = run_stage(build_stage("labels", params), label_inputs(cat), cat, LocalEngine(), progress=False)
    assert (again.rows_in, again.rows_skipped) == (0, 5)


def test_text_without_scene_takes_the_scene_from_pixels(clip_config, cache):
    # A random text tower finds every scene "similar": only scenes the text names count here.
    params = {
        "text_embedder": f"clip:{NAME}",
        "clip_model": NAME,
        "clip_pretrained": None,
        "clip_config": clip_config,
        "cache_dir": cache,
        "min_scene_similarity": 1.0,
    }
    stage = build_stage("labels", params)
    stage.setup()
    scenes = list(stage.vocab.scenes)
    vector = stage.zeroshot.scene_vectors[scenes.index("garage")].astype("<f2")
    batch = pa.table(
        {
            "clip_id": ["a"],
            "video_id": ["v"],
            "task_text": ["tighten the bolt"],
            "caption": [None],
            "model_id": [f"{NAME}:random-init-seed0"],
            "vector": pa.array([vector.tobytes()], pa.binary()),
        }
    )
    row = stage.process(batch).to_pylist()[0]
    assert (row["task"], row["label_source"]) == ("screw bolt", "given")
    assert (row["scene"], row["scene_source"]) == ("garage", "zeroshot")
