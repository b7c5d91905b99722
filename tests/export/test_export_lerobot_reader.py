"""The LeRobot export, read by the real ``lerobot`` package (0.3.3, the v2.1 codebase).

lerobot pins torch, fsspec and other packages this project pins differently, so it is not a
project dependency. The test installs it with pip into a private folder with ``--no-deps``, plus
only the modules its dataset reader imports that our venv lacks (``READER_PINS``), and reads the
export in a subprocess with that folder on ``PYTHONPATH``: no package of the project's venv changes.
Video frames decode through torchcodec, which loads the system FFmpeg libraries that
``scripts/system-deps.sh`` installs. Nothing is downloaded at run time except these packages from
the package index (once; the folder is cached): the dataset is local and no weights are involved.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from egocurate.export.lerobot import VIDEO_KEY, export_lerobot
from egocurate.testing.catalog import build_sample_catalog

READER_PINS = (
    "lerobot==0.3.3", "datasets==3.6.0", "dill==0.3.8", "multiprocess==0.70.16", "xxhash==3.5.0",
    "draccus==0.10.0", "jsonlines==4.0.0", "deepdiff==8.6.2", "orderly-set==5.5.0", "einops==0.8.2",
    "termcolor==3.3.0", "mergedeep==1.3.4", "pyyaml-include==1.4.1", "toml==0.10.2",
    "typing-inspect==0.9.0", "mypy_extensions==1.2.0", "imageio==2.38.1", "torchcodec==0.17.0",
)  # fmt: skip

READ = r"""
import json, sys
from lerobot.datasets.lerobot_dataset import LeRobotDataset
root, fps = sys.argv[1], float(sys.argv[2])
window = [0.0, 1 / fps]
ds = LeRobotDataset("local/egocurate", root=root, video_backend="torchcodec",
                    delta_timestamps={"action": window, "observation.images.ego_view": window})
out = {"len": len(ds), "episodes": ds.num_episodes, "fps": ds.fps, "items": []}
for i in (0, 5, len(ds) - 1):
    item = ds[i]
    out["items"].append({
        "episode": int(item["episode_index"]), "frame": int(item["frame_index"]), "task": item["task"],
        "action": item["action"].tolist(), "action_is_pad": item["action_is_pad"].tolist(),
        "video": list(item["observation.images.ego_view"].shape),
        "video_range": [float(item["observation.images.ego_view"].min()),
                        float(item["observation.images.ego_view"].max())],
    })
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def reader_path() -> Path:
    cache = Path(os.environ.get("EGOCURATE_TEST_CACHE", Path.home() / ".cache" / "egocurate-tests"))
    target = cache / ("lerobot-reader-" + hashlib.sha256("\n".join(READER_PINS).encode()).hexdigest()[:12])
    if not (target / ".complete").exists():
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--target",
            str(target),
            *READER_PINS,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if proc.returncode != 0:
            pytest.fail("could not install lerobot's reader into a private folder:\n" + proc.stderr[-3000:])
        (target / ".complete").write_text("\n".join(READER_PINS))
    return target


@pytest.mark.slow
def test_lerobot_reads_the_export(reader_path, tmp_path):
    catalog = build_sample_catalog(tmp_path / "cat", videos=2, seconds=2.0, clip_frames=20, clip_step=10,
                                   tokenizer_latents=False)  # fmt: skip
    out = tmp_path / "lerobot_ds"
    report = export_lerobot(
        catalog, str(out), fps=15, width=160, height=120, val_fraction=0.4, progress=False
    )
    assert report.written == 4 and report.skipped == {}
    path = os.pathsep.join([str(Path(__file__).resolve().parents[2]), str(reader_path)])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, "-c", READ, str(out), "15"], capture_output=True, text=True,
                          env=env, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.split("RESULT", 1)[1])
    assert (result["len"], result["episodes"], result["fps"]) == (80, 4, 15)
    data = {}
    for path in sorted((out / "data").rglob("*.parquet")):
        table = pq.read_table(path).to_pydict()
        data[table["episode_index"][0]] = np.asarray(table["action"], dtype=np.float32)
    for item in result["items"]:
        episode, frame = item["episode"], item["frame"]
        own = data[episode]
        window = [own[frame], own[frame + 1] if frame + 1 < len(own) else own[frame]]
        assert np.allclose(item["action"], window)  # the latent actions, through lerobot's window
        assert item["action_is_pad"] == [False, frame + 1 >= len(own)]
        assert (
            item["video"] == [2, 3, 120, 160]
            and 0.0 <= item["video_range"][0] <= item["video_range"][1] <= 1.0
        )
        assert item["task"] in ("pour water into the cup", "bright pad wiping")


def test_metadata_states_quantiles_and_the_model_behind_action(tmp_path):
    catalog = build_sample_catalog(tmp_path / "cat", videos=2, seconds=2.0, clip_frames=20, clip_step=10,
                                   tokenizer_latents=False)  # fmt: skip
    out = tmp_path / "ds"
    export_lerobot(catalog, str(out), fps=15, width=160, height=120, progress=False)
    stats = json.loads((out / "meta" / "stats.json").read_text())
    actions = np.concatenate([np.asarray(pq.read_table(p).to_pydict()["action"])
                              for p in sorted((out / "data").rglob("*.parquet"))])  # fmt: skip
    assert np.allclose(stats["action"]["q01"], np.quantile(actions, 0.01, axis=0))
    assert np.allclose(stats["action"]["q99"], np.quantile(actions, 0.99, axis=0))
    assert VIDEO_KEY in stats
    info = json.loads((out / "meta" / "info.json").read_text())
    marker = json.loads((out / "meta" / "egocurate_export.json").read_text())
    for provenance in (info["egocurate_action"], marker["action"]):
        assert provenance["models"] == {
            "sample-lam": {"checkpoint": None, "checkpoint_hash": None, "random_init": False, "episodes": 4}
        }
    episodes = pq.read_table(out / "meta" / "egocurate_episodes.parquet").to_pylist()
    assert {e["lam_model_id"] for e in episodes} == {"sample-lam"}
    assert marker["fps"] == 15 and marker["rendered_fps"] == [15]
