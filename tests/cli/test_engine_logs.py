"""Ray's and Spark's own output goes to <catalog>/_logs/, not the terminal, unless --verbose.

Runs the real console command in a subprocess: the routing moves file descriptor 2, which only the
console entry point does (an in-process ``app`` call never touches the test's own descriptors).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from egocurate.testing.catalog import build_sample_catalog

# What the JVM prints at start whatever the log level (Spark's log4j banner), and Spark's WARN lines.
ENGINE_LINE = ("log4j", " WARN ", "NativeCodeLoader", "Setting default log level")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return build_sample_catalog(
        tmp_path_factory.mktemp("engine_logs"), videos=1, seconds=2.0, tokenizer_latents=False
    )


def _stats(catalog_root: str, *flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("EGOCURATE_VERBOSE", None)
    command = [sys.executable, "-m", "egocurate.cli.main", *flags, "stats", "--catalog", catalog_root]
    return subprocess.run(
        [*command, "--engine", "spark", "--no-store"], capture_output=True, text=True, env=env, timeout=300
    )


def _logs(catalog_root: str) -> list[str]:
    folder = os.path.join(catalog_root, "_logs")
    return sorted(os.listdir(folder)) if os.path.isdir(folder) else []


def test_engine_output_goes_to_the_catalog_log_and_verbose_shows_it(catalog):
    quiet = _stats(catalog.root)
    assert quiet.returncode == 0, quiet.stderr[-2000:]
    terminal = quiet.stdout + quiet.stderr
    assert not [m for m in ENGINE_LINE if m in terminal], terminal[-2000:]
    assert "statistics (spark)" in quiet.stdout  # the command's own output still shows
    (name,) = _logs(catalog.root)
    assert name.endswith("-engines.log")
    with open(os.path.join(catalog.root, "_logs", name)) as log:
        logged = log.read()
    assert "log4j" in logged, logged[:2000]

    loud = _stats(catalog.root, "--verbose")
    assert loud.returncode == 0, loud.stderr[-2000:]
    assert "log4j" in loud.stdout + loud.stderr
    assert _logs(catalog.root) == [name]  # --verbose writes no log file
