"""Training a LAM on our clips: the loss, safetensors checkpoints with resume, the catalog CLI."""

from __future__ import annotations

import json
from itertools import repeat
from pathlib import Path

import pyarrow as pa
import pytest
import torch
import yaml
from typer.testing import CliRunner

from egocurate.actions.lam import LatentActionModel
from egocurate.actions.train import ClipPairStream, TrainConfig, checkpoint_paths, lam_loss, train
from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.cli.lam import app
from egocurate.testing.videos import make_video

TINY = {"model_dim": 32, "enc_blocks": 1, "dec_blocks": 1, "num_heads": 2, "patch_size": 16}


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("train_videos")
    truth = make_video(out / "v.mp4", seed=7, scenes=2, scene_seconds=1.0, fps=15, width=320, height=240)
    return [
        {
            "clip_id": f"c{k}",
            "video_id": "v",
            "uri": truth["uri"],
            "start_frame": s["start_frame"],
            "end_frame": s["end_frame"],
            "fps": 15.0,
            "width": 320,
            "height": 240,
        }
        for k, s in enumerate(truth["scenes"])
    ]


def config(tmp_path: Path, **kwargs) -> TrainConfig:
    base = dict(
        lam=TINY,
        height=32,
        width=48,
        batch_size=4,
        num_workers=0,
        pairs_per_clip=4,
        shuffle_buffer=8,
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_every=2,
        warmup_steps=1,
        log_every=1,
    )
    return TrainConfig(**{**base, **kwargs})


def test_kl_is_zero_at_the_prior_and_loss_adds_beta_kl():
    torch.manual_seed(0)
    model = LatentActionModel(TrainConfig(lam=TINY).lam_config())
    videos = torch.rand(2, 2, 32, 48, 3)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.zero_()  # mu = 0, logvar = 0: q is the prior
        parts = lam_loss(model.eval(), videos, beta=1.0)
    assert float(parts["kl"]) == pytest.approx(0.0, abs=1e-7)
    assert float(parts["loss"]) == pytest.approx(float(parts["mse"]))


def test_stream_yields_pairs_at_random_strides(rows, tmp_path):
    stream = ClipPairStream(rows, config(tmp_path, stride_min=1, stride_max=4))
    pairs = [p for _, p in zip(range(12), iter(stream), strict=False)]
    assert all(p.shape == (2, 32, 48, 3) and p.dtype == torch.uint8 for p in pairs)
    assert any(not torch.equal(p[0], p[1]) for p in pairs)


def test_training_reduces_reconstruction_error(rows, tmp_path):
    batch = next(iter(torch.utils.data.DataLoader(ClipPairStream(rows, config(tmp_path)), batch_size=8)))
    cfg = config(tmp_path, lr=3e-3, max_steps=40, checkpoint_every=0, batch_size=8)
    _, result = train(rows, cfg, progress=False, batches=repeat(batch))
    assert result.history[-1]["mse"] < 0.5 * result.history[0]["mse"], result.history[::10]


def test_checkpoints_are_safetensors_and_training_resumes(rows, tmp_path):
    model, first = train(rows, config(tmp_path, max_steps=4), progress=False)
    assert [step for step, _ in checkpoint_paths(tmp_path / "ckpt")] == [2, 4]
    assert first.checkpoint.endswith("lam-step00000004.safetensors")
    # the checkpoint is a DreamDojo-style LAM file: the labelling stage loads it as is
    loaded = LatentActionModel.from_checkpoint(first.checkpoint)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    resumed, second = train(rows, config(tmp_path, max_steps=6), progress=False)
    assert second.steps == 6 and [h["step"] for h in second.history] == [5, 6]
    assert [step for step, _ in checkpoint_paths(tmp_path / "ckpt")] == [2, 4, 6]
    meta = json.loads((tmp_path / "ckpt" / "lam-step00000006.json").read_text())
    assert meta["step"] == 6 and meta["param_groups"][0]["lr"] == pytest.approx(1e-4)


def test_cli_trains_from_the_catalog(rows, tmp_path):
    catalog = Catalog(tmp_path / "catalog")
    catalog.append(
        tables.VIDEOS,
        pa.Table.from_pylist([{"video_id": "v", "uri": rows[0]["uri"], "width": 320, "height": 240}]),
    )
    catalog.append(
        tables.CLIPS,
        pa.Table.from_pylist(
            [{k: r[k] for k in ("clip_id", "video_id", "start_frame", "end_frame", "fps")} for r in rows]
        ),
    )
    cfg = tmp_path / "lam.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "lam": TINY,
                "height": 32,
                "width": 48,
                "batch_size": 2,
                "num_workers": 0,
                "max_steps": 2,
                "checkpoint_every": 1,
                "pairs_per_clip": 2,
                "checkpoint_dir": str(tmp_path / "cli_ckpt"),
            }
        )
    )
    result = CliRunner().invoke(app, ["train", "--catalog", str(catalog.root), "--config", str(cfg)])
    assert result.exit_code == 0, result.output
    assert [s for s, _ in checkpoint_paths(tmp_path / "cli_ckpt")] == [1, 2]
    only = CliRunner().invoke(
        app,
        [
            "train",
            "--catalog",
            str(catalog.root),
            "--config",
            str(cfg),
            "--max-steps",
            "3",
            "--where",
            "clip_id = 'c0'",
        ],
    )
    assert only.exit_code == 0 and "training on 1 clips" in only.output, only.output
    assert [s for s, _ in checkpoint_paths(tmp_path / "cli_ckpt")] == [1, 2, 3]
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 3\n")
    result = CliRunner().invoke(app, ["train", "--catalog", str(catalog.root), "--config", str(bad)])
    assert result.exit_code == 2 and "learning_rate" in result.output
