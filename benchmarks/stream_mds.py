"""The mosaicml-streaming (MDS) side of ``benchmarks/stream.py``, run in its own venv.

mosaicml-streaming pins numpy < 2.2, which our environment cannot take, so ``stream.py`` runs this
file with a throwaway venv's Python (numpy 2.1 there, torch and egocurate from ours) and reads the
JSON line it prints. ``convert`` writes the benchmark's Parquet shards as MDS once; ``run`` times
one pass (latent-only or 13-frame video, with the same decode function as every other reader), so
the parent can interleave MDS runs with the other readers'.

    benchmarks/.cache/mds-venv/bin/python benchmarks/stream_mds.py '<json config>'
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from streaming import MDSWriter, StreamingDataset

from egocurate.media.encode import decode_mp4
from egocurate.shards.stream import collate, window_start

WINDOW = 13
COLUMNS = {"clip_id": "str", "video": "bytes", "latent_actions": "bytes", "num_frames": "int"}


class Clips(StreamingDataset):
    """MDS samples turned into the benchmark's sample dict (latent actions, optional frame window).

    Batches go through the same ``collate`` as every other reader, so tensor transfer costs match.
    """

    def __init__(self, mode: str, **kwargs):
        super().__init__(**kwargs)
        self.mode = mode

    def __getitem__(self, index: int) -> dict:
        s = super().__getitem__(index)
        latent = np.frombuffer(s["latent_actions"], "<f2").astype(np.float32)
        out = {"clip_id": s["clip_id"], "latent_actions": torch.from_numpy(latent)}
        if self.mode == "video":
            key = int(hashlib.blake2b(s["clip_id"].encode(), digest_size=8).hexdigest(), 16)
            start = window_start(int(s["num_frames"]), WINDOW, 0, 0, key)
            out["frames"] = torch.from_numpy(decode_mp4(s["video"], start, WINDOW))
        return out


def convert(src: Path, out: Path, shard_bytes: int) -> dict:
    if not (out / "index.json").exists():
        with MDSWriter(out=str(out), columns=COLUMNS, compression=None, size_limit=shard_bytes) as writer:
            for path in sorted(src.glob("train/*.parquet")):
                for row in pq.read_table(path, columns=list(COLUMNS)).to_pylist():
                    writer.write(row)
    total = sum(p.stat().st_size for p in out.glob("*.mds"))
    samples = sum(s["samples"] for s in json.loads((out / "index.json").read_text())["shards"])
    return {"bytes_per_sample": total / samples, "samples": samples}


def run(out: Path, mode: str, workers: int, batch: int, limit: int, seed: int) -> dict:
    """Samples and seconds of one pass, timed from the first batch (startup excluded)."""
    ds = Clips(mode, local=str(out), batch_size=batch, shuffle=True, shuffle_seed=seed)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate)
    it = iter(loader)
    first = len(next(it)["clip_id"])
    count, start = first, time.perf_counter()
    for batch_ in it:
        count += len(batch_["clip_id"])
        if count >= limit:
            break
    return {"samples": count - first, "seconds": time.perf_counter() - start}


def main() -> None:
    cfg = json.loads(sys.argv[1])
    out = Path(cfg["mds"])
    if cfg["action"] == "convert":
        result = convert(Path(cfg["parquet"]), out, cfg["shard_bytes"])
    else:
        result = run(out, cfg["mode"], cfg["workers"], cfg["batch"], cfg["limit"], cfg["seed"])
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
