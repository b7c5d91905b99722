"""DreamDojo sample loading: our map-style ``ShardVideoDataset`` vs reading the MP4 export per file.

DreamDojo's dataloader draws random indices (``DistributedSampler``), so the shard dataset reads
one row group per sample. This measures samples/s of full DreamDojo samples (13 frames at 480x640,
``lam_video``, ``action``), in random order, single process, for:

- ``mp4_files``: the reference, the way DreamDojo's ``VideoDataset`` reads its data: open the
  clip's MP4 from the ``export dreamdojo`` tree and decode a random 13-frame window (same decoder
  and the same ``DreamDojoSample`` transform, so only the storage differs);
- ``shards_rg<N>MB``: ``ShardVideoDataset`` over shards written with ``--row-group-mb N``.

Prints one JSON line per measurement. Runs are interleaved and the median of `--repeat` is reported.

    .venv/bin/python benchmarks/dreamdojo_dataset.py [--videos 6] [--samples 24] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from egocurate.export.dreamdojo import export_dreamdojo  # noqa: E402
from egocurate.integrations.dreamdojo import ShardVideoDataset  # noqa: E402
from egocurate.shards.dreamdojo_sample import DreamDojoSample  # noqa: E402
from egocurate.shards.write import MB, ShardParams, write_shards  # noqa: E402
from egocurate.testing.catalog import build_sample_catalog  # noqa: E402


class Mp4Files:
    """The reference: one MP4 file per clip, read whole and decoded to a random window."""

    def __init__(self, root: Path):
        self.root = root
        self.rows = pq.read_table(root / "clips.parquet").to_pylist()
        self.transform = DreamDojoSample()

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        sample = {"video": (self.root / row["path"]).read_bytes(), "num_frames": row["num_frames"],
                  "fps": row["fps"], "clip_id": row["clip_id"], "__index__": index,
                  "__epoch__": random.getrandbits(31)}  # fmt: skip
        return self.transform(sample)


def rate(dataset, samples: int, seed: int) -> float:
    rng = random.Random(seed)
    indices = [rng.randrange(len(dataset)) for _ in range(samples)]
    start = time.perf_counter()
    for i in indices:
        item = dataset[i]
        assert item["video"].shape == (3, 13, 480, 640)
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="dd_bench_") as tmp:
        root = Path(tmp)
        catalog = build_sample_catalog(root, videos=args.videos, seconds=8.0, width=640, height=480,
                                       clip_frames=60, clip_step=30, tokenizer_latents=False)  # fmt: skip
        readers = {"mp4_files": None}
        export_dreamdojo(catalog, str(root / "mp4"), progress=False)
        readers["mp4_files"] = Mp4Files(root / "mp4")
        for mb in (1, 32):
            out = root / f"shards_{mb}"
            params = ShardParams(val_fraction=0.0, row_group_bytes=mb * MB)
            write_shards(catalog, str(out), params=params, progress=False, register=False)
            readers[f"shards_rg{mb}MB"] = ShardVideoDataset(str(out))
        runs: dict[str, list[float]] = {name: [] for name in readers}
        for r in range(args.repeat):
            for name, dataset in readers.items():
                runs[name].append(rate(dataset, args.samples, seed=r))
        clips = len(readers["mp4_files"])
        for name, values in runs.items():
            median = round(statistics.median(values), 2)
            record = {"bench": "dreamdojo_dataset", "reader": name, "clips": clips, "samples": args.samples,
                      "samples_per_s": median, "runs": [round(v, 2) for v in values]}  # fmt: skip
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
