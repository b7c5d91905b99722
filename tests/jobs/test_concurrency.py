"""Four real `egocurate run` processes on one catalog end with exactly the rows of one serial run.

They run overlapping and different stages (ingest, shots, quality) with `commit_every: 1`, so
every process makes many small commits that race the others'. Sources overlap and hold a byte
copy (one video, two uris: the ingest fold path) and a truncated file (the quarantine path).
The same test runs with the catalog on S3, served by moto's server on loopback (no bucket can be
reached from here); deltalake's commits use S3 conditional puts there, as on AWS.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from egocurate.catalog.store import Catalog
from egocurate.jobs.runners.loopback import beyond_loopback, listening

TABLES = {"videos": "video_id", "clips": "clip_id", "clip_quality": "clip_id", "quarantine": "uri"}
VOLATILE = {"time", "run_id"}


@pytest.fixture(scope="module")
def sources(tmp_path_factory, sample_videos, bad_files) -> dict[str, Path]:
    """Two overlapping source folders: a/ has 4 videos + a truncated file, b/ 3 of them + a byte copy."""
    root = tmp_path_factory.mktemp("conc_src")
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    data = sample_videos[0].read_bytes()
    for i in range(4):
        (a / f"take_{i}.mp4").write_bytes(data + f"egocurate-conc-{i}".encode())
    shutil.copy(bad_files["truncated"], a / "broken.mp4")
    for i in range(1, 4):
        shutil.copy(a / f"take_{i}.mp4", b / f"take_{i}.mp4")
    shutil.copy(a / "take_2.mp4", b / "copy_of_take_2.mp4")
    return {"a": a, "b": b}


def _pipeline(path: Path, catalog: str, sources: list[str], stages: list[str], options: dict) -> Path:
    params = {
        "ingest": {"batch_size": 1},
        "shots": {"detector": "fixed", "detector_params": {"window_s": 1.0}, "min_clip_s": 0.5},
        "quality": {"batch_size": 1},
    }
    config = {
        "catalog": catalog,
        "engine": "local",
        "sources": sources,
        "commit_every": 1,
        "progress": False,
        "storage_options": options,
        "stages": [{"name": s, "params": params[s]} for s in stages],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _run_all(tmp_path: Path, catalog: str, src: dict[str, Path], options: dict, plans: list) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    procs = []
    for i, (folders, stages) in enumerate(plans):
        yaml_path = _pipeline(
            tmp_path / f"p{i}.yaml", catalog, [str(src[f]) for f in folders], stages, options
        )
        procs.append(
            subprocess.Popen([sys.executable, "-m", "egocurate.cli.main", "run", str(yaml_path)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        )  # fmt: skip
        time.sleep(0.3)
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def _rows(catalog: Catalog, name: str) -> list[dict]:
    rows = catalog.read(name).to_pylist()
    return sorted(
        ({k: v for k, v in r.items() if k not in VOLATILE} for r in rows),
        key=lambda r: repr(sorted(r.items())),
    )


def _ledger(catalog: Catalog) -> list[tuple]:
    return sorted((r["stage"], r["key"]) for r in catalog.read("_ledger").to_pylist())


def _check_same(serial: Catalog, shared: Catalog) -> None:
    for name, key in TABLES.items():
        got = shared.read(name).column(key).to_pylist()
        assert len(got) == len(set(got)), f"{name}: duplicate {key}"
        assert _rows(shared, name) == _rows(serial, name), name
    ledger = _ledger(shared)
    assert len(ledger) == len(set(ledger)), "ledger: a (stage, key) recorded twice"
    assert ledger == _ledger(serial)


@pytest.fixture(scope="module")
def moto_s3():
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    assert host == "127.0.0.1"
    sockets = [s for s in listening() if s[1] == port]  # moto serves from a thread of this process
    assert sockets and not beyond_loopback(sockets), f"moto must listen on loopback only: {sockets}"
    with socket.create_connection((host, port), timeout=5):
        pass
    endpoint = f"http://{host}:{port}"
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket="lake")
    # No AWS_S3_ALLOW_UNSAFE_RENAME: commits must be conditional puts, or two writers could both
    # believe they wrote the same log version.
    yield {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
    }
    server.stop()


PLANS = [
    (["a", "b"], ["ingest", "shots", "quality"]),
    (["b", "a"], ["ingest", "shots", "quality"]),
    (["a"], ["ingest", "shots"]),
    (["b"], ["ingest", "quality"]),
]


@pytest.fixture(scope="module")
def serial(tmp_path_factory, sources) -> Catalog:
    """The reference: one run of every stage over both folders."""
    tmp = tmp_path_factory.mktemp("serial")
    _run_all(tmp, str(tmp / "catalog"), sources, {}, [(["a", "b"], ["ingest", "shots", "quality"])])
    catalog = Catalog(tmp / "catalog")
    assert catalog.count("videos") == 4 and catalog.count("quarantine") == 1
    assert catalog.count("clip_quality") == catalog.count("clips") >= 4
    return catalog


@pytest.mark.parametrize("where", ["local", "s3"])
def test_four_concurrent_runs_equal_one_serial_run(tmp_path, sources, serial, where, request):
    options = request.getfixturevalue("moto_s3") if where == "s3" else {}

    shared_root = str(tmp_path / "shared") if where == "local" else f"s3://lake/{tmp_path.name}"
    _run_all(tmp_path, shared_root, sources, options, PLANS)
    shared = Catalog(shared_root, storage_options=options)
    _check_same(serial, shared)
    # Many commits raced: each table has far more versions than one serial commit.
    assert shared.version("_ledger") > 10
