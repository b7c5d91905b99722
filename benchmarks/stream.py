"""Streaming throughput: egocurate Parquet shards vs webdataset, MosaicML MDS and a naive MP4 loader.

One process run measures, on the same clips (rendered once, then written in every format):

- samples/s of latent-only rows (``latent_actions``) and of video rows with a 13-frame decode,
  with 1, 2 and 4 DataLoader workers;
- the same data through ``webdataset`` tar shards and ``mosaicml-streaming`` MDS shards, and a
  naive loader over the DreamDojo MP4 export (open the file, decode from the start to a random
  13-frame window, as DreamDojo's human-video loader does);
- bytes read per sample.

Every video path decodes with the same decoder and window code (``clipmedia``), so differences come
from the storage format and the loader. Ours runs as a trainer would use it, with ``batched=True``:
each window is decoded straight into its slot of the batch (``decode_mp4_into``), where the other
readers decode per sample and the DataLoader stacks the samples. Runs of the readers are
interleaved (median reported) so that load from other processes hits them alike.
mosaicml-streaming pins numpy < 2.2, so it runs in a throwaway venv under ``benchmarks/.cache/``
(made on first use with pip), one subprocess per run (``stream_mds.py``), timed the same way.

Prints one JSON line per measurement, then the checks of the issue:
``latent_vs_naive_mp4`` (latent-only >= 5x the naive loader) and ``video_vs_webdataset``.

    .venv/bin/python benchmarks/stream.py [--videos 12] [--repeat 16] [--workers 1,2,4] [--no-mds]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import random
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from egocurate.media.encode import decode_mp4  # noqa: E402
from egocurate.shards.manifest import Manifest, read_manifest, write_manifest  # noqa: E402
from egocurate.shards.stream import ShardDataset, collate, window_start  # noqa: E402
from egocurate.shards.write import SHARD_SCHEMA, schema_description, write_rows  # noqa: E402

CACHE = REPO / "benchmarks" / ".cache"
WINDOW = 13


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


# ----------------------------------------------------------------------------- data, once
def build_data(args) -> dict:
    """Render clips once (catalog -> shards), then replicate them into every format."""
    from egocurate.export.dreamdojo import export_dreamdojo
    from egocurate.shards.write import ShardParams, write_shards
    from egocurate.testing.catalog import build_sample_catalog

    root = CACHE / f"stream_v{args.videos}x{args.seconds}"
    base = root / "base_shards"
    if not (base / "manifest.json").exists():
        catalog = build_sample_catalog(
            root / "catalog",
            videos=args.videos,
            seconds=args.seconds,
            fps=15.0,
            width=640,
            height=480,
            clip_frames=30,
            clip_step=15,
        )
        params = ShardParams(width=640, height=480, val_fraction=0.0, target_bytes=1 << 40)
        write_shards(catalog, str(base), params=params, progress=False, register=False)
        export_dreamdojo(catalog, str(root / "mp4_tree"), fps=None, width=640, height=480, progress=False)
    manifest, _ = read_manifest(str(base))
    rows = []
    for shard in manifest.shards:
        rows += pq.read_table(base / shard.path).to_pylist()
    data = {"root": root, "clips": len(rows), "mp4_tree": root / "mp4_tree"}

    # Replicate: every format holds the same `repeat` copies of each clip (distinct keys).
    big = root / f"repeat{args.repeat}"
    data.update(parquet=big / "parquet", tar=big / "tar", samples=len(rows) * args.repeat)
    if not (big / "parquet" / "manifest.json").exists():
        replicated = []
        for r in range(args.repeat):
            for row in rows:
                replicated.append({**row, "clip_id": f"{row['clip_id']}-{r:03d}"})
        random.Random(0).shuffle(replicated)
        per_shard = -(-len(replicated) // args.shards)
        shards = []
        for s in range(args.shards):
            part = replicated[s * per_shard : (s + 1) * per_shard]
            shards += write_rows(
                part,
                str(big / "parquet"),
                "train",
                run_id=f"b{s:02d}",
                row_group_bytes=args.row_group_mb << 20,
                target_bytes=1 << 40,
            )
        write_manifest(Manifest(shards=shards, schema=schema_description(SHARD_SCHEMA)), str(big / "parquet"))
        write_tars(replicated, big / "tar", args.shards)
    return data


def write_tars(rows: list[dict], out: Path, shards: int) -> None:
    out.mkdir(parents=True, exist_ok=True)
    per_shard = -(-len(rows) // shards)
    for s in range(shards):
        with tarfile.open(out / f"shard-{s:05d}.tar", "w") as tar:
            for row in rows[s * per_shard : (s + 1) * per_shard]:
                key = row["clip_id"].replace(".", "_")
                meta = json.dumps(
                    {"num_frames": row["num_frames"], "shape": row["latent_actions_shape"]}
                ).encode()
                for ext, payload in (
                    ("mp4", row["video"]),
                    ("latent.bin", row["latent_actions"]),
                    ("json", meta),
                ):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))


# ----------------------------------------------------------------------------- readers
def latent_tensor(data: bytes, shape) -> torch.Tensor:
    return torch.from_numpy(np.frombuffer(data, "<f2").astype(np.float32).reshape(shape))


def wds_pipeline(tar_dir: Path, mode: str, seed: int = 0):
    import webdataset as wds

    urls = sorted(str(p) for p in tar_dir.glob("*.tar"))

    def to_sample(s):
        meta = json.loads(s["json"])
        out = {"clip_id": s["__key__"], "latent_actions": latent_tensor(s["latent.bin"], meta["shape"])}
        if mode == "video":
            index = int(hashlib.blake2b(s["__key__"].encode(), digest_size=8).hexdigest(), 16)
            start = window_start(meta["num_frames"], WINDOW, seed, 0, index)
            out["frames"] = torch.from_numpy(decode_mp4(s["mp4"], start, WINDOW))
        return out

    return (
        wds.WebDataset(urls, shardshuffle=len(urls), seed=seed, empty_check=False).shuffle(64).map(to_sample)
    )


class NaiveMP4(Dataset):
    """DreamDojo-style loader over the MP4 export: open, decode from the first frame to the window."""

    def __init__(self, tree: Path, length: int, seed: int = 0):
        self.files = sorted(tree.rglob("*.mp4"))
        self.length, self.seed = length, seed
        self.bytes_read = 0

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        import av

        path = self.files[index % len(self.files)]
        raw = open(path, "rb")  # noqa: SIM115 - counted, closed below
        counter = CountingReader(raw)
        with av.open(counter) as container:
            stream = container.streams.video[0]
            total = stream.frames
            start = random.Random(self.seed * 1_000_003 + index).randint(0, max(0, total - WINDOW - 1))
            frames = []
            for i, frame in enumerate(container.decode(stream)):
                if i >= start:
                    frames.append(frame.to_ndarray(format="rgb24"))
                if len(frames) == WINDOW:
                    break
        raw.close()
        self.bytes_read += counter.count
        return {"clip_id": path.stem, "frames": torch.from_numpy(np.stack(frames))}


class CountingReader(io.RawIOBase):
    def __init__(self, raw):
        self.raw, self.count = raw, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.raw.read(len(buffer))
        buffer[: len(data)] = data
        self.count += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()


def timed(loader, limit: int) -> tuple[int, float]:
    """Samples and seconds to read `limit` samples, timed from the first batch (startup excluded)."""
    it = iter(loader)
    first = next(it)
    count = len(first["clip_id"])
    start = time.perf_counter()
    for batch in it:
        count += len(batch["clip_id"])
        if count >= limit:
            break
    seconds = time.perf_counter() - start
    del it
    return count - len(first["clip_id"]), seconds


def record(reader: str, mode: str, workers: int, runs: list[tuple[int, float]], bytes_per_sample) -> dict:
    """One JSON line: the median run (samples/s) of `runs`, with every run's rate for transparency."""
    rates = sorted(n / t for n, t in runs if t > 0)
    out = {
        "bench": "stream",
        "reader": reader,
        "mode": mode,
        "workers": workers,
        "samples": sum(n for n, _ in runs),
        "runs": len(runs),
        "samples_per_s": round(float(np.median(rates)), 1),
        "all_runs": [round(r, 1) for r in rates],
        "bytes_per_sample": None if bytes_per_sample is None else int(bytes_per_sample),
    }
    emit(out)
    return out


def ours_loader(url: str, mode: str, batch: int):
    def make(workers: int):
        if mode == "latent":
            ds = ShardDataset(
                url,
                columns=["clip_id", "latent_actions"],
                batch_size=batch,
                num_workers=workers,
                batched=True,
            )
        else:
            ds = ShardDataset(
                url,
                columns=["clip_id", "video"],
                batch_size=batch,
                num_workers=workers,
                decode_video=True,
                window=WINDOW,
                batched=True,
            )
        return ds.loader()

    return make


def ours_bytes(url: str, mode: str) -> float:
    """Bytes read per sample over a whole epoch (num_workers=0, no decode: reading only)."""
    cols = ["clip_id", "latent_actions"] if mode == "latent" else ["clip_id", "video"]
    ds = ShardDataset(url, columns=cols)
    count = sum(1 for _ in ds)
    return ds.bytes_read / count


# ----------------------------------------------------------------------------- MDS (own venv)
MDS_SCRIPT = Path(__file__).with_name("stream_mds.py")


def mds_python() -> Path:
    """Python of a throwaway venv with mosaicml-streaming (numpy < 2.2) that falls back to our packages."""
    venv = CACHE / "mds-venv"
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, "--no-deps", "mosaicml-streaming==0.13.0"], check=True)
        subprocess.run(
            [*pip, "numpy==2.1.3", "xxhash<4", "zstd<2", "python-snappy<1", "Brotli", "catalogue<3"],
            check=True,
        )
        site = subprocess.check_output(
            [str(python), "-c", "import site; print(site.getsitepackages()[0])"], text=True
        )
        ours = subprocess.check_output(
            [sys.executable, "-c", "import site; print(site.getsitepackages()[0])"], text=True
        )
        # Appended after the venv's own site-packages: numpy comes from the venv, torch & co from ours.
        Path(site.strip(), "zz_egocurate_fallback.pth").write_text(f"{ours.strip()}\n{REPO}\n")
        (venv / ".ready").write_text("ok")
    return python


def mds_call(python: Path, cfg: dict) -> dict:
    """One call of stream_mds.py in the MDS venv; its single JSON line."""
    proc = subprocess.run(
        [str(python), str(MDS_SCRIPT), json.dumps(cfg)], capture_output=True, text=True, cwd=str(REPO)
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"stream_mds.py failed: {proc.stderr[-600:]}")
    return json.loads(lines[-1])


def mds_reader(data: dict, args) -> tuple[object, float] | None:
    """(run(mode, workers, limit) -> (samples, seconds), bytes per sample), or None if MDS is unavailable."""
    try:
        python = mds_python()
        base = {"mds": str(data["parquet"].parent / "mds"), "parquet": str(data["parquet"])}
        info = mds_call(python, {**base, "action": "convert", "shard_bytes": args.row_group_mb << 22})
    except (subprocess.CalledProcessError, OSError, RuntimeError) as exc:
        emit({"bench": "stream", "reader": "mosaicml-streaming-mds", "error": str(exc)[-600:]})
        return None
    calls = iter(range(1_000_000))

    def run(mode: str, workers: int, limit: int) -> tuple[int, float]:
        cfg = {**base, "action": "run", "mode": mode, "workers": workers, "batch": args.batch,
               "limit": limit, "seed": next(calls)}  # fmt: skip
        out = mds_call(python, cfg)
        return out["samples"], out["seconds"]

    return run, info["bytes_per_sample"]


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12, help="synthetic source videos (4 clips each)")
    parser.add_argument(
        "--seconds", type=float, default=4.0, help="seconds per source video (15 fps, 640x480)"
    )
    parser.add_argument("--repeat", type=int, default=16, help="copies of each clip in every format")
    parser.add_argument("--shards", type=int, default=8, help="shard files per format")
    parser.add_argument("--row-group-mb", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--latent-limit", type=int, default=0, help="latent samples per measurement (0: all)")
    parser.add_argument("--video-limit", type=int, default=120, help="video samples per measurement")
    parser.add_argument("--reps", type=int, default=3, help="interleaved runs per reader (median reported)")
    parser.add_argument("--no-mds", action="store_true", help="skip mosaicml-streaming (needs a pip install)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    data = build_data(args)
    url = str(data["parquet"])
    latent_limit = args.latent_limit or data["samples"]
    limits = {"latent": latent_limit, "video": args.video_limit}
    emit(
        {
            "bench": "stream",
            "data": {
                "clips": data["clips"],
                "samples": data["samples"],
                "frames_per_clip": 30,
                "size": "640x480",
                "cpus": os.cpu_count(),
            },
        }
    )
    tar_bytes = sum(p.stat().st_size for p in data["tar"].glob("*.tar")) / data["samples"]
    naive = NaiveMP4(data["mp4_tree"], data["samples"])
    probe = NaiveMP4(data["mp4_tree"], 24)
    for i in range(24):
        probe[i]

    def loader_run(make):
        return lambda mode, workers, limit: timed(make(mode)(workers), limit)

    readers = {
        "egocurate-parquet": (loader_run(lambda mode: ours_loader(url, mode, args.batch)), None),
        "webdataset": (
            loader_run(
                lambda mode: (
                    lambda w: DataLoader(
                        wds_pipeline(data["tar"], mode),
                        batch_size=args.batch,
                        num_workers=w,
                        collate_fn=collate,
                    )
                )
            ),
            tar_bytes,
        ),
        "naive-mp4": (
            loader_run(
                lambda mode: (
                    lambda w: DataLoader(
                        naive, batch_size=args.batch, num_workers=w, shuffle=True, collate_fn=collate
                    )
                )
            ),
            probe.bytes_read / 24,
        ),
    }
    mds = None if args.no_mds else mds_reader(data, args)
    if mds is not None:
        readers["mosaicml-streaming-mds"] = mds
    results = []
    for mode in ("latent", "video"):
        ours_b = ours_bytes(url, mode)
        names = [n for n in readers if mode == "video" or n != "naive-mp4"]
        for workers in args.workers:
            runs: dict[str, list] = {name: [] for name in names}
            for rep in range(args.reps):  # interleaved, so load changes hit every reader alike
                for name in names if rep % 2 == 0 else names[::-1]:
                    runs[name].append(readers[name][0](mode, workers, limits[mode]))
            for name in names:
                bytes_per = ours_b if name == "egocurate-parquet" else readers[name][1]
                results.append(record(name, mode, workers, runs[name], bytes_per))

    def rate(reader, mode, workers):
        for r in results:
            if (r.get("reader"), r.get("mode"), r.get("workers")) == (reader, mode, workers):
                return r["samples_per_s"]
        return None

    for workers in args.workers:
        latent, naive_rate = rate("egocurate-parquet", "latent", workers), rate("naive-mp4", "video", workers)
        emit(
            {
                "check": "latent_vs_naive_mp4",
                "workers": workers,
                "ratio": round(latent / naive_rate, 1),
                "pass": latent >= 5 * naive_rate,
            }
        )
        video, wds_rate = rate("egocurate-parquet", "video", workers), rate("webdataset", "video", workers)
        emit(
            {
                "check": "video_vs_webdataset",
                "workers": workers,
                "ratio": round(video / wds_rate, 2),
                "pass": video >= wds_rate,
            }
        )


if __name__ == "__main__":
    main()
