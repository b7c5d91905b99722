"""One Spark session per run: ingest on Spark and the statistics on Spark share it (one SparkContext,
one JVM), and the run stops it when it ends.

Run in a child process, so no session of this pytest process (the shared fixture) is reused; the
child checks that the JVM and its gateway listen on loopback only as the session starts, before any
stage sends work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, sys
import psutil
import pyspark

from egocurate.jobs.runners.loopback import beyond_loopback, listening

made, exposed, seen = [], [], []
original = pyspark.SparkContext._do_init
def spy(self, *args, **kwargs):
    made.append(1)
    out = original(self, *args, **kwargs)
    sockets = listening()
    seen.append(len(sockets))
    exposed.extend(beyond_loopback(sockets))  # the JVM and the gateway: before any stage's work
    if exposed:
        raise SystemExit(f"Spark listens beyond loopback: {exposed}")
    return out
pyspark.SparkContext._do_init = spy

from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline

stages = [{"name": "ingest", "params": {"batch_size": 2}}, {"name": "stats"}]
config = PipelineConfig(catalog=sys.argv[1], sources=[sys.argv[2]], engine="spark", progress=False,
                        stages=stages, spark={"master": "local[1]"})
summaries = run_pipeline(config)
jvms = [p for p in psutil.Process().children(recursive=True) if "java" in p.name()]
print(json.dumps({
    "contexts": len(made),
    "exposed": exposed,
    "sockets": seen,
    "stopped": pyspark.SparkContext._active_spark_context is None,
    "jvms": len(jvms),
    "stages": [(s.stage, s.engine) for s in summaries],
}))
"""


def test_a_run_uses_one_spark_session_for_every_spark_stage_and_stops_it(tmp_path, sample_videos):
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "catalog"), str(Path(sample_videos[0]).parent)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [name for name, _ in result["stages"]] == ["ingest", "stats"], result
    assert result["sockets"] and result["sockets"][0] >= 1, result  # the check saw the JVM's sockets
    assert result["exposed"] == [], result  # checked as the session started, before any work
    assert result["contexts"] == 1, result  # ingest and the statistics ran in the same session
    assert result["jvms"] == 1, result  # one JVM for the run, not one per Spark stage
    assert result["stopped"], result  # the run stopped the session it made
