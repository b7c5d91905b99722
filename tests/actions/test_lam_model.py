"""The LAM reproduces DreamDojo's released architecture: fixture parity, safe checkpoint loading."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from egocurate.actions.lam import (
    CheckpointError,
    LAMConfig,
    LatentActionModel,
    infer_config,
    num_parameters,
    patchify,
    unpatchify,
)

FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "dreamdojo_lam"
needs_fixture = pytest.mark.usefixtures("lam_fixture_dir")


@pytest.fixture(scope="module")
def lam_fixture_dir() -> Path:
    """DreamDojo's tiny LAM fixture (../shared/fixtures); a machine without it fails, never skips."""
    if not FIXTURE.is_dir():
        pytest.fail(f"{FIXTURE} is missing: the LAM parity tests need DreamDojo's fixture")
    return FIXTURE


@pytest.fixture(scope="module")
def fixture_io() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "lam_tiny.io.safetensors"))


@pytest.fixture(scope="module")
def fixture_state() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "lam_tiny.weights.safetensors"))


def assert_matches(model: LatentActionModel, io: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    with torch.no_grad():
        out = model(io["videos"])
    for key in ("z_mu", "z_logvar", "recon"):
        got = out[key].reshape(io[key].shape)
        err = (got - io[key]).abs().max().item()
        assert err <= atol, f"{key}: max abs error {err:.3g} > {atol}"


@needs_fixture
def test_fixture_parity_to_1e5(fixture_io):
    model = LatentActionModel.from_checkpoint(FIXTURE / "lam_tiny.weights.safetensors")
    assert not model.training
    assert num_parameters(model) == json.loads((FIXTURE / "lam_tiny.json").read_text())["num_params"]
    assert_matches(model, fixture_io)


@needs_fixture
def test_config_inferred_from_weights_matches_fixture_config(fixture_state):
    expected = json.loads((FIXTURE / "lam_tiny.json").read_text())["config"]
    assert infer_config(fixture_state) == LAMConfig.from_dict(expected)


@needs_fixture
def test_lightning_checkpoint_loads_with_weights_only(tmp_path, fixture_state, fixture_io):
    ckpt = tmp_path / "LAM_tiny.ckpt"
    torch.save(
        {
            "state_dict": dict(fixture_state),
            "epoch": 3,
            "global_step": 400_000,
            "hyper_parameters": {"model_dim": 64, "lr": 1e-4},
            "optimizer_states": [],
        },
        ckpt,
    )
    assert_matches(LatentActionModel.from_checkpoint(ckpt), fixture_io)


@needs_fixture
def test_unsafe_checkpoint_needs_explicit_trust(tmp_path, fixture_state, fixture_io):
    ckpt = tmp_path / "LAM_unsafe.ckpt"
    torch.save({"state_dict": dict(fixture_state), "hparams": argparse.Namespace(lr=1e-4)}, ckpt)
    with pytest.raises(CheckpointError, match="--trust-checkpoint"):
        LatentActionModel.from_checkpoint(ckpt)
    assert_matches(LatentActionModel.from_checkpoint(ckpt, trust_checkpoint=True), fixture_io)


@needs_fixture
def test_safetensors_round_trip_keeps_outputs(tmp_path, fixture_io):
    model = LatentActionModel.from_checkpoint(FIXTURE / "lam_tiny.weights.safetensors")
    path = tmp_path / "copy.safetensors"
    model.save_safetensors(path)
    assert all(k.startswith("lam.") for k in load_file(str(path)))
    reloaded = LatentActionModel.from_checkpoint(path)
    assert reloaded.config == model.config
    with torch.no_grad():
        assert torch.equal(reloaded(fixture_io["videos"])["recon"], model(fixture_io["videos"])["recon"])


def test_wrong_weights_are_refused(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"lam.fc.weight": torch.zeros(64, 64)}, str(path))
    with pytest.raises(CheckpointError, match="not a latent action model"):
        LatentActionModel.from_checkpoint(path)
    model = LatentActionModel(LAMConfig(model_dim=32, enc_blocks=1, dec_blocks=1, num_heads=2))
    state = {f"lam.{k}": v for k, v in model.state_dict().items() if "decoder.out" not in k}
    with pytest.raises(CheckpointError, match="missing"):
        LatentActionModel.from_state_dict(state)


def test_full_size_matches_dreamdojo_scale():
    with torch.device("meta"):
        model = LatentActionModel(LAMConfig())
    params = num_parameters(model)
    assert 650e6 < params < 750e6, params  # "about 700M parameters"


def test_patchify_is_row_major_and_invertible():
    videos = torch.rand(2, 2, 35, 50, 3)  # cropped down to 32x48
    patches = patchify(videos, 16)
    assert patches.shape == (2, 2, 6, 16 * 16 * 3)
    # patch 1 is the second patch of the first row; flattened as (row, col, channel)
    assert torch.equal(patches[0, 0, 1].view(16, 16, 3), videos[0, 0, :16, 16:32])
    assert torch.equal(unpatchify(patches, 16, 35, 50), videos[:, :, :32, :48])


def test_longer_clips_give_one_latent_per_transition():
    torch.manual_seed(0)
    model = LatentActionModel(LAMConfig(model_dim=32, enc_blocks=1, dec_blocks=1, num_heads=2)).eval()
    videos = torch.rand(1, 4, 32, 48, 3)
    with torch.no_grad():
        out = model(videos)
    assert out["z_mu"].shape == (1, 3, 32)
    assert out["recon"].shape == (1, 3, 32, 48, 3)
    assert float(out["recon"].min()) >= 0.0 and float(out["recon"].max()) <= 1.0


@pytest.mark.gpu
@needs_fixture
def test_fixture_parity_on_gpu_and_bf16_stays_close(fixture_io):
    model = LatentActionModel.from_checkpoint(FIXTURE / "lam_tiny.weights.safetensors", map_location="cuda")
    cuda_io = {k: v.cuda() for k, v in fixture_io.items()}
    assert_matches(model, cuda_io)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        z_mu = model(cuda_io["videos"])["z_mu"].float().reshape(cuda_io["z_mu"].shape)
    assert (z_mu - cuda_io["z_mu"]).abs().max().item() < 0.1


@pytest.mark.gpu
def test_full_size_lam_encodes_a_batch_on_gpu():
    model = LatentActionModel(LAMConfig()).cuda().eval()
    pairs = torch.rand(8, 2, 240, 320, 3, device="cuda")
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16):
        z_mu, z_logvar = model.encode_pairs(pairs)
    assert z_mu.shape == (8, 32) and torch.isfinite(z_mu.float()).all()
