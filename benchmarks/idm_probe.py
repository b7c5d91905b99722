"""Does the IDM recover a robot's true actions? And how do IDM and LAM labels compare on one table?

1. Generate synthetic robot episodes with known actions (`egocurate.testing.robot_videos`: an arm
   with a gripper moved by (ee_dx, ee_dy) cm per frame plus a gripper open/close bit, camera jitter),
   encode them as MP4 and write their `videos`, `clips` and `episode_actions` rows to catalogs
   (train episodes in one, held-out episodes in another).
2. Train the IDM from the train catalog (`jobs.inputs.idm_episodes` → `idm_train.train_idm`, the
   path of `egocurate idm train`) within a CPU budget (`--budget-cpu-s`, CPU seconds of this
   process, at most 900).
3. Label the held-out clips through the real `idm_actions` stage (`all=True`, float16 storage,
   de-normalised) and score per transition: R² per continuous dim (goal ≥ 0.9 each) and gripper
   accuracy (goal ≥ 0.95). Beside it: a copy-last-action baseline (each chunk a_t … a_t+H−1 predicted
   as the true a_t−1) and the same stage with a random-init IDM (labelled ``random_init``).
4. LAM on the same footage (as `lam_probe.py`): train a small LAM on the train clips within
   `--lam-budget-cpu-s`, label every clip with the `latent_actions` stage, fit a linear probe
   z_mu → action on train transitions and score it on held-out ones (trained and random-init).

    .venv/bin/python benchmarks/idm_probe.py            # full: IDM (<= 900 CPU-s) + 200 CPU-s LAM
    .venv/bin/python benchmarks/idm_probe.py --tiny     # seconds; run by tests/benchmarks
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lam_probe import latents, r2_scores  # noqa: E402

from egocurate.actions.arrays import unpack_f16  # noqa: E402
from egocurate.actions.idm import IDMConfig, InverseDynamicsModel, chunk_starts, load_idm  # noqa: E402
from egocurate.actions.idm_stage import IDMActionStage  # noqa: E402
from egocurate.actions.idm_train import IDMTrainConfig, train_idm  # noqa: E402
from egocurate.actions.lam_stage import LatentActionStage  # noqa: E402
from egocurate.actions.train import TrainConfig, train  # noqa: E402
from egocurate.catalog.store import Catalog  # noqa: E402
from egocurate.jobs.inputs import clips, idm_episodes, idm_inputs  # noqa: E402
from egocurate.testing.robot_videos import ACTION_NAMES, write_robot_catalog  # noqa: E402

CONTINUOUS = (0, 1)
GRIPPER = 2


def emit(**record) -> None:
    print(json.dumps({"benchmark": "idm_probe", **record}), flush=True)


def r2(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    return 1.0 - ((pred - true) ** 2).sum(0) / ((true - true.mean(0)) ** 2).sum(0)


def score(pred: np.ndarray, true: np.ndarray, **fields) -> dict:
    """R² per continuous dim and gripper accuracy (prediction thresholded at 0.5) of (N, 3) actions."""
    values = r2(pred[:, CONTINUOUS], true[:, CONTINUOUS])
    accuracy = float(((pred[:, GRIPPER] > 0.5) == (true[:, GRIPPER] > 0.5)).mean())
    return {
        **fields,
        "r2": {ACTION_NAMES[d]: round(float(v), 4) for d, v in zip(CONTINUOUS, values, strict=True)},
        "gripper_accuracy": round(accuracy, 4),
        "transitions": len(true),
        "meets_goal": bool((values >= 0.9).all() and accuracy >= 0.95),
    }


def label_with_idm(checkpoint: Path, inputs: pa.Table) -> dict[str, np.ndarray]:
    stage = IDMActionStage(checkpoint=str(checkpoint), all=True, device="cpu")
    table = stage.process(stage.select_inputs(inputs)).to_pylist()
    bad = [r for r in table if r["_error_kind"]]
    if bad:
        raise RuntimeError(f"idm_actions failed on {len(bad)} clips: {bad[0]['_error_message']}")
    return {r["clip_id"]: (unpack_f16(r["actions"], r["actions_shape"]), r["real_action_mae"]) for r in table}


def truth_of(inputs: pa.Table) -> dict[str, np.ndarray]:
    out = {}
    for row in inputs.to_pylist():
        actions = np.frombuffer(row["real_actions"], "<f4").reshape(row["real_actions_shape"])
        out[row["clip_id"]] = actions[row["start_frame"] : row["end_frame"] - 1]
    return out


def stack(arrays: dict[str, np.ndarray], keys: list[str]) -> np.ndarray:
    return np.concatenate([arrays[k] for k in keys])


def linear_probe(z_fit: np.ndarray, y_fit: np.ndarray, z_eval: np.ndarray) -> np.ndarray:
    """Least-squares linear map (with bias) from standardised latents to actions, as lam_probe.py fits."""
    mean, std = z_fit.mean(0), z_fit.std(0) + 1e-6
    design = lambda z: np.hstack([(z - mean) / std, np.ones((len(z), 1))])  # noqa: E731
    weights = np.linalg.lstsq(design(z_fit), y_fit, rcond=None)[0]
    return design(z_eval) @ weights


def copy_last(true: np.ndarray, horizon: int, fallback: np.ndarray) -> np.ndarray:
    """Each chunk a_t … a_t+H−1 predicted as the last action before it (the mean for the first)."""
    pred = np.zeros_like(true)
    for start in chunk_starts(len(true) + 1, horizon):
        pred[start : start + horizon] = true[start - 1] if start else fallback
    return pred


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default="/tmp/egocurate_idm_probe")
    parser.add_argument("--train-episodes", type=int, default=160)
    parser.add_argument("--test-episodes", type=int, default=12)
    parser.add_argument("--frames", type=int, default=80, help="frames per episode")
    parser.add_argument("--size", type=int, default=128, help="rendered frame size (square)")
    parser.add_argument("--fps", type=float, default=10.0)
    parser.add_argument("--jitter", type=float, default=1.0, help="camera shake, px/frame (std)")
    parser.add_argument("--horizon", type=int, default=2)
    parser.add_argument("--hw", type=int, default=64, help="IDM input size (square)")
    parser.add_argument("--widths", default="16,32,64,64")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--max-steps", type=int, default=4500, help="also the cosine schedule's length")
    parser.add_argument("--budget-cpu-s", type=float, default=900.0, help="IDM training CPU budget (<= 900)")
    parser.add_argument("--lam-budget-cpu-s", type=float, default=200.0, help="LAM training CPU budget")
    parser.add_argument("--lam-max-steps", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="a few small episodes and steps (seconds)")
    args = parser.parse_args()
    if args.budget_cpu_s > 900:
        parser.error("the probe's CPU budget is at most 15 minutes (--budget-cpu-s <= 900)")
    if args.tiny:
        args.train_episodes, args.test_episodes, args.frames, args.size, args.hw = 3, 2, 16, 64, 32
        args.widths, args.max_steps, args.lam_max_steps, args.batch = "8,16", 20, 5, 8
    torch.set_num_threads(args.threads)
    name = f"{args.train_episodes}+{args.test_episodes}x{args.frames}-{args.size}px-j{args.jitter:g}"
    root = Path(args.data_dir) / f"{name}-{int(time.time())}"
    t0 = time.perf_counter()
    train_seeds = list(range(1000, 1000 + args.train_episodes))
    test_seeds = list(range(9000, 9000 + args.test_episodes))
    kw = {"num_frames": args.frames, "size": args.size, "fps": args.fps, "jitter": args.jitter}
    train_cat, _ = write_robot_catalog(root / "train", train_seeds, **kw)
    test_cat, _ = write_robot_catalog(root / "test", test_seeds, **kw)
    emit(metric="data", train_episodes=len(train_seeds), test_episodes=len(test_seeds), frames=args.frames,
         size=args.size, jitter_px=args.jitter, seconds=round(time.perf_counter() - t0, 1))  # fmt: skip

    # ------------------------------------------------------------------ IDM
    widths = [int(w) for w in args.widths.split(",")]
    idm = {"horizon": args.horizon, "height": args.hw, "width": args.hw, "widths": widths}
    config = IDMTrainConfig(
        idm=idm, binary_actions=["gripper"], batch_size=args.batch, lr=args.lr, max_steps=args.max_steps,
        max_cpu_seconds=args.budget_cpu_s, out_dir=str(root / "idm"), name="idm-probe", device="cpu",
        seed=args.seed, log_every=100,
    )  # fmt: skip
    cpu0 = time.process_time()
    model, result = train_idm(
        idm_episodes(Catalog(train_cat.root, create=False)), config, progress=not args.tiny
    )
    emit(metric="idm_train", steps=result.steps, pairs=result.steps * args.batch,
         wall_s=round(result.seconds, 1),
         cpu_s=round(time.process_time() - cpu0, 1), last_loss=round(result.last_loss, 5),
         params=sum(p.numel() for p in model.parameters()), idm=idm)  # fmt: skip
    torch.manual_seed(args.seed)
    random_path = InverseDynamicsModel(
        IDMConfig.from_dict({**load_idm(result.checkpoint).config.as_dict(), "model_id": "idm-random-init"})
    ).save(root / "idm" / "idm-random-init")

    inputs = idm_inputs(test_cat)
    truth = truth_of(inputs)
    ids = sorted(truth)
    true = np.concatenate([truth[i] for i in ids])
    for label, path in (("trained", Path(result.checkpoint)), ("random_init", random_path)):
        labelled = label_with_idm(path, inputs)
        pred = np.concatenate([labelled[i][0] for i in ids])
        mae = float(np.mean([labelled[i][1] for i in ids]))
        emit(metric="action_r2", **score(pred, true, labeller="idm", model=label, horizon=args.horizon,
                                         stored_mae=round(mae, 4)))  # fmt: skip
    mean = np.asarray(model.config.action_mean, np.float32)
    pred = np.concatenate([copy_last(truth[i], args.horizon, mean) for i in ids])
    emit(
        metric="action_r2",
        **score(pred, true, labeller="copy_last_action", model="baseline", horizon=args.horizon),
    )

    # ------------------------------------------------------------------ LAM on the same footage
    train_clips, test_clips = clips(train_cat).to_pylist(), clips(test_cat).to_pylist()
    lam = {"model_dim": 64, "patch_size": 8, "enc_blocks": 2, "dec_blocks": 2, "num_heads": 4}
    if args.tiny:
        lam = {"model_dim": 16, "patch_size": 8, "enc_blocks": 1, "dec_blocks": 1, "num_heads": 2}
    lam_config = TrainConfig(
        lam=lam, height=args.hw, width=args.hw, stride_min=1, stride_max=2, batch_size=args.batch, lr=2e-3,
        warmup_steps=100, max_steps=args.lam_max_steps, max_cpu_seconds=args.lam_budget_cpu_s,
        checkpoint_dir=str(root / "lam"), checkpoint_every=10**9, resume=False, seed=args.seed,
        num_workers=0, pairs_per_clip=16, shuffle_buffer=256, cache_frames=True, log_every=100,
    )  # fmt: skip
    cpu0 = time.process_time()
    _, lam_result = train(train_clips, lam_config, progress=not args.tiny)
    emit(metric="lam_train", steps=lam_result.steps, cpu_s=round(time.process_time() - cpu0, 1),
         last_mse=round(lam_result.last_mse, 6), lam_config=lam)  # fmt: skip
    all_truth = truth_of(idm_inputs(train_cat)) | truth
    fit_ids, eval_ids = sorted(r["clip_id"] for r in train_clips), ids
    for label, weights in (("trained", {"checkpoint": lam_result.checkpoint}),
                           ("random_init", {"lam_config": lam, "seed": args.seed})):  # fmt: skip
        stage = LatentActionStage(**weights, height=args.hw, width=args.hw, stride=1, device="cpu")
        z = latents(stage, train_clips + test_clips)
        z_fit, z_eval = stack(z, fit_ids), stack(z, eval_ids)
        y_fit, y_eval = stack(all_truth, fit_ids), stack(all_truth, eval_ids)
        record = score(linear_probe(z_fit, y_fit, z_eval), y_eval, labeller="lam_linear_probe", model=label)
        assert np.allclose(
            list(record["r2"].values()), r2_scores(z_fit, y_fit, z_eval, y_eval)[:2], atol=1e-3
        )
        emit(metric="action_r2", **record)


if __name__ == "__main__":
    main()
