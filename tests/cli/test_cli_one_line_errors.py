"""Issue 23: more user errors are one `error:` line on stderr and exit 2 (``--debug``: the traceback).

Bad manifest lines, an unknown embed model, object storage without a bucket or credentials, and
SQL that would write files all run through the real command (`python -m egocurate.cli.main`, the
console entry point with its error mapping). S3 is moto's server on loopback, never AWS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from egocurate.testing.catalog import build_sample_catalog

# Where a client without credentials would ask for instance credentials: a closed loopback port.
NO_METADATA = "http://127.0.0.1:9"


def _env(**extra: str) -> dict[str, str]:
    """This environment without any AWS setting, and no way to find credentials elsewhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        HF_HUB_OFFLINE="1",
        AWS_SHARED_CREDENTIALS_FILE="/nonexistent/credentials",
        AWS_CONFIG_FILE="/nonexistent/config",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_METADATA_ENDPOINT=NO_METADATA,  # deltalake's object store has no "disabled" switch
    )
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "egocurate.cli.main", *args], capture_output=True, text=True,
                          env=env or _env(), timeout=120)  # fmt: skip


def _one_error_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, and stderr is exactly one ``error: ...`` line holding every needle."""
    text = done.stdout + done.stderr
    assert done.returncode == 2, text
    assert "Traceback" not in text and "╭" not in text, text
    assert "error:" not in done.stdout, text
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    for needle in needles:
        assert needle in lines[0], text
    return lines[0]


# ------------------------------------------------------------------------------------ stderr
def test_the_error_line_goes_to_stderr(tmp_path):
    missing = tmp_path / "no_catalog"
    done = _cli("catalog", "tables", "-c", str(missing))
    _one_error_line(done, "no catalog at", str(missing))
    assert done.stdout == ""


def test_the_error_line_goes_to_stderr_in_process(tmp_path):
    from egocurate.cli.main import app

    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(app, ["ingest", str(tmp_path / "empty"), "-c", str(tmp_path / "c")])
    assert result.exit_code == 2
    assert result.stdout == "" and result.stderr.startswith("error: no video found"), result.output


# ---------------------------------------------------------------------------------- manifests
def test_a_manifest_line_that_is_not_an_object(tmp_path):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"uri": "a.mp4"}\n\n[1, 2]\n')
    args = ("ingest", str(manifest), "-c", str(tmp_path / "c"), "--no-progress")
    _one_error_line(_cli(*args), f"{manifest}:3", "JSON object", "list")
    debug = _cli("--debug", *args)
    assert debug.returncode != 0 and "Traceback" in debug.stderr, debug.stdout + debug.stderr


@pytest.mark.parametrize("key", ["uri", "path"])
def test_a_numeric_uri_is_an_error_naming_its_line(tmp_path, key):
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(f'{{"uri": "a.mp4"}}\n{{"{key}": 5}}\n')
    _one_error_line(
        _cli("ingest", str(manifest), "-c", str(tmp_path / "c"), "--no-progress"),
        f"{manifest}:2",
        f"'{key}'",
        "5",
    )


def test_numeric_split_dataset_and_task_are_read_as_text(tmp_path):
    from egocurate.ingest.discover import discover

    manifest = tmp_path / "m.jsonl"
    rows = [
        {"uri": "a.mp4", "split": 1, "dataset": 2, "task": 3, "score": 0.5},
        {"uri": "b.mp4", "split": 1.5, "dataset": True},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    got = discover([str(manifest)]).to_pylist()
    got_text = [(r["split"], r["dataset"], r["task_text"]) for r in got]
    assert got_text == [("1", "2", "3"), ("1.5", "true", None)]
    assert json.loads(got[0]["extra_json"]) == {"score": 0.5}


# ------------------------------------------------------------------------------- embed model
def test_an_unknown_embed_model_is_one_line(tmp_path):
    build_sample_catalog(tmp_path, videos=1, seconds=2.0, latents=False, tokenizer_latents=False)
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"catalog: {tmp_path / 'catalog'}\nprogress: false\nstages:\n"
                        "  - name: embed\n    params: {model: ViT-B-33, pretrained: null}\n")  # fmt: skip
    line = _one_error_line(_cli("run", str(pipeline)), "unknown embed model 'ViT-B-33'", "ViT-B-32")
    assert len(line) < 400, line


# ------------------------------------------------------------------------------------- S3
@pytest.fixture(scope="module")
def s3(tmp_path_factory) -> dict[str, str]:
    """A moto S3 server on loopback with one bucket, `lake`, holding a video and a manifest."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"  # never anything but loopback
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket="lake")
    client.put_object(Bucket="lake", Key="raw/take.mp4", Body=b"not really a video")
    client.put_object(Bucket="lake", Key="m.jsonl", Body=b'{"uri": "raw/take.mp4"}\n')
    yield {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
    server.stop()


def _with_keys(s3: dict[str, str]) -> dict[str, str]:
    return _env(**s3, AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")


def test_a_catalog_in_a_missing_bucket(s3, tmp_path):
    env = _with_keys(s3)
    url = "s3://no-such-bucket/cat"
    _one_error_line(_cli("catalog", "sql", "SELECT count(*) FROM videos", "-c", url, env=env),
                    "bucket 'no-such-bucket' does not exist", url)  # fmt: skip
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    _one_error_line(_cli("ingest", str(video), "-c", url, "--no-progress", env=env),
                    "bucket 'no-such-bucket' does not exist", url)  # fmt: skip


def test_a_source_in_a_missing_bucket(s3, tmp_path):
    env = _with_keys(s3)
    for url in ("s3://no-such-bucket/raw/", "s3://no-such-bucket/m.jsonl"):
        _one_error_line(_cli("ingest", url, "-c", str(tmp_path / "c"), "--no-progress", env=env),
                        "bucket 'no-such-bucket' does not exist", url)  # fmt: skip


def test_no_credentials_for_a_catalog(s3):
    env = _env(**s3)
    url = "s3://lake/cat"
    _one_error_line(_cli("catalog", "tables", "-c", url, env=env), "no credentials", url)
    _one_error_line(_cli("catalog", "sql", "SELECT 1", "-c", url, env=env), "no credentials", url)


def test_no_credentials_for_a_source(s3, tmp_path):
    env = _env(**s3)
    for url in ("s3://lake/raw/", "s3://lake/m.jsonl"):
        _one_error_line(_cli("ingest", url, "-c", str(tmp_path / "c"), "--no-progress", env=env),
                        "no credentials", url)  # fmt: skip
    debug = _cli("--debug", "ingest", "s3://lake/raw/", "-c", str(tmp_path / "c"), env=env)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "NoCredentialsError" in debug.stderr


def _raised(exc: BaseException, cause: BaseException | None = None) -> BaseException:
    """`exc` as raised from `cause` (its traceback and chain set as Python sets them)."""
    try:
        raise exc from cause
    except BaseException as done:  # noqa: BLE001
        return done


def test_storage_errors_are_worded_and_others_left_alone():
    from botocore.exceptions import ClientError, NoCredentialsError
    from urllib3.exceptions import ReadTimeoutError

    from egocurate.storage import storage_error

    missing = ClientError({"Error": {"Code": "NoSuchBucket", "BucketName": "gone"}}, "ListObjectsV2")
    store = OSError("Kernel error -> Generic S3 error\n  ↳ tcp connect error\n  ↳ Connection refused")
    assert storage_error(NoCredentialsError(), ["./local", "s3://lake/cat"]).startswith(
        "no credentials for s3://lake/cat: set AWS_ACCESS_KEY_ID"
    )
    no_bucket = _raised(FileNotFoundError("gone/x"), missing)
    assert storage_error(no_bucket, ["s3://lake/x", "s3://gone/raw/"]) == (
        "bucket 'gone' does not exist: s3://gone/raw/"
    )
    assert storage_error(_raised(RuntimeError("table in s3://lake/cat cannot be read"), store)).startswith(
        "cannot reach the object store of s3://lake/cat"
    )
    local = [FileNotFoundError(2, "No such file", "/x"), ReadTimeoutError(None, "/", "read timed out"),
             OSError("Generic LocalFileSystem error: no such file"), ValueError("s3://a/b")]  # fmt: skip
    assert [storage_error(exc, ["s3://lake/cat"]) for exc in local] == [None] * len(local)


# ---------------------------------------------------------------------------- progress timeout
@pytest.fixture
def captured_config(monkeypatch) -> list:
    """The configs `run`/`ingest` would run (nothing runs)."""
    import egocurate.cli.run as run_cli

    seen: list = []
    monkeypatch.setattr(run_cli, "run_pipeline", lambda config, console: seen.append(config))
    return seen


def test_progress_timeout_command_line_then_environment_then_file(tmp_path, captured_config):
    from egocurate.cli.main import app

    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"catalog: {tmp_path / 'c'}\nray: {{progress_timeout_s: 100}}\n"
                        "spark: {progress_timeout_s: 100}\nstages: [{name: ingest}]\n")  # fmt: skip
    runner = CliRunner()
    env = {"EGOCURATE_PROGRESS_TIMEOUT": "7"}
    for args, environ, expected in [
        ([], {}, 100.0),
        ([], env, 7.0),
        (["--progress-timeout", "3"], env, 3.0),
    ]:
        result = runner.invoke(app, ["run", str(pipeline), *args], env=environ)
        assert result.exit_code == 0, result.output
        config = captured_config.pop()
        assert (config.ray.progress_timeout_s, config.spark.progress_timeout_s) == (expected, expected)
    result = runner.invoke(app, ["ingest", str(tmp_path), "-c", str(tmp_path / "c")], env=env)
    assert result.exit_code == 0 and captured_config.pop().ray.progress_timeout_s == 7.0, result.output


def test_the_progress_timeout_message_names_every_setting():
    from egocurate.jobs.runners.ray import progress_timeout_hint

    hint = progress_timeout_hint()
    assert all(k in hint for k in ("--progress-timeout", "EGOCURATE_PROGRESS_TIMEOUT", "progress_timeout_s"))


# -------------------------------------------------------------------------------- read-only SQL
@pytest.fixture(scope="module")
def small_catalog(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ro")
    build_sample_catalog(root, videos=1, seconds=2.0, latents=True, tokenizer_latents=False)
    return root / "catalog"


def test_catalog_sql_cannot_write_files(small_catalog, tmp_path):
    target = tmp_path / "x.csv"
    _one_error_line(_cli("catalog", "sql", f"COPY (SELECT 1) TO '{target}'", "-c", str(small_catalog)),
                    "SQL error", "disabled")  # fmt: skip
    assert not target.exists()
    done = _cli("catalog", "sql", "SELECT count(*) AS n FROM clip_view WHERE keep", "-c", str(small_catalog),
                "--format", "json")  # fmt: skip
    assert done.returncode == 0 and json.loads(done.stdout) == {"n": 2}, done.stdout + done.stderr


@pytest.mark.parametrize(
    "statement",
    [
        "COPY (SELECT 1) TO '{dir}/a.csv'",
        "COPY videos TO '{dir}/b.parquet' (FORMAT parquet)",
        "ATTACH '{dir}/c.db' AS c",
        "EXPORT DATABASE '{dir}/d'",
        "SET enable_external_access = true",
    ],
)
def test_sql_over_the_catalog_is_read_only(small_catalog, tmp_path, statement):
    import duckdb

    from egocurate.catalog.query import sql
    from egocurate.catalog.store import Catalog

    catalog = Catalog(small_catalog, create=False)
    with pytest.raises(duckdb.Error):
        sql(catalog, statement.format(dir=tmp_path))
    assert list(tmp_path.iterdir()) == []
    assert sql(catalog, "SELECT count(*) AS n FROM videos").to_pylist() == [{"n": 1}]
    assert sql(catalog, "SELECT count(*) AS n FROM clip_latents").to_pylist() == [{"n": 2}]
