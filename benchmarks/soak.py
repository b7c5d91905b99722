"""Soak: many rounds of 1-4 concurrent `egocurate run` processes, random SIGKILLs, reruns.

Usage: python benchmarks/soak.py [--minutes 10] [--videos 6] [--seed 0]

Each round starts a fresh catalog, launches 1-4 real `egocurate run` processes (ingest, shots,
quality, `commit_every: 1`, overlapping sources with a byte copy and a corrupt file), SIGKILLs a
random subset of them at random moments, then reruns the pipeline once to completion. Every table
of every round is compared with one serial run: the reference this benchmark names.

Prints one JSON line: {"rounds", "kills", "max_concurrent", "rows_expected", "rows_found",
"duplicates", "lost"} (plus seconds). `duplicates` and `lost` must be 0.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egocurate.catalog.store import Catalog  # noqa: E402
from egocurate.testing.videos import make_corrupt_copy, make_video  # noqa: E402

# table -> columns that identify a row (what "duplicate" and "lost" are counted over)
KEYS = {
    "videos": ("video_id",),
    "clips": ("clip_id",),
    "clip_quality": ("clip_id",),
    "quarantine": ("stage", "key"),
    "_ledger": ("stage", "key"),
}
VOLATILE = {"time", "run_id", "rows_out"}  # rows_out: a ledger row repaired after a kill says 0


def make_sources(root: Path, videos: int) -> list[str]:
    """Two overlapping folders of distinct small videos, a byte copy and a truncated file."""
    seed = root / "seed.mp4"
    make_video(seed, seed=3, scenes=2, scene_seconds=2.0, fps=10.0, width=320, height=240)
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    data = seed.read_bytes()
    for i in range(videos):
        (a if i % 2 else b).joinpath(f"take_{i}.mp4").write_bytes(data + f"soak-{i}".encode())
    shutil.copy(b / "take_0.mp4", a / "copy_of_take_0.mp4")
    make_corrupt_copy(seed, a / "broken.mp4", keep=0.3)
    return [str(a), str(b)]


def pipeline(path: Path, catalog: Path, sources: list[str]) -> Path:
    config = {
        "catalog": str(catalog),
        "engine": "local",
        "sources": sources,
        "commit_every": 1,
        "progress": False,
        "stages": [
            {"name": "ingest", "params": {"batch_size": 1}},
            {
                "name": "shots",
                "params": {"detector": "fixed", "detector_params": {"window_s": 1.0}, "min_clip_s": 0.5},
            },  # fmt: skip
            {"name": "quality", "params": {"batch_size": 1}},
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}


def cli(config: Path) -> list[str]:
    return [sys.executable, "-m", "egocurate.cli.main", "run", str(config)]


def start(config: Path) -> subprocess.Popen:
    out = subprocess.DEVNULL
    return subprocess.Popen(cli(config), env=ENV, stdout=out, stderr=out, start_new_session=True)


def rows(catalog: Catalog) -> dict[str, list[tuple]]:
    out = {}
    for name, key in KEYS.items():
        table = catalog.read(name).to_pylist()
        out[name] = [
            (tuple(r[k] for k in key), json.dumps({k: v for k, v in r.items() if k not in VOLATILE},
                                                  sort_keys=True, default=str))
            for r in table
        ]  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="egocurate-soak-"))
    try:
        sources = make_sources(work, args.videos)
        ref = Catalog(work / "serial")
        started = time.perf_counter()
        serial = pipeline(work / "serial.yaml", Path(ref.root), sources)
        subprocess.run(cli(serial), check=True, capture_output=True, env=ENV)
        serial_seconds = time.perf_counter() - started
        expected = rows(ref)
        stats = {"rounds": 0, "kills": 0, "max_concurrent": 0, "rows_expected": 0, "rows_found": 0,
                 "duplicates": 0, "lost": 0, "mismatched": 0}  # fmt: skip
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline:
            n = stats["rounds"]
            cat_path = work / f"round_{n}"
            config = pipeline(work / f"round_{n}.yaml", cat_path, sources)
            k = rng.randint(1, 4)
            procs = [start(config) for _ in range(k)]
            stats["max_concurrent"] = max(stats["max_concurrent"], k)
            victims = [p for p in procs if rng.random() < 0.7]
            for proc in victims:  # a random moment inside (or past) a serial run's length
                time.sleep(rng.uniform(0.5, serial_seconds * 1.2) / max(1, len(victims)))
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    stats["kills"] += 1
            for proc in procs:
                proc.wait(timeout=600)
            final = start(config)  # the rerun that finishes the work
            if final.wait(timeout=600) != 0:
                raise SystemExit(f"round {n}: the rerun failed")
            found = rows(Catalog(cat_path))
            for name, want in expected.items():
                got = found[name]
                keys = [k for k, _ in got]
                stats["rows_expected"] += len(want)
                stats["rows_found"] += len(got)
                stats["duplicates"] += len(keys) - len(set(keys))
                stats["lost"] += len({k for k, _ in want} - set(keys))
                stats["mismatched"] += len({v for _, v in want} ^ {v for _, v in got})
            shutil.rmtree(cat_path, ignore_errors=True)
            stats["rounds"] += 1
        stats["seconds"] = round(args.minutes * 60, 1)
        stats["serial_run_s"] = round(serial_seconds, 2)
        print(json.dumps(stats))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
