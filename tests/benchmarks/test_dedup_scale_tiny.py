"""`benchmarks/dedup_scale.py --tiny` runs in CI: planted near-duplicates found, memory and time
measured in the child, the exact reference and the exponent fit printed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_dedup_scale_tiny_finds_the_planted_pairs_and_fits_an_exponent():
    run = subprocess.run([sys.executable, str(BENCH / "dedup_scale.py"), "--tiny"], capture_output=True,
                         text=True, timeout=600, check=True)  # fmt: skip
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    runs = {line["rows"]: line for line in lines if line["bench"] == "dedup_scale"}
    assert set(runs) == {10_000, 40_000}
    for rows, line in runs.items():
        assert line["clusters"] > rows / 1000  # the clustered search ran, not the exact one
        assert line["exact_pairs"] > 100 and line["planted_pairs"] > 1000
        assert line["pair_recall_exact"] >= 0.98 and line["group_recall_exact"] >= 0.98
        assert line["planted_group_recall"] >= 0.98
        assert 0 < line["peak_rss_mb"] < 4096 and line["seconds"] > 0 and line["cpu_s"] > 0
        assert line["representatives"] < rows  # copies collapsed into their groups
    references = [line for line in lines if line["bench"] == "dedup_scale_reference"]
    assert len(references) == 2 and all(line["pairs"] > 0 for line in references)
    (fit,) = [line for line in lines if line["bench"] == "dedup_scale_fit"]
    assert fit["sizes"] == [10_000, 40_000] and fit["time_exponent_cpu"] > 0
