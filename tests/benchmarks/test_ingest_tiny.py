"""`benchmarks/ingest.py --tiny` runs in CI: the ffprobe loop and ingest on both probe backends."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_ingest_benchmark_times_both_backends_beside_the_ffprobe_loop():
    run = subprocess.run([sys.executable, str(BENCH / "ingest.py"), "--tiny"], capture_output=True, text=True,
                         timeout=600, check=True)  # fmt: skip
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    loop = next(line for line in lines if line["impl"] == "ffprobe_loop")
    assert loop["files"] == 6 and loop["seconds"] > 0 and loop["cpu_s"] > 0
    ours = {line["backend"]: line for line in lines if line["impl"] == "egocurate[local]"}
    assert set(ours) == {"auto", "ffprobe"}
    assert ours["auto"]["probe_backends"] == ["pyav"] and ours["ffprobe"]["probe_backends"] == ["ffprobe"]
    for line in ours.values():
        assert (line["rows_out"], line["quarantined"]) == (6, 0)
        assert line["cpu_s"] > 0 and line["seconds"] > 0
        assert line["cpu_ratio_vs_ffprobe_loop"] == pytest.approx(loop["cpu_s"] / line["cpu_s"], rel=0.02)
        assert line["ratio_vs_ffprobe_loop"] == pytest.approx(loop["seconds"] / line["seconds"], rel=0.02)
