"""The benchmarks' tiny modes run in CI, so a benchmark that no longer runs is caught here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _json_lines(script: str, *args: str) -> list[dict]:
    run = subprocess.run(
        [sys.executable, str(BENCH / script), *args], capture_output=True, text=True, timeout=600, check=True
    )
    return [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]


def test_pipeline_benchmark_measures_the_decode_a_shared_pass_saves():
    lines = _json_lines("pipeline.py", "--mode", "shared-decode", "--tiny")
    modes = {line["mode"]: line for line in lines if line.get("bench") == "shared_decode"}
    clips = modes["separate"]["clips"]
    assert clips > 0 and modes["shared"]["clips"] == clips
    assert modes["separate"]["decode_calls"] == 3 * clips and modes["shared"]["decode_calls"] == clips
    saved = next(line for line in lines if line.get("check") == "decode_seconds_saved")
    assert saved["decode_calls"] == [3 * clips, clips]
    scores = {line["score"] for line in lines if line.get("check") == "score_shift_shared_vs_separate"}
    assert scores == {"motion", "blur", "brightness", "static_fraction"}


def test_pipeline_throughput_reports_every_stage_at_every_scale():
    lines = _json_lines("pipeline.py", "--tiny", "--engines", "local")
    rows = [line for line in lines if line.get("bench") == "throughput"]
    stages = {"ingest", "shots", "quality+embed", "dedup", "labels", "overall"}
    assert {(r["scale"], r["stage"]) for r in rows} == {(s, n) for s in (1, 2) for n in stages}
    for row in rows:
        assert 0.0 <= row["overhead"] <= 1.0, row
        assert row["wall_s"] > 0 and row["video_h_per_core_h"] > 0, row
    by_scale = {r["scale"]: r for r in rows if r["stage"] == "overall"}
    assert by_scale[2]["video_s"] == 2 * by_scale[1]["video_s"]  # distinct videos, none folded
    assert all(r["cpu_s"] > 0 and r["video_h_per_cpu_h"] > 0 for r in by_scale.values())
    work = [r for r in rows if r["stage"] not in ("overall",)]
    assert all(r["process_s"] > 0 for r in work), "a stage reported no time inside process"
    assert all(r["rows_out"] > 0 for r in work)
    fits = {line["stage"]: line["exponent"] for line in lines if line.get("bench") == "throughput_scaling"}
    assert set(fits) == stages and all(isinstance(v, float) for v in fits.values())
    # The yardstick: a plain decode of the same inputs, and each run's CPU time as a multiple of it.
    yardstick = {line["scale"]: line for line in lines if line.get("bench") == "decode_yardstick"}
    assert set(yardstick) == {1, 2}
    for scale, line in yardstick.items():
        assert line["videos"] == by_scale[scale]["videos"] and line["cpu_s"] > 0
        assert line["frames"] == line["videos"] * 60  # 2 scenes x 3 s at 10 fps, every frame decoded
        assert line["video_s"] == pytest.approx(by_scale[scale]["video_s"], abs=0.2)
        overall = by_scale[scale]
        assert overall["decode_cpu_s"] == pytest.approx(line["cpu_s"], abs=0.002)
        cpu, dec = overall["cpu_s"], overall["decode_cpu_s"]  # rounded to 0.01 and 0.001 s
        low, high = (cpu - 0.005) / (dec + 0.0005), (cpu + 0.005) / (dec - 0.0005)
        assert low - 0.005 <= overall["x_decode"] <= high + 0.005  # the ratio of the unrounded values
