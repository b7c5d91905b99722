"""The IDM probe's tiny mode runs end to end and prints one comparable line per labeller."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def test_idm_probe_tiny_prints_the_comparison_table(tmp_path):
    run = subprocess.run(
        [sys.executable, str(BENCH / "idm_probe.py"), "--tiny", "--data-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=True,
    )  # fmt: skip
    lines = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    train = next(line for line in lines if line["metric"] == "idm_train")
    assert train["steps"] == 20 and train["cpu_s"] <= 900
    table = {(line["labeller"], line["model"]): line for line in lines if line["metric"] == "action_r2"}
    assert set(table) == {
        ("idm", "trained"), ("idm", "random_init"), ("copy_last_action", "baseline"),
        ("lam_linear_probe", "trained"), ("lam_linear_probe", "random_init"),
    }  # fmt: skip
    for line in table.values():
        assert set(line["r2"]) == {"ee_dx", "ee_dy"} and all(math.isfinite(v) for v in line["r2"].values())
        assert 0.0 <= line["gripper_accuracy"] <= 1.0 and line["transitions"] == 30
    assert table[("idm", "trained")]["stored_mae"] >= 0
