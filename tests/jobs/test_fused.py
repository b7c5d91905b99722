"""Shared decode: quality, embed and latent actions in one pass decode each clip once, and each
stage still owns its table, its ledger and its resumption."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc
import pytest

from egocurate.catalog.store import Catalog
from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline
from egocurate.media import decode

LAM = {"lam_config": {"model_dim": 32, "enc_blocks": 1, "dec_blocks": 1, "num_heads": 2}, "stride": 2}
CLIP_STAGES = [
    {"name": "quality"},
    {"name": "embed", "params": {"model": "egocurate-tiny-clip", "pretrained": None}},
    {"name": "latent_actions", "params": LAM},
]
TABLES = ("clip_quality", "clip_embeddings", "clip_latents")


def _config(root, sources, stages, shared: bool) -> PipelineConfig:
    return PipelineConfig(
        catalog=str(root),
        sources=sources,
        stages=stages,
        shared_decode=shared,
        progress=False,
        commit_every=2,
    )


@pytest.fixture(scope="module")
def clips_catalog(tmp_path_factory, sample_videos):
    """Videos ingested and cut into clips once; each test copies nothing and reads it through its own run."""
    root = tmp_path_factory.mktemp("fused") / "base"
    stages = [
        {"name": "ingest"},
        {
            "name": "shots",
            "params": {"detector": "fixed", "detector_params": {"window_s": 2}, "min_clip_s": 1.0},
        },
    ]
    run_pipeline(_config(root, [str(p) for p in sample_videos], stages, shared=False))
    assert Catalog(root).count("clips") >= 6  # 3 videos of 4 s in 2 s windows
    return root


def _fresh(clips_catalog, tmp_path, name: str) -> Catalog:
    """A copy of the clips catalog to run clip stages on."""
    import shutil

    shutil.copytree(clips_catalog, tmp_path / name)
    return Catalog(tmp_path / name)


def _counting_decodes(monkeypatch) -> dict[str, int]:
    """Count decoder calls per file (every decode path goes through media.decode._get)."""
    calls: dict[str, int] = {}
    real = decode._get

    def counted(uri, *args, **kwargs):
        calls[uri] = calls.get(uri, 0) + 1
        return real(uri, *args, **kwargs)

    monkeypatch.setattr(decode, "_get", counted)
    return calls


def test_one_pass_decodes_each_clip_once_and_fills_every_table(clips_catalog, tmp_path, monkeypatch):
    separate_cat = _fresh(clips_catalog, tmp_path, "separate")
    shared_cat = _fresh(clips_catalog, tmp_path, "shared")
    clips = separate_cat.count("clips")
    calls = _counting_decodes(monkeypatch)
    run_pipeline(_config(separate_cat.root, [], CLIP_STAGES, shared=False))
    separate_calls = sum(calls.values())
    calls.clear()
    summaries = run_pipeline(_config(shared_cat.root, [], CLIP_STAGES, shared=True))
    shared_calls = sum(calls.values())
    assert [s.stage for s in summaries] == ["quality", "embed", "latent_actions"]
    assert all(s.engine == "local (fused)" and s.rows_out == clips for s in summaries)
    assert separate_calls == 3 * clips  # each stage decodes each clip
    assert shared_calls == clips  # one decode per clip for all three
    for name in TABLES:
        a = shared_cat.read(name).sort_by("clip_id")
        b = separate_cat.read(name).sort_by("clip_id")
        assert a.column("clip_id").to_pylist() == b.column("clip_id").to_pylist()
        assert len(set(a.column("clip_id").to_pylist())) == a.num_rows
    ledger = shared_cat.read("_ledger")
    for stage in ("quality", "embed", "latent_actions"):
        keys = ledger.filter(pc.equal(ledger.column("stage"), stage)).column("key").to_pylist()
        assert sorted(keys) == sorted(shared_cat.read("clips").column("clip_id").to_pylist())
    # Each stage gets the frames it decodes alone, so every value it writes is the same to the bit.
    values = {
        "clip_quality": ("motion", "blur", "brightness", "text_overlay"),
        "clip_embeddings": ("vector",),
        "clip_latents": ("latent_actions", "latent_logvar"),
    }
    for name, columns in values.items():
        a, b = shared_cat.read(name).sort_by("clip_id"), separate_cat.read(name).sort_by("clip_id")
        for column in columns:
            assert a.column(column).to_pylist() == b.column(column).to_pylist(), (name, column)
    blur = [c.read("clip_quality").sort_by("clip_id").column("blur") for c in (shared_cat, separate_cat)]
    assert np.array_equal(blur[0].to_numpy(), blur[1].to_numpy())


def test_each_member_resumes_on_its_own(clips_catalog, tmp_path, monkeypatch):
    cat = _fresh(clips_catalog, tmp_path, "resume")
    clips = cat.read("clips").column("clip_id").to_pylist()
    # Quality alone first (a single stage runs unfused), then the three together.
    run_pipeline(_config(cat.root, [], CLIP_STAGES[:1], shared=True))
    calls = _counting_decodes(monkeypatch)
    summaries = run_pipeline(_config(cat.root, [], CLIP_STAGES, shared=True))
    by_stage = {s.stage: s for s in summaries}
    assert by_stage["quality"].rows_in == 0 and by_stage["quality"].rows_skipped == len(clips)
    assert by_stage["embed"].rows_out == len(clips) and by_stage["latent_actions"].rows_out == len(clips)
    assert sum(calls.values()) == len(clips)  # embed and latents still share one decode
    assert cat.count("clip_quality") == len(clips)  # nothing doubled
    again = run_pipeline(_config(cat.root, [], CLIP_STAGES, shared=True))
    assert all(s.rows_in == 0 for s in again)  # a rerun does nothing
