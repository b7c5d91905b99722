"""Warm Ray actors: one run keeps its actors from stage to stage of the same resource shape.

The actors that ran ingest run shots too (no new process, no second import of the stage code), the
rows equal a local run, a stage of another shape releases them, and ``close()`` kills them all.
"""

from __future__ import annotations

import math

import pytest

from egocurate.catalog.store import Catalog
from egocurate.jobs.driver import run_stage
from egocurate.jobs.inputs import build_inputs
from egocurate.jobs.registry import build_stage
from egocurate.jobs.runners.local import LocalEngine
from egocurate.jobs.runners.ray_pool import shape_of


@pytest.fixture
def warm_engine(ray_engine):
    """An engine that keeps its actors warm, on the session's local Ray (2 CPUs); closed after the test."""
    from egocurate.jobs.runners.ray import RayEngine

    engine = RayEngine(keep_warm=True, progress_timeout=120)
    yield engine
    engine.close()


SHOTS = {"detector": "content", "min_clip_s": 1.0, "max_clip_s": 20.0, "batch_size": 1}


def _ingest_then_shots(engine, catalog: Catalog, sources: list[str]) -> list[dict]:
    """Ingest, then shots, on one engine; the last stats of each stage."""
    stats = []
    for name, params, inputs in (("ingest", {"batch_size": 1}, "discovered"), ("shots", SHOTS, "videos")):
        rows = build_inputs(inputs, catalog, sources)
        run_stage(build_stage(name, params), rows, catalog, engine, commit_every=1, progress=False)
        stats.append(dict(getattr(engine, "last_stats", {})))
    return stats


def _dies(actor, within_s: float = 60.0) -> bool:
    """True once calls to `actor` fail as a dead actor's (a kill lands asynchronously)."""
    import time

    import ray

    end = time.monotonic() + within_s
    while time.monotonic() < end:
        try:
            ray.get(actor.node.remote(), timeout=10)
        except ray.exceptions.RayActorError:
            return True
        time.sleep(0.5)
    return False


def _clips(catalog: Catalog) -> list[tuple]:
    rows = catalog.read("clips").sort_by("clip_id").to_pylist()
    assert rows, "shots produced no clips"
    return [(r["clip_id"], r["video_id"], r["start_frame"], r["end_frame"]) for r in rows]


def test_shots_runs_on_the_actors_ingest_started(tmp_path, sample_videos, warm_engine):
    sources = [str(p) for p in sample_videos]
    local = Catalog(tmp_path / "local")
    _ingest_then_shots(LocalEngine(), local, sources)
    catalog = Catalog(tmp_path / "ray")
    ingest, shots = _ingest_then_shots(warm_engine, catalog, sources)
    assert ingest["actors"] >= 1 and ingest["reused"] == 0, ingest
    assert shots["actors"] == 0 and shots["reused"] == shots["pool"] >= 1, shots
    assert _clips(catalog) == _clips(local)
    assert catalog.read("videos").num_rows == local.read("videos").num_rows == len(sample_videos)


def test_a_stage_of_another_shape_releases_the_warm_actors(tmp_path, sample_videos, warm_engine):

    catalog = Catalog(tmp_path / "cat")
    rows = build_inputs("discovered", catalog, [str(sample_videos[0])])
    one_cpu = build_stage("ingest", {"batch_size": 1})
    run_stage(one_cpu, rows, catalog, warm_engine, progress=False)
    warm = list(warm_engine.pools.pools[shape_of(one_cpu.resources)])
    assert warm
    two_cpus = build_stage("ingest", {"batch_size": 1})
    two_cpus.resources = two_cpus.resources.with_(cpus=2)
    run_stage(two_cpus, build_inputs("discovered", Catalog(tmp_path / "b"), [str(sample_videos[1])]),
              Catalog(tmp_path / "b"), warm_engine, progress=False)  # fmt: skip
    assert list(warm_engine.pools.pools) == [shape_of(two_cpus.resources)]
    assert warm_engine.last_stats["actors"] == 1
    assert all(_dies(actor) for actor in warm)  # released: they hold no CPU the two-CPU actor needs


def test_close_kills_every_actor_of_the_run(tmp_path, sample_videos, warm_engine):
    import ray

    catalog = Catalog(tmp_path / "cat")
    rows = build_inputs("discovered", catalog, [str(sample_videos[0])])
    run_stage(build_stage("ingest", {"batch_size": 1}), rows, catalog, warm_engine, progress=False)
    actors = [a for pool in warm_engine.pools.pools.values() for a in pool]
    assert actors
    warm_engine.close()  # it joined the session's Ray: close() ends its actors and keeps Ray up
    assert ray.is_initialized() and not warm_engine.pools.pools
    assert all(_dies(actor) for actor in actors)


def test_without_keep_warm_a_stage_ends_its_actors(tmp_path, sample_videos, ray_engine):
    """The default (a direct engine, as the session fixture): nothing idle holds the cluster's CPUs."""
    catalog = Catalog(tmp_path / "cat")
    rows = build_inputs("discovered", catalog, [str(sample_videos[0])])
    run_stage(build_stage("ingest", {"batch_size": 1}), rows, catalog, ray_engine, progress=False)
    assert ray_engine.last_stats["actors"] >= 1 and not ray_engine.pools.pools.get((1.0, 0.0, None))


def test_release_frees_one_cpu_for_ray_tasks_and_keeps_the_rest_warm(tmp_path, sample_videos, warm_engine):
    """A corpus stage's Ray tasks (dedup) need a CPU: the run frees one and keeps the other actor."""
    import ray

    catalog = Catalog(tmp_path / "cat")
    rows = build_inputs("discovered", catalog, [str(p) for p in sample_videos])
    run_stage(build_stage("ingest", {"batch_size": 1}), rows, catalog, warm_engine, progress=False)
    from egocurate.jobs.runners.ray_pool import alive_capacity

    held = sum(len(pool) for pool in warm_engine.pools.pools.values())
    assert held >= 1  # warm actors after the stage (two when the second one started in time)
    free = alive_capacity().free.get("CPU", 0.0)
    warm_engine.release(cpus=1.0)
    kills = max(0, math.ceil(1.0 - free))  # one actor when both CPUs were held, none otherwise
    assert sum(len(pool) for pool in warm_engine.pools.pools.values()) == held - kills

    @ray.remote(num_cpus=1)
    def one() -> int:
        return 1

    assert ray.get(one.remote(), timeout=120) == 1  # it would wait forever behind two idle actors
