"""``benchmarks/gpu_check.py --device cpu --tiny``: the device benchmark's own code, on CPU, in CI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
ABSENT_ON_DEVICE = ("ray", "faiss", "diffusers", "open_clip", "av", "decord", "deltalake")


def test_tiny_cpu_run_prints_one_result_line_per_benchmark():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--tiny"],
        capture_output=True, text=True, timeout=600, env={"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    lines = {r["bench"]: r for r in map(json.loads, done.stdout.splitlines())}
    expected = {"lam", "wan_vae", "clip_b32", "clip_l14", "transnetv2", "dedup_torch", "dedup_faiss"}
    assert expected <= set(lines), lines
    for name in expected:
        assert lines[name]["value"] > 0 and lines[name]["unit"].endswith("/s"), lines[name]
    # The GPU (torch) and CPU (FAISS) within-cluster searches find the same nearest similarities.
    assert lines["dedup_faiss"]["max_abs_diff"] < 1e-4


def test_module_imports_nothing_the_device_lacks():
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('gpu_check', {str(SCRIPT)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(sorted(m for m in {ABSENT_ON_DEVICE!r} if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
