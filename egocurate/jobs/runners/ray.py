"""The Ray engine: a pool of stage actors sized from what the cluster has free, fed batch by batch.

Each actor calls ``stage.setup()`` once (models load once per worker), then writes Parquet parts
for its batches; only manifests come back to the driver, which commits them.

Why plain actors and not Ray Data: Ray Data's ``repartition`` and its task-based steps wait for
CPUs that the actor pool already holds, so on a cluster with one free CPU (the state after a
worker node dies) a stage hung forever. Here nothing of ours waits on CPUs our actors hold:

- actors are warm: a run keeps them from stage to stage when the shape (cpus, gpus, memory)
  matches, and each sets a stage up on its first batch of it (``jobs/runners/ray_pool.py``); a
  stage of another shape releases them, and ``close()`` tears them down;
- before a stage starts, its ``resources`` are compared with every alive node; a stage no node
  can hold fails at once (:class:`~egocurate.jobs.runners.EngineError`);
- the pool is sized from the resources free on *alive* nodes (plus what our warm actors hold), at
  least one actor, so a stage runs on whatever remains, down to one node with one CPU;
- batches go only to actors that have started, so an actor that never starts (its room went with
  a dead node) holds none of them;
- a stage with ``has_prepare`` (CPU decode feeding GPU actors, see ``egocurate.stage_base``) gets
  ``prepare`` run as Ray tasks only when CPUs are left over beyond the actors; otherwise each actor
  prepares its own batches (``process`` accepts unprepared rows). When the cluster shrinks under a
  running stage so that no CPU is left for prepare tasks, the stage re-plans: the actors prepare
  for themselves and batches waiting on a prepare task go back to the queue;
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
import uuid
from collections import deque
from collections.abc import Iterator

import pyarrow as pa

from egocurate.catalog.store import Catalog
from egocurate.jobs import engine_logs
from egocurate.jobs.runners import EngineError
from egocurate.jobs.runners.loopback import beyond_loopback, listening
from egocurate.jobs.runners.ray_pool import ActorPools, _StageActor, alive_capacity, shape_of
from egocurate.jobs.stage import Resources, Stage
from egocurate.jobs.worker import timed_prepare

log = logging.getLogger(__name__)

DEFAULT_PROGRESS_TIMEOUT_S = 300.0
MAX_ATTEMPTS = 3  # tries per batch when workers or nodes die under it
IN_FLIGHT_PER_ACTOR = 2  # one running, one queued: an actor never waits for the driver


def progress_timeout_hint() -> str:
    """Where the progress limit comes from, first match wins (said in the timeout's error)."""
    return (
        "--progress-timeout, else EGOCURATE_PROGRESS_TIMEOUT, else the pipeline file's "
        "ray/spark progress_timeout_s sets the limit"
    )


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
    """Connects to a cluster with ``address`` (``host:port``, ``auto``, ``ray://…``) or starts a local Ray.

    With ``keep_warm`` the actors outlive a stage and serve the next stage of the same shape until
    :meth:`close` (a pipeline run does this); without it each stage's actors end with the stage.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        max_actors: int | None = None,
        progress_timeout: float | None = None,
        keep_warm: bool = False,
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
        self.pools = ActorPools()  # the run's warm actors, kept from stage to stage until close()
        # Only a run that closes the engine when it ends keeps actors warm (`run_pipeline` does):
        # otherwise idle actors would hold CPUs that other drivers on the cluster wait for.
        self.keep_warm = keep_warm
        self._tokens: dict[int, tuple[str, Stage]] = {}

    def _pool_size(self, res: Resources, batches: int, free: dict[str, float], reserve_cpus: float) -> int:
        if res.concurrency:
            return min(res.concurrency, batches)
        by_cpu = int(max(free.get("CPU", 0.0) - reserve_cpus, 0.0) // res.cpus)
        by_gpu = int(free.get("GPU", 0.0) // res.gpus) if res.gpus else by_cpu
        size = max(1, min(by_cpu, by_gpu, batches))
        return min(size, self.max_actors) if self.max_actors else size

    def _token(self, stage: Stage) -> str:
        """This stage object's name in the warm actors (a new object of the same name is set up anew)."""
        held = self._tokens.get(id(stage))
        if held is None or held[1] is not stage:
            held = (f"{stage.name}@{uuid.uuid4().hex[:12]}", stage)  # the stage is kept: its id stays unique
            self._tokens[id(stage)] = held
        return held[0]

    def map(self, stage: Stage, rows: pa.Table, catalog: Catalog) -> Iterator[pa.Table]:
        import ray

        res = stage.resources
        error = placement_error(stage.name, res, ray.nodes())
        if error:
            raise EngineError(error)
        batches = [rows.slice(o, res.batch_size) for o in range(0, rows.num_rows, res.batch_size)]
        if not batches:
            return
        shape = shape_of(res)
        cap = alive_capacity()
        held = self.pools.held(cap.nodes)  # our warm actors' resources: this stage may reuse them
        free = {k: cap.free.get(k, 0.0) + held.get(k, 0.0) for k in ("CPU", "GPU", "memory")}
        prep = (stage.prepare_resources or res) if stage.has_prepare else None
        # Prepare tasks only get CPUs the actors leave free; otherwise the actors prepare for themselves.
        reserve = prep.cpus if prep and free["CPU"] - prep.cpus >= res.cpus else 0.0
        size = self._pool_size(res, len(batches), free, reserve)
        plan = {"prepare_tasks": bool(prep and reserve), "since": time.monotonic()}
        self.pools.release_others(shape)
        self.pools.trim(shape, size)
        options: dict = {"num_cpus": res.cpus, "num_gpus": res.gpus, "scheduling_strategy": "SPREAD"}
        if res.memory_gb:
            options["memory"] = int(res.memory_gb * 2**30)
        # max_restarts=0: the engine replaces lost actors itself (see the module docstring).
        actor_cls = ray.remote(_StageActor).options(max_restarts=0, max_task_retries=0, **options)
        prepare_fn = None
        if prep:
            prepare_fn = ray.remote(_prepare).options(num_cpus=prep.cpus, max_retries=MAX_ATTEMPTS)
        stage_ref = ray.put(stage)
        token = self._token(stage)
        reused = len(self.pools.pools.get(shape, []))
        stats = {"actors": 0, "reused": reused, "nodes": set(), "prepare_tasks": 0, "retries": 0,
                 "pool": size, "replans": 0}  # fmt: skip
        self.last_stats = stats
        pools = self.pools

        def new_actor() -> None:
            pools.add(shape, actor_cls.remote())
            stats["actors"] += 1

        for _ in range(size - reused):
            new_actor()
        load: dict = {}
        todo = deque(range(len(batches)))
        attempts = [0] * len(batches)
        in_flight: dict = {}  # actor call -> (batch index, actor, its prepare task or None)
        last_progress = time.monotonic()

        def requeue(ref) -> None:
            index, actor, _ = in_flight.pop(ref)
            load[actor] = max(load.get(actor, 0) - 1, 0)
            todo.appendleft(index)

        def lose(actor) -> None:
            """An actor died (or its node did): drop it and its queued batches; replace it if room."""
            for ref in [r for r, (_, a, _) in in_flight.items() if a is actor]:
                requeue(ref)
            pools.remove(actor)
            load.pop(actor, None)
            error = placement_error(stage.name, res, ray.nodes())
            if error:
                raise EngineError(error) from None
            now = alive_capacity()
            if not pools.pools.get(shape) or now.free.get("CPU", 0.0) >= res.cpus:
                new_actor()

        def replan() -> None:
            """Nothing finished for a while: re-read the alive nodes. When prepare tasks can no
            longer get a CPU (the cluster shrank under the actors), the actors prepare for
            themselves. An actor whose queue waits on a prepare task is blocked behind it (an
            actor runs its calls in order), so it is replaced and its batches go back to the queue."""
            if not plan["prepare_tasks"]:
                return
            now = alive_capacity()
            ours = pools.held(now.nodes).get("CPU", 0.0)
            if now.cpus() - ours >= prep.cpus:
                return
            plan["prepare_tasks"] = False
            stats["replans"] += 1
            log.warning(
                "stage %r: the cluster shrank to %g CPU(s); the actors now decode their own batches",
                stage.name, now.cpus(),
            )  # fmt: skip
            blocked = []
            for _, actor, prep_ref in list(in_flight.values()):
                if prep_ref is not None and not ray.wait([prep_ref], timeout=0)[0]:
                    with contextlib.suppress(Exception):
                        ray.cancel(prep_ref)
                    if actor not in blocked:
                        blocked.append(actor)
            for actor in blocked:
                for ref in [r for r, (_, a, _) in in_flight.items() if a is actor]:
                    requeue(ref)
                pools.remove(actor)
                load.pop(actor, None)
                new_actor()
            plan["since"] = time.monotonic()  # the new plan gets its own progress window

        try:
            while todo or in_flight:
                # Batches go only to started actors: one that never starts (no room left on the
                # alive nodes) holds no batch hostage.
                for actor in pools.started(shape):
                    while todo and load.get(actor, 0) < IN_FLIGHT_PER_ACTOR:
                        index = todo.popleft()
                        batch, prep_ref = batches[index], None
                        if plan["prepare_tasks"]:
                            stats["prepare_tasks"] += 1
                            prep_ref = prepare_fn.remote(stage_ref, batch)
                            batch = prep_ref
                        prepare_here = bool(prep) and prep_ref is None
                        ref = actor.run.remote(
                            token, [stage_ref], batch, catalog.root, catalog.storage_options, prepare_here
                        )
                        in_flight[ref] = (index, actor, prep_ref)
                        load[actor] = load.get(actor, 0) + 1
                waiting = list(in_flight) + list(pools.starting)
                if not waiting:  # every actor gone and none could be made: make one and wait for room
                    new_actor()
                    continue
                ready, _ = ray.wait(waiting, num_returns=1, timeout=min(5.0, self.progress_timeout))
                for ref in ready:
                    if ref in pools.starting:
                        actor = pools.starting[ref]
                        try:
                            pools.mark_started(ref, ray.get(ref))
                        except Exception as exc:
                            if not _ray_lost(exc):
                                raise
                            lose(actor)
                        continue
                    if ref not in in_flight:
                        continue
                    index, actor, _ = in_flight.pop(ref)
                    load[actor] = max(load.get(actor, 0) - 1, 0)
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
                        lose(actor)
                        continue
                    last_progress = time.monotonic()
                    if actor in pools.node_of:
                        stats["nodes"].add(pools.node_of[actor])
                    yield manifest
                if not ready:
                    replan()
                idle_since = max(last_progress, plan["since"])
                if not ready and time.monotonic() - idle_since > self.progress_timeout:
                    free = alive_capacity().free
                    raise EngineError(
                        f"stage {stage.name!r}: no batch finished in {self.progress_timeout:g} s "
                        f"({len(batches) - len(todo) - len(in_flight)}/{len(batches)} batches done; one "
                        f"worker needs {_describe(res)}, the cluster has cpus={free.get('CPU', 0):g} "
                        f"gpus={free.get('GPU', 0):g} free); committed work is kept, rerun to resume "
                        f"({progress_timeout_hint()})"
                    )
        except BaseException:
            # A stage that fails or is abandoned leaves no actor busy with its batches.
            for _, actor, _ in list(in_flight.values()):
                pools.remove(actor)
            raise
        finally:
            stats["nodes"] = sorted(stats["nodes"])
            if not self.keep_warm:
                pools.close()

    def release(self, cpus: float | None = None) -> None:
        """Kill warm actors (Ray stays up) until `cpus` CPUs are free on the alive nodes, or all of
        them when None: work of our own that needs CPUs, such as a corpus stage's Ray tasks, would
        otherwise wait for CPUs that idle actors hold."""
        import ray

        if not ray.is_initialized():
            return
        if cpus is None:
            self.pools.close()
            return
        free = alive_capacity().free.get("CPU", 0.0)
        for shape in list(self.pools.pools):
            # not started first: they hold nothing yet, but would take the CPUs as soon as one frees
            for actor in sorted(self.pools.pools[shape], key=lambda a: a in self.pools.node_of):
                if free >= cpus and actor in self.pools.node_of:
                    return
                if actor in self.pools.node_of:
                    free += shape[0]
                self.pools.remove(actor)

    def close(self) -> None:
        """Tear down the run's warm actors, then the local Ray this engine started (if any)."""
        import ray

        if ray.is_initialized():
            self.pools.close()
        if self._owns_ray and ray.is_initialized():
            ray.shutdown()
