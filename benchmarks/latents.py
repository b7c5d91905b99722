"""Throughput of latent actions (LAM) and tokenizer latents (Wan VAE) at DreamDojo sizes.

Random-init weights cost the same compute as the real ones. Three measurements, in one process run:

1. ``lam_encode``: the LAM encoder alone on random frame pairs (B, 2, 240, 320, 3): pairs/s.
2. ``lam_pipeline``: labelling real clips (synthetic videos, decoded from H.264) with our batched
   stage (reduced-size decode, pairs of all clips in one model batch) against a naive per-clip loop
   (full-size decode, crop and resize, one pair per forward).
3. ``vae_encode``: Wan VAE encode of 1+4k frames at 480×640: frames/s.

    .venv/bin/python benchmarks/latents.py                          # CPU, full sizes, a few minutes
    .venv/bin/python benchmarks/latents.py --device cuda --dtype bf16 --lam-batch 64 --vae-batch 4 \
        --vae-frames 13 --clips 16 --repeats 3                      # on a GPU
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from egocurate.actions.lam import LAMConfig, LatentActionModel, num_parameters
from egocurate.actions.lam_stage import LatentActionStage
from egocurate.actions.tokenizer import WanTokenizer
from egocurate.media.crop import crop_resize
from egocurate.media.decode import read_clip
from egocurate.testing.videos import make_video

SMALL_LAM = {"model_dim": 128, "enc_blocks": 2, "dec_blocks": 2, "num_heads": 4}


def emit(**record) -> None:
    print(json.dumps({"benchmark": "latents", **record}), flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    """Best wall time of `repeats` calls (after one warm-up call on a GPU)."""
    if device.startswith("cuda"):
        fn()
        sync(device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return best


def autocast(device: str, dtype: str):
    return torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16")


def bench_lam_encode(args, lam: dict, label: str) -> None:
    torch.manual_seed(0)
    model = LatentActionModel(LAMConfig.from_dict({**LAMConfig().as_dict(), **lam})).to(args.device).eval()
    pairs = torch.rand(args.lam_batch, 2, 240, 320, 3, device=args.device)

    def run():
        with torch.inference_mode(), autocast(args.device, args.dtype):
            model.encode_pairs(pairs)

    seconds = timed(run, args.device, args.repeats)
    emit(
        what="lam_encode",
        model=label,
        params=num_parameters(model),
        device=args.device,
        dtype=args.dtype,
        batch=args.lam_batch,
        hw=[240, 320],
        pairs_per_s=round(args.lam_batch / seconds, 3),
        seconds=round(seconds, 3),
    )


def naive_per_clip(model: LatentActionModel, rows: list[dict], device: str, dtype: str) -> int:
    """The loop one writes first: decode each clip at full size, then one pair per forward."""
    count = 0
    for row in rows:
        frames = crop_resize(read_clip(row["uri"], row["start_frame"], row["end_frame"]), 320, 240)
        for t in range(len(frames) - 1):
            pair = torch.from_numpy(np.stack([frames[t], frames[t + 1]])[None]).to(device).float() / 255.0
            with torch.inference_mode(), autocast(device, dtype):
                model.encode_pairs(pair)
            count += 1
    return count


def bench_lam_pipeline(args, lam: dict, label: str, rows: list[dict]) -> None:
    precision = {"fp32": "fp32", "bf16": "bf16"}[args.dtype]
    stage = LatentActionStage(
        lam_config=lam,
        device="cuda" if args.device.startswith("cuda") else "cpu",
        precision=precision,
        pair_batch_size=args.pipeline_batch,
    )
    stage.setup()
    table = pa.Table.from_pylist(rows)
    pairs = sum(r["end_frame"] - r["start_frame"] - 1 for r in rows)
    runs = {
        "ours": lambda: stage.process(table),
        "naive": lambda: naive_per_clip(stage.model, rows, args.device, args.dtype),
    }
    best = {name: float("inf") for name in runs}
    for round_ in range(max(1, args.repeats) + 1):  # round 0 warms files and caches for both
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            sync(args.device)
            if round_:
                best[name] = min(best[name], time.perf_counter() - start)
    ours, naive = best["ours"], best["naive"]
    common = {
        "what": "lam_pipeline",
        "model": label,
        "device": args.device,
        "dtype": args.dtype,
        "clips": len(rows),
        "pairs": pairs,
    }
    emit(
        **common,
        impl="egocurate_batched_stage",
        batch=args.pipeline_batch,
        pairs_per_s=round(pairs / ours, 3),
        seconds=round(ours, 3),
    )
    emit(
        **common,
        impl="naive_per_clip_loop",
        batch=1,
        pairs_per_s=round(pairs / naive, 3),
        seconds=round(naive, 3),
    )
    emit(**{**common, "what": "lam_pipeline_speedup"}, speedup=round(naive / ours, 2))


def bench_vae(args, variant: str) -> None:
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    tok = WanTokenizer(variant, device=args.device, dtype=dtype, tiling=args.tiling)
    hw = (args.vae_height, args.vae_width)
    frames = np.random.default_rng(0).integers(0, 256, (args.vae_batch, args.vae_frames, *hw, 3), np.uint8)
    shape = None

    def run():
        nonlocal shape
        shape = tuple(tok.encode(frames).shape)

    seconds = timed(run, args.device, args.repeats)
    emit(
        what="vae_encode",
        model=f"{variant} (random init)",
        params=num_parameters(tok.vae),
        device=args.device,
        dtype=args.dtype,
        batch=args.vae_batch,
        frames=args.vae_frames,
        hw=list(hw),
        latent_shape=list(shape),
        frames_per_s=round(args.vae_batch * args.vae_frames / seconds, 3),
        seconds=round(seconds, 3),
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--lam-batch", type=int, default=1)
    parser.add_argument("--vae-batch", type=int, default=1)
    parser.add_argument("--vae-frames", type=int, default=5, help="1+4k frames per window (DreamDojo: 13)")
    parser.add_argument("--vae-variants", default="wan2.1", help="comma-separated: wan2.1,wan2.2")
    parser.add_argument("--vae-height", type=int, default=480)
    parser.add_argument("--vae-width", type=int, default=640)
    parser.add_argument("--tiling", action="store_true")
    parser.add_argument("--pipeline-batch", type=int, default=32, help="pairs per forward in our stage")
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--clip-frames", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a shared CPU)"
    )
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: lam,pipeline,vae")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    skip = set(filter(None, args.skip.split(",")))
    if "lam" not in skip:
        bench_lam_encode(args, {}, "dreamdojo-lam-700M")
    if "pipeline" not in skip:
        with tempfile.TemporaryDirectory() as tmp:
            truth = make_video(
                Path(tmp) / "v.mp4",
                seed=0,
                scenes=args.clips,
                scene_seconds=args.clip_frames / 15.0,
                fps=15.0,
            )
            rows = [
                {
                    "clip_id": f"c{k}",
                    "video_id": "v",
                    "uri": truth["uri"],
                    "fps": 15.0,
                    "width": 640,
                    "height": 480,
                    "start_frame": s["start_frame"],
                    "end_frame": s["end_frame"],
                }
                for k, s in enumerate(truth["scenes"])
            ]
            full = args.device.startswith("cuda")
            bench_lam_pipeline(
                args, {} if full else SMALL_LAM, "dreamdojo-lam-700M" if full else "lam-small-128x2", rows
            )
    if "vae" not in skip:
        for variant in filter(None, args.vae_variants.split(",")):
            bench_vae(args, variant)


if __name__ == "__main__":
    main()
