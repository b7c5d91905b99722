"""A short script that reads the catalog exits 0, every time.

Through deltalake's Python filesystem handler, Arrow freed scanned buffers on its own threads after
the read returned; when that landed during interpreter exit the process aborted (exit 134,
"terminate called without an active exception") in roughly one run in ten. Catalog reads use
Arrow's native filesystem for local tables (``store.native_filesystem``), so nothing is left for
those threads to hand back to Python.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from egocurate.catalog.store import Catalog
from egocurate.ingest.probe_stage import ProbeStage
from egocurate.jobs.driver import run_stage
from egocurate.jobs.runners.local import LocalEngine

REPO = Path(__file__).resolve().parents[2]
RUNS = 12
SCRIPT = """
import sys
from egocurate.catalog.store import Catalog
catalog = Catalog(sys.argv[1])
videos, ledger = catalog.read("videos"), catalog.read("_ledger")
print(videos.num_rows, ledger.num_rows, len(catalog.distinct("videos", "uri")))
"""


def test_a_script_reading_the_catalog_always_exits_cleanly(tmp_path, sample_videos):
    catalog = tmp_path / "cat"
    uris = pa.table({"uri": [str(p) for p in sample_videos]})
    # several commits, so several files to scan
    run_stage(ProbeStage(batch_size=1), uris, Catalog(catalog), LocalEngine(), commit_every=1, progress=False)
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    codes, outputs = [], set()
    for _ in range(RUNS // 2):  # two at a time: the machine has two cores
        procs = [
            subprocess.Popen([sys.executable, "-c", SCRIPT, str(catalog)], env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
            for _proc in range(2)
        ]  # fmt: skip
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            codes.append(proc.returncode)
            outputs.add(out.strip())
            assert "terminate called" not in err, err
    assert codes == [0] * RUNS
    assert outputs == {"3 3 3"}
