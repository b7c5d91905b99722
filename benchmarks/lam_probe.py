"""Does a LAM trained on our clips encode the true action? A linear probe and the controllability gap.

1. Generate synthetic egocentric videos whose generator records the true per-frame action: the hand's
   displacement and the camera's motion (`egocurate.testing.videos`, `.truth.json`).
2. Train a small LAM (`egocurate.actions.train`) on the clips of the training videos, within a
   CPU budget (CPU seconds of this process, `--budget-cpu-s`, fair on a shared machine).
3. Label clips with the trained checkpoint through the real `latent_actions` stage (float16 storage).
4. Fit a linear probe z_mu → action on the training videos' pairs; report R² on held-out videos.
5. Controllability gap on held-out pairs: PSNR of reconstructing frame t+1 with its own latent minus
   PSNR with the latent of a random pair from another clip.

The camera target is the shift the renderer applied (integer crop offsets, derived from the recorded
camera motion, which is exact); the hand target is the recorded displacement. The same probe on a
random-init LAM is printed as the baseline.

    .venv/bin/python benchmarks/lam_probe.py            # defaults: 900 CPU-s of training (~15-20 min)

The generated videos are 320x240 at 15 fps with camera shake 4 px/frame (standard deviation) and a
hand in faster, burstier motion than the demo's (``--hand-speed 3``: 4.7 px/frame on average, with
rests where it meets the edge of the reachable area); the LAM sees them at 48x64. 32 training and 8
held-out videos of 3 scenes each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from egocurate.actions.arrays import unpack_f16
from egocurate.actions.frames import read_model_frames, strided_indices
from egocurate.actions.lam import LatentActionModel
from egocurate.actions.lam_stage import LatentActionStage
from egocurate.actions.train import TrainConfig, psnr, train
from egocurate.testing.videos import make_video

MARGIN = 24  # egocurate.testing.videos.render_scene's camera margin


def emit(**record) -> None:
    print(json.dumps({"benchmark": "lam_probe", **record}), flush=True)


def make_videos(out: Path, count: int, seed: int, args: argparse.Namespace) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    truths = []
    for i in range(count):
        path = out / f"probe_{seed + i:04d}.mp4"
        truth_path = Path(f"{path}.truth.json")
        if not truth_path.exists():
            make_video(
                path,
                seed=seed + i,
                scenes=args.scenes,
                scene_seconds=args.scene_seconds,
                fps=args.fps,
                width=args.source_width,
                height=args.source_height,
                jitter=args.jitter,
                hand_speed=args.hand_speed,
            )
        truths.append(json.loads(truth_path.read_text()))
    return truths


def clip_rows(truths: list[dict]) -> list[dict]:
    rows = []
    for truth in truths:
        vid = Path(truth["uri"]).stem
        for k, scene in enumerate(truth["scenes"]):
            rows.append(
                {
                    "clip_id": f"{vid}_{k}",
                    "video_id": vid,
                    "uri": truth["uri"],
                    "fps": truth["fps"],
                    "start_frame": scene["start_frame"],
                    "end_frame": scene["end_frame"],
                    "width": truth["width"],
                    "height": truth["height"],
                }
            )
    return rows


def actions(truths: list[dict], stride: int) -> dict[str, np.ndarray]:
    """Per clip, the (pairs, 4) action of each pair (f_t, f_t+stride): hand and camera shift (dx, dy)."""
    out = {}
    for truth in truths:
        vid = Path(truth["uri"]).stem
        for k, scene in enumerate(truth["scenes"]):
            hand = np.cumsum(
                np.asarray(scene["hand_motion"], np.float64), axis=0
            )  # position up to a constant
            camera = np.round(MARGIN + np.cumsum(np.asarray(scene["camera_motion"], np.float64), axis=0))
            frames = np.arange(0, len(hand), stride)  # the stage's frame indices, relative to the clip start
            out[f"{vid}_{k}"] = np.concatenate(
                [np.diff(hand[frames], axis=0), np.diff(camera[frames], axis=0)], 1
            )
    return out


def latents(stage: LatentActionStage, rows: list[dict]) -> dict[str, np.ndarray]:
    stage.setup()
    table = stage.process(pa.Table.from_pylist(rows))
    bad = [r for r in table.to_pylist() if r["_error_kind"]]
    if bad:
        raise RuntimeError(f"stage failed on {len(bad)} clips: {bad[0]['_error_message']}")
    return {
        r["clip_id"]: unpack_f16(r["latent_actions"], r["latent_actions_shape"]) for r in table.to_pylist()
    }


def r2_scores(z_fit, y_fit, z_eval, y_eval) -> np.ndarray:
    """R² per target of a least-squares linear probe (with bias) fitted on one split, scored on another."""
    mean, std = z_fit.mean(0), z_fit.std(0) + 1e-6
    design = np.hstack([(z_fit - mean) / std, np.ones((len(z_fit), 1))])
    weights = np.linalg.lstsq(design, y_fit, rcond=None)[0]
    pred = np.hstack([(z_eval - mean) / std, np.ones((len(z_eval), 1))]) @ weights
    resid = ((y_eval - pred) ** 2).sum(0)
    total = ((y_eval - y_eval.mean(0)) ** 2).sum(0)
    return 1.0 - resid / total


def probe(z: dict, y: dict, fit_ids: list[str], eval_ids: list[str]) -> np.ndarray:
    stack = lambda d, ids: np.concatenate([d[i] for i in ids])  # noqa: E731
    return r2_scores(stack(z, fit_ids), stack(y, fit_ids), stack(z, eval_ids), stack(y, eval_ids))


def controllability(
    model: LatentActionModel, rows: list[dict], hw: tuple[int, int], pairs: int, seed: int, stride: int = 1
):
    """Mean PSNR of frame t+1 reconstructed with its own z_mu and with a random other clip's z_mu."""
    rng = np.random.default_rng(seed)
    videos, owners = [], []
    for n, row in enumerate(rows):
        frames = read_model_frames(
            row["uri"], strided_indices(row["start_frame"], row["end_frame"], stride), hw
        )
        videos.append(np.stack([frames[:-1], frames[1:]], axis=1))
        owners += [n] * (len(frames) - 1)
    videos, owners = np.concatenate(videos), np.asarray(owners)
    pick = rng.choice(len(videos), size=min(pairs, len(videos)), replace=False)
    videos, owners = torch.from_numpy(videos[pick]).float() / 255.0, owners[pick]
    # a partner from a different clip for every pair
    partner = np.array([rng.choice(np.flatnonzero(owners != o)) for o in owners])
    with torch.inference_mode():
        z_mu, _, patches = model.encode(videos)
        h, w = videos.shape[2:4]
        own = model.decode(patches[:, :-1], z_mu, h, w)
        other = model.decode(patches[:, :-1], z_mu[partner], h, w)
    target = videos[:, 1:, : own.shape[2], : own.shape[3]]
    copy = videos[:, :1, : own.shape[2], : own.shape[3]]
    per_pair = lambda a: psnr(((a - target) ** 2).flatten(1).mean(1))  # noqa: E731
    return float(per_pair(own).mean()), float(per_pair(other).mean()), float(per_pair(copy).mean())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", default="/tmp/egocurate_lam_probe")
    parser.add_argument("--train-videos", type=int, default=32)
    parser.add_argument("--test-videos", type=int, default=8)
    parser.add_argument("--scenes", type=int, default=3)
    parser.add_argument("--scene-seconds", type=float, default=4.0)
    parser.add_argument("--fps", type=float, default=15.0)
    parser.add_argument("--source-width", type=int, default=320)
    parser.add_argument("--source-height", type=int, default=240)
    parser.add_argument(
        "--jitter", type=float, default=4.0, help="camera shake of the generated videos, px/frame"
    )
    parser.add_argument(
        "--hand-speed", type=float, default=3.0, help="pace of the generated hand (1.0: about 4 px/frame)"
    )
    parser.add_argument("--height", type=int, default=48)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--patch", type=int, default=8)
    parser.add_argument("--model-dim", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--stride-max", type=int, default=2, help="training strides 1..N (DreamDojo: 4)")
    parser.add_argument("--max-steps", type=int, default=100_000)
    parser.add_argument(
        "--budget-cpu-s",
        type=float,
        default=900.0,
        help="training budget in CPU seconds of this process (<= 900)",
    )
    parser.add_argument("--budget-s", type=float, default=None, help="optional wall-clock cap on training")
    parser.add_argument("--probe-strides", default="1,2", help="frame strides whose pairs are probed")
    parser.add_argument("--eval-pairs", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a shared CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.budget_cpu_s > 900:
        parser.error("the probe's CPU budget is at most 15 minutes (--budget-cpu-s <= 900)")
    torch.set_num_threads(args.threads)
    data = Path(args.data_dir)
    t0 = time.perf_counter()
    videos = data / (
        f"videos-{args.source_width}x{args.source_height}-{args.fps:g}fps-{args.scenes}x{args.scene_seconds:g}s"
        f"-jitter{args.jitter:g}-hand{args.hand_speed:g}"
    )
    train_truths = make_videos(videos, args.train_videos, 1000, args)
    test_truths = make_videos(videos, args.test_videos, 9000, args)
    emit(
        metric="data",
        train_videos=len(train_truths),
        test_videos=len(test_truths),
        seconds=round(time.perf_counter() - t0, 1),
    )
    train_rows, test_rows = clip_rows(train_truths), clip_rows(test_truths)
    lam = {
        "model_dim": args.model_dim,
        "patch_size": args.patch,
        "enc_blocks": args.blocks,
        "dec_blocks": args.blocks,
        "num_heads": args.heads,
    }
    run_dir = (
        data / f"run-{args.model_dim}-{args.blocks}-{args.height}x{args.width}-p{args.patch}-s{args.seed}"
    )
    config = TrainConfig(
        lam=lam,
        height=args.height,
        width=args.width,
        stride_min=1,
        stride_max=args.stride_max,
        batch_size=args.batch,
        lr=args.lr,
        warmup_steps=100,
        max_steps=args.max_steps,
        max_seconds=args.budget_s,
        max_cpu_seconds=args.budget_cpu_s,
        checkpoint_dir=str(run_dir),
        checkpoint_every=10**9,
        resume=False,
        seed=args.seed,
        num_workers=0,
        pairs_per_clip=16,
        shuffle_buffer=1024,
        cache_frames=True,
        log_every=100,
    )
    cpu0 = time.process_time()
    model, result = train(train_rows, config, progress=True)
    checkpoint = result.checkpoint
    emit(
        metric="train",
        steps=result.steps,
        pairs=result.steps * args.batch,
        wall_s=round(result.seconds, 1),
        cpu_s=round(time.process_time() - cpu0, 1),
        last_mse=round(result.last_mse, 6),
        params=sum(p.numel() for p in model.parameters()),
        lam_config=lam,
        hw=[args.height, args.width],
    )

    fit_ids = [r["clip_id"] for r in train_rows]
    eval_ids = [r["clip_id"] for r in test_rows]
    names = ["hand_dx", "hand_dy", "camera_dx", "camera_dy"]
    models = {
        "trained": {"checkpoint": str(checkpoint)},
        "random_init": {"lam_config": lam, "seed": args.seed},
    }
    for stride in [int(s) for s in args.probe_strides.split(",")]:
        y = actions(train_truths + test_truths, stride)
        for label, weights in models.items():
            stage = LatentActionStage(
                **weights, height=args.height, width=args.width, stride=stride, device="cpu"
            )
            z = latents(stage, train_rows + test_rows)
            r2 = probe(z, y, fit_ids, eval_ids)
            emit(
                metric="linear_probe_r2",
                model=label,
                probe_stride=stride,
                r2=round(float(r2.mean()), 4),
                per_target={n: round(float(v), 4) for n, v in zip(names, r2, strict=True)},
                fit_pairs=int(sum(len(z[i]) for i in fit_ids)),
                eval_pairs=int(sum(len(z[i]) for i in eval_ids)),
            )
            own, other, copy = controllability(
                stage.model, test_rows, (args.height, args.width), args.eval_pairs, args.seed, stride
            )
            emit(
                metric="controllability",
                model=label,
                probe_stride=stride,
                psnr_true_latent=round(own, 3),
                psnr_random_latent=round(other, 3),
                gap_db=round(own - other, 3),
                psnr_copy_frame=round(copy, 3),
            )


if __name__ == "__main__":
    main()
