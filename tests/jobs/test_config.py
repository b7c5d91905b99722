"""Pipeline config validation and the `egocurate` command line, end to end on real files."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from egocurate.catalog.store import Catalog
from egocurate.cli.main import app
from egocurate.jobs.config import ConfigError, load_config
from egocurate.jobs.registry import build_stage

runner = CliRunner()


def _write(tmp_path, data) -> str:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_bad_engine_names_field_and_allowed_values(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, {"catalog": "cat", "engine": "dask"}))
    message = str(err.value)
    assert "engine" in message and "'local', 'ray' or 'spark'" in message and "dask" in message


def test_unknown_stage_and_bad_stage_params_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"stages\.0\.name.*unknown stage 'probe'.*allowed: .*ingest"):
        load_config(_write(tmp_path, {"catalog": "cat", "stages": [{"name": "probe"}]}))
    with pytest.raises(ValueError, match=r"stage 'ingest'.*backend.*'auto', 'ffprobe' or 'pyav'.*got 'gst'"):
        build_stage("ingest", {"backend": "gst"})
    with pytest.raises(ValueError, match=r"batch_size.*valid integer"):
        build_stage("ingest", {"batch_size": "many"})
    with pytest.raises(ValueError, match=r"bogus.*Extra inputs"):
        build_stage("ingest", {"bogus": 1})


def test_bad_numbers_and_yaml_are_reported(tmp_path):
    with pytest.raises(ConfigError, match=r"commit_every.*greater than or equal to 1"):
        load_config(_write(tmp_path, {"catalog": "cat", "commit_every": 0}))
    bad = tmp_path / "bad.yaml"
    bad.write_text("catalog: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="stage 'ingest': batch_size must be >= 1"):
        build_stage("ingest", {"batch_size": 0})


def test_relative_paths_resolve_against_the_config_file(tmp_path):
    config = load_config(_write(tmp_path, {"catalog": "cat", "sources": ["videos/", "s3://b/k"]}))
    assert config.catalog == str(tmp_path / "cat")
    assert config.sources == [str(tmp_path / "videos"), "s3://b/k"]


def test_cli_ingest_catalog_commands_and_run(tmp_path, sample_videos, bad_files):
    cat = str(tmp_path / "cat")
    src = [str(sample_videos[0]), str(sample_videos[1]), str(bad_files["unreadable"])]
    result = runner.invoke(app, ["ingest", *src, "--catalog", cat, "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "rows" in result.output and "quarantined" in result.output

    result = runner.invoke(app, ["catalog", "tables", "--catalog", cat])
    assert result.exit_code == 0 and "videos" in result.output and "quarantine" in result.output

    result = runner.invoke(app, ["catalog", "sql", "SELECT error_kind, uri FROM quarantine", "--catalog", cat,
                                 "--format", "json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["error_kind"] for line in result.output.splitlines()] == ["unreadable"]

    result = runner.invoke(app, ["catalog", "show", "videos", "--catalog", cat, "--format", "csv"])
    assert result.exit_code == 0 and result.output.count("\n") == 3  # header + 2 rows

    result = runner.invoke(app, ["catalog", "history", "videos", "--catalog", cat])
    assert result.exit_code == 0 and "ingest" in result.output

    result = runner.invoke(app, ["catalog", "sql", "SELEC nonsense", "--catalog", cat])
    assert result.exit_code == 2 and "SQL error" in result.output

    pipeline = _write(tmp_path, {"catalog": "cat", "sources": [str(sample_videos[2])], "progress": False,
                                 "stages": [{"name": "ingest", "params": {"backend": "pyav"}}]})  # fmt: skip
    result = runner.invoke(app, ["run", pipeline])
    assert result.exit_code == 0, result.output
    assert Catalog(cat).count("videos") == 3

    result = runner.invoke(app, ["ingest", str(sample_videos[0]), "--catalog", cat, "--engine", "dask"])
    assert result.exit_code != 0 and "dask" in result.output


def test_a_stage_names_the_input_column_it_lacks_before_any_work(tmp_path):
    import pyarrow as pa

    from egocurate.catalog.store import Catalog
    from egocurate.jobs.driver import run_stage
    from egocurate.jobs.runners.local import LocalEngine

    stage = build_stage("quality", {})
    rows = pa.table({"clip_id": ["c1"], "start_frame": [0], "end_frame": [10]})  # no `uri`
    cat = Catalog(tmp_path / "cat")
    with pytest.raises(ValueError, match=r"stage 'quality' reads column\(s\) \['uri'\]"):
        run_stage(stage, rows, cat, LocalEngine(), progress=False)
    assert "clip_quality" not in cat.tables()  # failed before touching the catalog


def test_pipeline_resources_override_the_stage_declaration(tmp_path):
    from egocurate.jobs.stage import Resources

    stage = build_stage("quality", {"batch_size": 8})
    assert stage.resources == Resources(cpus=1.0, batch_size=8)
    assert stage.resources.with_(batch_size=3, cpus=None).batch_size == 3
    with pytest.raises(ValueError, match="unknown resource keys"):
        stage.resources.with_(gpu=1)
    config = load_config(
        _write(tmp_path, {"catalog": "cat", "stages": [{"name": "quality", "resources": {"cpus": 2}}]})
    )
    assert config.stages[0].resources == {"cpus": 2}
