"""The benchmarks' tiny modes run in CI, so a benchmark that no longer runs is caught here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _json_lines(script: str, *args: str) -> list[dict]:
    run = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600, check=True
    )
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def test_pipeline_benchmark_measures_the_decode_a_shared_pass_saves():
    lines = _json_lines("pipeline.py", "--tiny")
    modes = {line["mode"]: line for line in lines if line.get("bench") == "shared_decode"}
    clips = modes["separate"]["clips"]
    assert clips > 0 and modes["shared"]["clips"] == clips
    assert modes["separate"]["decode_calls"] == 3 * clips and modes["shared"]["decode_calls"] == clips
    saved = next(line for line in lines if line.get("check") == "decode_seconds_saved")
    assert saved["decode_calls"] == [3 * clips, clips]
    scores = {line["score"] for line in lines if line.get("check") == "score_shift_shared_vs_separate"}
    assert scores == {"motion", "blur", "brightness", "static_fraction"}
