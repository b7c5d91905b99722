"""The shot benchmark's scoring (1:1 matching) and its generator's plan (benchmarks/shots*.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location(f"egocurate_bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


shots_bench = _load("shots")
bench_data = _load("shot_bench_data")


def cut(f: int) -> dict:
    return {"kind": "cut", "start": f, "end": f}


def grad(s: int, e: int, kind: str = "dissolve") -> dict:
    return {"kind": kind, "start": s, "end": e}


def test_cuts_match_within_two_frames_one_to_one():
    truth = [cut(100), cut(200)]
    preds = [cut(102), cut(99), cut(203)]  # 102 and 99 both near 100: only one may count
    c = shots_bench.score(preds, truth)
    assert c["cut"] == {"tp": 1, "fn": 1, "fp": 2}


def test_gradual_transitions_match_by_overlap_and_points_count_as_cuts():
    truth = [grad(50, 80), grad(200, 230, "fade"), cut(300)]
    preds = [cut(65), grad(225, 240, "gradual"), grad(298, 301, "dissolve"), cut(120)]
    c = shots_bench.score(preds, truth)
    assert c["gradual"] == {"tp": 2, "fn": 0, "fp": 0}
    assert c["cut"] == {"tp": 1, "fn": 0, "fp": 1}  # the stray point at 120 is a false cut
    assert shots_bench.prf(c["cut"]) == {"precision": 0.5, "recall": 1.0, "f1": 0.6667}


def test_matching_prefers_more_matches_over_closer_ones():
    truth = [cut(10), cut(13)]
    preds = [cut(11), cut(15)]  # greedy-by-distance would pair 11-10 ... the assignment pairs both
    assert len(shots_bench.match(preds, truth)) == 2


def test_generator_plans_non_overlapping_transitions():
    sources = [bench_data.Source(f"s{i}", Path(f"/nonexistent/{i}.mp4"), [(0, 200)]) for i in range(4)]
    rng = np.random.default_rng(0)
    plan = bench_data.plan_video(rng, sources, seconds=60.0)
    assert plan[0]["transition"] is None
    for prev, seg in zip(plan, plan[1:], strict=False):
        assert seg["source"] != prev["source"]  # consecutive segments come from different recordings
        length = seg["src_end"] - seg["src_start"]
        assert 40 <= length <= 180
        if seg["transition"] in ("dissolve", "fade"):
            assert 15 <= seg["transition_frames"] <= 45
            assert seg["transition_frames"] <= (prev["src_end"] - prev["src_start"]) - 15
