"""The Ray engine: a pool of stage actors sized from what the cluster has free, fed batch by batch.

Each actor calls ``stage.setup()`` once (models load once per worker), then writes Parquet parts
for its batches; only manifests come back to the driver, which commits them.

Why plain actors and not Ray Data: Ray Data's ``repartition`` and its task-based steps wait for
CPUs that the actor pool already holds, so on a cluster with one free CPU (the state after a
worker node dies) a stage hung forever. Here nothing of ours waits on CPUs our actors hold:

- before a stage starts, its ``resources`` are compared with every alive node; a stage no node
  can hold fails at once (:class:`~egocurate.jobs.runners.EngineError`);
- the pool is sized from the *free* resources, at least one actor, so a stage runs on whatever
  remains, down to one node with one CPU;
- a stage with ``has_prepare`` (CPU decode feeding GPU actors, see ``egocurate.stage_base``) gets
  ``prepare`` run as Ray tasks only when CPUs are left over beyond the actors; otherwise each actor
  prepares its own batches (``process`` accepts unprepared rows);
- an actor lost with its node is replaced by the engine and its batches are resubmitted (Ray's own
  ``max_restarts`` stays 0: an actor restarted by Ray would need its constructor arguments, which
  live in the object store and may have died with the node);
- when no batch finishes for ``progress_timeout`` seconds the stage ends with a clear error; what
  the driver committed stays, so a rerun resumes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections import deque
from collections.abc import Iterator

import pyarrow as pa

from egocurate.catalog.store import Catalog
from egocurate.jobs import engine_logs
from egocurate.jobs.runners import EngineError
from egocurate.jobs.runners.loopback import beyond_loopback, listening
from egocurate.jobs.stage import Resources, Stage
from egocurate.jobs.worker import run_on_worker, timed_prepare

DEFAULT_PROGRESS_TIMEOUT_S = 300.0
MAX_ATTEMPTS = 3  # tries per batch when workers or nodes die under it
IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: an actor never waits for the driver


def progress_timeout_hint() -> str:
    """Where the progress limit comes from, first match wins (said in the timeout's error)."""
    return (
        "--progress-timeout, else EGOCURATE_PROGRESS_TIMEOUT, else the pipeline file's "
        "ray/spark progress_timeout_s sets the limit"
    )


class _StageActor:
    """One worker of a stage: sets the stage up once, then runs batches (and prepares them if told)."""

    def __init__(self, stage: Stage, root: str, storage_options: dict | None):
        self.stage, self.root, self.storage_options = stage, root, storage_options
        self.stage.setup()

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def __call__(self, batch: pa.Table, prepare: bool = False) -> pa.Table:
        if prepare:
            batch = timed_prepare(self.stage, batch)
        return run_on_worker(self.stage, batch, self.root, self.storage_options)


def _prepare(stage: Stage, batch: pa.Table) -> pa.Table:
    return timed_prepare(stage, batch)


def _fits(res: Resources, node: dict[str, float]) -> bool:
    if node.get("CPU", 0.0) < res.cpus or node.get("GPU", 0.0) < res.gpus:
        return False
    return not res.memory_gb or node.get("memory", 0.0) >= res.memory_gb * 2**30


def _describe(res: Resources) -> str:
    text = f"cpus={res.cpus:g}, gpus={res.gpus:g}"
    return text + (f", memory={res.memory_gb:g} GiB" if res.memory_gb else "")


def placement_error(stage_name: str, res: Resources, nodes: list[dict]) -> str | None:
    """Why no alive node can ever hold one worker of the stage, or None when one can.

    `nodes` are ``ray.nodes()`` entries; only alive ones count.
    """
    alive = [n for n in nodes if n.get("Alive")]
    if any(_fits(res, n.get("Resources", {})) for n in alive):
        return None
    have = "; ".join(
        f"{n.get('NodeManagerAddress', '?')} cpus={n['Resources'].get('CPU', 0):g} "
        f"gpus={n['Resources'].get('GPU', 0):g} memory={n['Resources'].get('memory', 0) / 2**30:.1f} GiB"
        for n in alive
    )
    return (
        f"stage {stage_name!r} cannot be placed on the Ray cluster: one worker needs {_describe(res)}, "
        f"but the cluster has {len(alive)} alive node(s){': ' + have if have else ''}"
    )


def _check_reachable(address: str) -> None:
    """Fail in seconds when nothing listens at a ``host:port`` address (ray.init would retry for long)."""
    if address in ("auto", "local") or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"--ray-address wants host:port (or auto, ray://...), got {address!r}")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as exc:
        raise EngineError(
            f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}); set --ray-address or "
            "EGOCURATE_RAY_ADDRESS to the head node's host:port (see `ray status` on the head)"
        ) from None


@contextlib.contextmanager
def _held_stderr():
    """Hold what is written to file descriptor 2 (C++ included) and replay it, unless told to drop it."""
    import tempfile

    sys.stderr.flush()
    saved = os.dup(2)
    held: dict = {"drop": False}
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield held
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            if not held["drop"]:  # back to descriptor 2: the terminal, or the engine log if routed
                tmp.seek(0)
                os.write(2, tmp.read())


def _connect_error(address: str | None, exc: BaseException) -> str:
    """One line for a failed ``ray.init``: what went wrong (the root cause) and what to set."""
    chain, seen = [], exc
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    auth = [e for e in chain if "auth" in str(e).lower()]
    if auth:
        text = "the cluster refused this driver's authentication token"
    else:
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    hint = (
        "set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH) to the cluster's token"
        if auth
        else "set --ray-address or EGOCURATE_RAY_ADDRESS to the head node's host:port"
    )
    return f"cannot connect to Ray at {address or 'local'}: {text}; {hint}"


def _check_local_loopback() -> None:
    """Stop the local Ray this process started when any of its services listens beyond loopback.

    Ray binds to every interface unless pinned (``_node_ip_address`` plus
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read when Ray is first imported); this checks that the
    pinning held before any work is sent.
    """
    import ray

    outside = beyond_loopback(listening(marker="ray"))  # this driver and the Ray it started
    if outside:
        ray.shutdown()
        raise EngineError(
            f"the local Ray listens beyond loopback ({outside[:4]}); import egocurate's Ray engine "
            "before ray, or set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Python starts"
        )


def _short_node_deaths() -> None:
    """Print a lost node as Ray's one-sentence reason, without the tail of its raylet log.

    When a node dies, Ray sends every driver the last lines of that raylet's log (``[state-dump]``
    tables) and prints them into the run's output; the reason before them is what a user needs.
    """
    from ray._private import worker as ray_worker

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "egocurate_short", False):
        return

    def short(data: dict, ignore_prefix: bool) -> None:
        lines = [line.split(" Last ", 1)[0] if "Raylet is terminated" in line else line
                 for line in data.get("lines", [])]  # fmt: skip
        original({**data, "lines": lines}, ignore_prefix)

    short.egocurate_short = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = short


def _ray_lost(exc: BaseException) -> bool:
    """True for failures of the cluster (worker, actor, node, object lost), not of the stage's code."""
    import ray.exceptions as rex

    lost = (rex.RayActorError, rex.WorkerCrashedError, rex.NodeDiedError, rex.ObjectLostError)
    lost += tuple(getattr(rex, n) for n in ("ActorUnavailableError", "OwnerDiedError") if hasattr(rex, n))
    return isinstance(exc, lost)


class RayEngine:
    """Connects to a cluster with ``address`` (``host:port``, ``auto``, ``ray://…``) or starts a local Ray."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        max_actors: int | None = None,
        progress_timeout: float | None = None,
    ):
        if not address or address.rpartition(":")[0] in ("127.0.0.1", "localhost"):
            # A local Ray or a loopback cluster: keep this driver (and the Ray it starts) on loopback.
            # Read when ray is first imported, and inherited by every process Ray starts; otherwise
            # Ray swaps 127.0.0.1 for a routable address and listens on every interface.
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            if "ray" in sys.modules and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0":
                from ray._private import ray_constants  # imported before us: pin this process too

                ray_constants.ENABLE_RAY_CLUSTER = False
        # Backend warnings (connection retries, state dumps) stay out of the run's output; they are
        # read when Ray is first imported. Errors still show.
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        import ray

        logging.getLogger("ray").setLevel(logging.WARNING)
        engine_logs.capture_loggers("ray")
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            kwargs: dict = {
                "ignore_reinit_error": True,
                "include_dashboard": False,
                "log_to_driver": False,
                "logging_level": logging.WARNING,
            }
            if address:
                _check_reachable(address)
                kwargs["address"] = address
            else:  # a Ray of our own: every service on loopback (checked below)
                kwargs["num_cpus"] = num_cpus or os.cpu_count() or 1
                kwargs["_node_ip_address"] = "127.0.0.1"
                kwargs["dashboard_host"] = "127.0.0.1"
            with _held_stderr() as held:
                try:
                    ray.init(**kwargs)
                except Exception as exc:  # noqa: BLE001 - every connection failure becomes one line
                    held["drop"] = True  # Ray's C++ client repeats its retry warning every second
                    raise EngineError(_connect_error(address, exc)) from None
            if not address:
                _check_local_loopback()
            _short_node_deaths()
        self.max_actors = max_actors
        env_timeout = os.environ.get("EGOCURATE_PROGRESS_TIMEOUT")
        self.progress_timeout = float(progress_timeout or env_timeout or DEFAULT_PROGRESS_TIMEOUT_S)
        self.last_stats: dict = {}  # what the latest `map` did: actors, nodes, prepare tasks, retries

    def _pool_size(self, res: Resources, batches: int, free: dict[str, float], reserve_cpus: float) -> int:
        if res.concurrency:
            return min(res.concurrency, batches)
        by_cpu = int(max(free.get("CPU", 0.0) - reserve_cpus, 0.0) // res.cpus)
        by_gpu = int(free.get("GPU", 0.0) // res.gpus) if res.gpus else by_cpu
        size = max(1, min(by_cpu, by_gpu, batches))
        return min(size, self.max_actors) if self.max_actors else size

    def map(self, stage: Stage, rows: pa.Table, catalog: Catalog) -> Iterator[pa.Table]:
        import ray

        res = stage.resources
        error = placement_error(stage.name, res, ray.nodes())
        if error:
            raise EngineError(error)
        batches = [rows.slice(o, res.batch_size) for o in range(0, rows.num_rows, res.batch_size)]
        if not batches:
            return
        free = ray.available_resources()
        prep = (stage.prepare_resources or res) if stage.has_prepare else None
        # Prepare tasks only get CPUs the actors leave free; otherwise the actors prepare for themselves.
        reserve = prep.cpus if prep and free.get("CPU", 0.0) - prep.cpus >= res.cpus else 0.0
        size = self._pool_size(res, len(batches), free, reserve)
        prepare_tasks = bool(prep and reserve)
        options: dict = {"num_cpus": res.cpus, "num_gpus": res.gpus, "scheduling_strategy": "SPREAD"}
        if res.memory_gb:
            options["memory"] = int(res.memory_gb * 2**30)
        # max_restarts=0: the engine replaces lost actors itself (see the module docstring).
        actor_cls = ray.remote(_StageActor).options(max_restarts=0, max_task_retries=0, **options)
        prepare_fn = None
        if prep:
            prepare_fn = ray.remote(_prepare).options(num_cpus=prep.cpus, max_retries=MAX_ATTEMPTS)
        stage_ref = ray.put(stage)
        stats = {"actors": 0, "nodes": set(), "prepare_tasks": 0, "retries": 0, "pool": size}
        self.last_stats = stats

        def new_actor():
            actor = actor_cls.remote(stage_ref, catalog.root, catalog.storage_options)
            stats["actors"] += 1
            node_refs[actor.node.remote()] = actor
            return actor

        node_refs: dict = {}
        actors = []
        load: dict = {}
        try:
            for _ in range(size):
                actor = new_actor()
                actors.append(actor)
                load[actor] = 0
            todo = deque(range(len(batches)))
            attempts = [0] * len(batches)
            in_flight: dict = {}
            last_progress = time.monotonic()
            while todo or in_flight:
                for actor in actors:
                    while todo and load[actor] < IN_FLIGHT_PER_ACTOR:
                        index = todo.popleft()
                        batch = batches[index]
                        if prepare_tasks:
                            stats["prepare_tasks"] += 1
                            ref = actor.__call__.remote(prepare_fn.remote(stage_ref, batch))
                        else:
                            ref = actor.__call__.remote(batch, bool(prep))
                        in_flight[ref] = (index, actor)
                        load[actor] += 1
                waiting = list(in_flight) + list(node_refs)
                ready, _ = ray.wait(waiting, num_returns=1, timeout=min(5.0, self.progress_timeout))
                for ref in ready:
                    if ref in node_refs:
                        node_refs.pop(ref)
                        with contextlib.suppress(Exception):  # a dead actor shows up on its batches too
                            stats["nodes"].add(ray.get(ref))
                        continue
                    index, actor = in_flight.pop(ref)
                    if actor in load:
                        load[actor] -= 1
                    try:
                        manifest = ray.get(ref)
                    except Exception as exc:
                        if not _ray_lost(exc):
                            raise
                        attempts[index] += 1
                        stats["retries"] += 1
                        if attempts[index] >= MAX_ATTEMPTS:
                            raise EngineError(
                                f"stage {stage.name!r}: batch {index} lost its worker {attempts[index]} "
                                f"times ({type(exc).__name__}); committed work is kept, rerun to resume"
                            ) from None
                        todo.appendleft(index)
                        if actor in actors:
                            actors.remove(actor)
                            load.pop(actor, None)
                            ray.kill(actor, no_restart=True)
                        error = placement_error(stage.name, res, ray.nodes())
                        if error:
                            raise EngineError(error) from None
                        if not actors or ray.available_resources().get("CPU", 0.0) >= res.cpus:
                            actor = new_actor()
                            actors.append(actor)
                            load[actor] = 0
                        continue
                    last_progress = time.monotonic()
                    yield manifest
                if not ready and time.monotonic() - last_progress > self.progress_timeout:
                    free = ray.available_resources()
                    raise EngineError(
                        f"stage {stage.name!r}: no batch finished in {self.progress_timeout:g} s "
                        f"({len(batches) - len(todo) - len(in_flight)}/{len(batches)} batches done; one "
                        f"worker needs {_describe(res)}, the cluster has cpus={free.get('CPU', 0):g} "
                        f"gpus={free.get('GPU', 0):g} free); committed work is kept, rerun to resume "
                        f"({progress_timeout_hint()})"
                    )
        finally:
            for actor in actors:
                ray.kill(actor, no_restart=True)
            stats["nodes"] = sorted(stats["nodes"])

    def close(self) -> None:
        import ray

        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
