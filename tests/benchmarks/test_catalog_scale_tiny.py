"""`benchmarks/catalog_scale.py --tiny` runs in CI: the driven stage, its rerun and its reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_catalog_scale_tiny_drives_both_commit_paths_and_reruns_nothing():
    run = subprocess.run([sys.executable, str(BENCH / "catalog_scale.py"), "--tiny"], capture_output=True,
                         text=True, timeout=600, check=True)  # fmt: skip
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    sizes = {(line["path"], line["rows"]): line for line in lines if line["bench"] == "catalog_scale"}
    assert set(sizes) == {("today", 2000), ("today", 8000), ("base", 20000), ("base", 80000)}
    for (_path, rows), line in sizes.items():
        assert line["commits"] == -(-rows // line["commit_every"])  # one commit per work unit
    big = sizes[("base", 80000)]
    assert big["rerun_rows_todo"] == 0 and big["rerun_s"] > 0 and big["rerun_peak_rss_mb"] > 0
    assert big["check_findings"] == []
    assert big["files_stage_table"] < big["commits"]  # compaction ran
    fits = {line["path"]: line for line in lines if line["bench"] == "catalog_scale_fit"}
    assert fits["today"]["extrapolated_driver_s"]["16000000"] > 0
    videos = {line["path"]: line for line in lines if line["bench"] == "catalog_scale_videos"}
    for line in videos.values():  # planted duplicates folded, never doubled or lost
        assert line["videos"] == line["expected_videos"] < line["rows"]
    assert videos["today"]["fold_commits"] == videos["today"]["commits"]  # today: every commit overwrites
    assert videos["base"]["fold_commits"] < videos["base"]["commits"]  # now: only commits holding a duplicate
