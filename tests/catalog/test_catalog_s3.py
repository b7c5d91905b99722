"""Object storage: discovery, probing and a Delta catalog on S3.

The S3 endpoint is moto's server on loopback: a real S3 protocol, since no bucket can be reached
from here. Everything else (s3fs, deltalake's object store, PyAV over fsspec) is the real code path.
"""

from __future__ import annotations

import pytest

from egocurate.catalog.query import sql
from egocurate.catalog.store import Catalog
from egocurate.ingest.discover import discover
from egocurate.jobs.pipeline import ingest


@pytest.fixture(scope="module")
def s3(sample_videos, bad_files):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    options = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
    }
    import s3fs

    from egocurate.storage import fsspec_options

    fs = s3fs.S3FileSystem(**fsspec_options(options))
    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket="videos")
    client.create_bucket(Bucket="lake")
    for path in sample_videos[:2]:
        fs.put(str(path), f"videos/raw/{path.name}")
    fs.put(str(bad_files["truncated"]), "videos/raw/broken.mp4")
    yield options
    server.stop()


def test_discover_and_ingest_from_s3_into_a_catalog_on_s3(s3):
    rows = discover(["s3://videos/raw/"], storage_options=s3)
    assert sorted(u.rsplit("/", 1)[-1] for u in rows.column("uri").to_pylist()) == [
        "broken.mp4", "clip_0.mp4", "clip_1.mp4",
    ]  # fmt: skip
    summary = ingest(["s3://videos/raw/"], "s3://lake/catalog", storage_options=s3, progress=False)
    assert (summary.rows_out, summary.quarantined) == (2, 1)
    catalog = Catalog("s3://lake/catalog", storage_options=s3)
    assert sorted(catalog.tables()) == ["_ledger", "quarantine", "videos"]
    videos = catalog.read("videos").to_pylist()
    assert {v["uri"] for v in videos} == {"s3://videos/raw/clip_0.mp4", "s3://videos/raw/clip_1.mp4"}
    assert all(v["probe_backend"] == "pyav" and v["num_frames"] == 40 for v in videos)
    assert sql(catalog, "SELECT error_kind FROM quarantine").to_pylist() == [{"error_kind": "truncated"}]
    again = ingest(["s3://videos/raw/"], "s3://lake/catalog", storage_options=s3, progress=False)
    assert again.rows_in == 0 and catalog.count("videos") == 2
