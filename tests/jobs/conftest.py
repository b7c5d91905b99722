"""Shared by the cluster tests: a few real recordings, the pipeline they run, and its local result."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from loopback_cluster import VIDEOS, write_pipeline

from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline


@pytest.fixture(scope="session")
def cluster_sources(shared_data, tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("cluster_src")
    for path in sorted(shared_data.glob("*.mp4"), key=lambda p: p.stat().st_size)[:VIDEOS]:
        (src / path.name).symlink_to(path)
    return src


@pytest.fixture(scope="session")
def cluster_reference(cluster_sources, tmp_path_factory) -> Path:
    """The catalog of a local run of the cluster pipeline: what every cluster run must equal."""
    catalog = tmp_path_factory.mktemp("cluster_local") / "catalog"
    pipeline = write_pipeline(catalog.parent / "local.yaml", catalog, cluster_sources)
    run_pipeline(PipelineConfig(**yaml.safe_load(pipeline.read_text())))
    return catalog
