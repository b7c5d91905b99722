"""The caption stage with a tiny random image-text-to-text model (Llava architecture), fully offline."""

from __future__ import annotations

import pyarrow as pa
import pytest

from egocurate.annotate.captioner_stage import CaptionStage
from egocurate.annotate.embedders import minilm_path
from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.jobs.driver import run_stage
from egocurate.jobs.inputs import clips, label_inputs
from egocurate.jobs.registry import build_stage
from egocurate.jobs.runners.local import LocalEngine
from egocurate.testing.videos import make_video

CHAT = (
    "{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %} answer:{% endif %}"
)


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory) -> str:
    """A random-init Llava with a CLIP vision tower and a Llama text model, saved like a hub model."""
    import torch
    from transformers import (
        AutoTokenizer,
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    out = tmp_path_factory.mktemp("tiny-vlm")
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())  # a WordPiece vocabulary shipped offline
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=16,
        chat_template=CHAT,
        num_additional_image_tokens=1,
        vision_feature_select_strategy="default",
    )
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,
        projection_dim=32,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        vision_feature_layer=-1,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
    )
    torch.manual_seed(0)
    LlavaForConditionalGeneration(config).save_pretrained(out)
    processor.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    root = tmp_path_factory.mktemp("cap")
    video = root / "v.mp4"
    make_video(video, seed=3, scenes=1, scene_seconds=1.0, fps=10.0, width=320, height=240)
    cat = Catalog(root / "catalog")
    cat.append(
        tables.VIDEOS,
        pa.table(
            {
                "video_id": ["v1", "v2"],
                "uri": [str(video), str(root / "missing.mp4")],
                "width": [320, 320],
                "height": [240, 240],
            }
        ),
    )
    cat.append(
        tables.CLIPS,
        pa.table(
            {
                "clip_id": ["c1", "c2", "c3"],
                "video_id": ["v1", "v1", "v2"],
                "start_frame": [0, 4, 0],
                "end_frame": [5, 10, 5],
                "duration_s": [0.5, 0.6, 0.5],
                "width": [320] * 3,
                "height": [240] * 3,
            }
        ),
    )
    return cat


def test_caption_stage_writes_captions_and_quarantines_unreadable_clips(tiny_vlm, catalog):
    stage = build_stage("captions", {"model": tiny_vlm, "frames": 2, "short_side": 64, "max_new_tokens": 6})
    assert isinstance(stage, CaptionStage)
    summary = run_stage(stage, clips(catalog), catalog, LocalEngine(), progress=False)
    assert (summary.rows_out, summary.quarantined) == (2, 1)
    rows = {r["clip_id"]: r for r in catalog.read("clip_captions").to_pylist()}
    assert set(rows) == {"c1", "c2"}
    for row in rows.values():
        assert isinstance(row["caption"], str) and row["caption"].strip()
        assert row["caption_model"] == tiny_vlm and row["frames"] == 2
    bad = catalog.read("quarantine").to_pylist()
    assert [(r["key"], r["error_kind"], r["stage"]) for r in bad] == [("c3", "decode_error", "captions")]


def test_labels_consume_captions_in_place_of_manifest_text(tiny_vlm, catalog, tmp_path):
    # Replace the random model's captions with readable ones, as a real VLM would write.
    catalog.upsert(
        tables.CLIP_CAPTIONS,
        pa.table(
            {
                "clip_id": ["c1", "c2"],
                "video_id": ["v1", "v1"],
                "caption": ["a person slices bread on a board", ""],
            }
        ),
    )
    rows = label_inputs(catalog)
    assert rows.column("clip_id").to_pylist() == ["c1"]  # c2's caption is empty, c3 has nothing
    stage = build_stage(
        "labels",
        {"sources": ["caption"], "text_embedder": "none", "cache_dir": str(tmp_path)},
    )
    out = stage.process(rows).to_pylist()
    assert [(r["clip_id"], r["task"], r["label_source"], r["caption"]) for r in out] == [
        ("c1", "cut bread", "caption", "a person slices bread on a board")
    ]


@pytest.mark.gpu
def test_caption_and_zeroshot_text_tower_on_cuda(tiny_vlm, catalog):
    import numpy as np
    import torch

    from egocurate.annotate.embedders import ClipTextEmbedder

    assert torch.cuda.is_available()
    stage = CaptionStage(tiny_vlm, frames=2, short_side=64, max_new_tokens=6, device="cuda", dtype="bfloat16")
    out = stage.process(clips(catalog).slice(0, 2)).to_pylist()
    assert [r["clip_id"] for r in out] == ["c1", "c2"] and all(r["caption"].strip() for r in out)
    assert next(stage.model.parameters()).dtype == torch.bfloat16
    texts = ["a photo of hands cutting a cucumber.", "a first-person view inside a garage."]
    on_gpu = ClipTextEmbedder("egocurate-tiny-clip", None, device="cuda").encode(texts)
    on_cpu = ClipTextEmbedder("egocurate-tiny-clip", None, device="cpu").encode(texts)
    assert np.allclose(on_gpu, on_cpu, atol=2e-3)
