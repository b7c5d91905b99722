"""One set of engine options on every computing command: command line > environment > pipeline file.

Which value won is read off the engine's own one-line error: each source names a different
unreachable Spark master, and the engine checks the master before any JVM starts.
"""

from __future__ import annotations

import pytest
import yaml
from loopback_cluster import free_port
from typer.testing import CliRunner

from egocurate.cli.main import app
from egocurate.jobs.config import PipelineConfig, with_engine_options

runner = CliRunner()
CLEAN = {"EGOCURATE_ENGINE": None, "EGOCURATE_SPARK_MASTER": None, "EGOCURATE_RAY_ADDRESS": None,
         "EGOCURATE_SPARK_CONF": None}  # fmt: skip


def _pipeline(tmp_path, master: str) -> str:
    path = tmp_path / "p.yaml"
    config = {"catalog": str(tmp_path / "cat"), "sources": [str(tmp_path)], "engine": "local",
              "spark": {"master": master}, "stages": [{"name": "ingest"}]}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("winner", ["cli", "env", "file"])
def test_run_takes_cli_then_env_then_file(tmp_path, winner):
    masters = {name: f"spark://127.0.0.1:{free_port()}" for name in ("cli", "env", "file")}
    env = {**CLEAN, "EGOCURATE_ENGINE": "spark"}
    args = ["run", _pipeline(tmp_path, masters["file"])]
    if winner in ("cli", "env"):
        env["EGOCURATE_SPARK_MASTER"] = masters["env"]
    if winner == "cli":
        args += ["--spark-master", masters["cli"]]
    result = runner.invoke(app, args, env=env)
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: cannot reach the Spark master at {masters[winner]} ")
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


@pytest.mark.parametrize("command", ["ingest", "stats", "report"])
def test_every_computing_command_takes_the_engine_options(tmp_path, command, sample_videos):
    master = f"spark://127.0.0.1:{free_port()}"
    args = [command, *([str(sample_videos[0].parent)] if command == "ingest" else []), "-c", str(tmp_path)]
    if command != "ingest":  # stats and report need a catalog with clips; an empty clips table will do
        from egocurate.catalog import tables
        from egocurate.catalog.store import Catalog

        Catalog(tmp_path).ensure(tables.CLIPS)
    result = runner.invoke(app, [*args, "--engine", "spark", "--spark-master", master], env=CLEAN)
    assert result.exit_code == 2, result.output
    assert f"cannot reach the Spark master at {master}" in result.output


def test_cli_engine_overrides_every_stage_unless_locked():
    config = PipelineConfig(
        catalog="c", engine="ray",
        stages=[{"name": "ingest", "engine": "spark"},
                {"name": "shots", "engine": "ray", "engine_locked": True}],
    )  # fmt: skip
    forced = with_engine_options(config, engine="local", spark_conf={"spark.executor.memory": "1g"})
    assert forced.engine == "local"
    assert [s.engine for s in forced.stages] == [None, "ray"]
    assert forced.spark.conf == {"spark.executor.memory": "1g"}
    assert with_engine_options(config).stages[0].engine == "spark"  # nothing given: the file's choice
