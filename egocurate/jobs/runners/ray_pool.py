"""Warm Ray actors for one run: one pool per resource shape, kept from stage to stage.

Starting an actor costs a process, its imports (torch) and its models (~50 CPU-s per stage on a
2-core machine). So a :class:`RayEngine` run keeps its actors: the next stage with the same shape
(cpus, gpus, memory) reuses them, and each actor sets a stage up lazily, on its first batch of it,
holding one set-up stage per name. A stage of another shape releases the pool it does not use, so
idle actors never hold CPUs another stage needs. The engine tears every actor down when it closes.

Capacity is read from *alive* nodes only: ``ray.available_resources()`` keeps counting a node that
was SIGKILLed until the cluster declares it dead, and then a plan made from it can wait forever.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import pyarrow as pa

from egocurate.jobs.stage import Resources, Stage
from egocurate.jobs.worker import run_on_worker, timed_prepare

Shape = tuple[float, float, float | None]


def shape_of(res: Resources) -> Shape:
    """What one actor of a stage holds: stages of the same shape share actors."""
    return (float(res.cpus), float(res.gpus), res.memory_gb)


class _StageActor:
    """One warm worker process of a run: sets each stage up on first use, keeps one per stage name.

    The stage travels as a reference inside a list (Ray does not resolve nested references), so it
    is fetched and set up once per actor, not unpickled with every batch.
    """

    def __init__(self) -> None:
        self.stages: dict[str, tuple[str, Stage]] = {}  # stage name -> (token, set-up stage)

    def node(self) -> str:
        import ray

        return ray.get_runtime_context().get_node_id()

    def run(
        self,
        token: str,
        boxed_stage: list,
        batch: pa.Table,
        root: str,
        storage_options: dict | None,
        prepare: bool = False,
    ) -> pa.Table:
        held = self.stages.get(boxed_stage_name(token))
        if held is None or held[0] != token:
            import ray

            stage = ray.get(boxed_stage[0])
            stage.setup()
            self.stages[boxed_stage_name(token)] = (token, stage)  # replaces an older copy of this stage
        stage = self.stages[boxed_stage_name(token)][1]
        if prepare:
            batch = timed_prepare(stage, batch)
        return run_on_worker(stage, batch, root, storage_options)


def boxed_stage_name(token: str) -> str:
    """The stage name a token (``name@uuid``) belongs to."""
    return token.rpartition("@")[0]


@dataclass
class Capacity:
    """Resources of the nodes that are alive now: their totals and what is free on them."""

    total: dict[str, float] = field(default_factory=dict)
    free: dict[str, float] = field(default_factory=dict)
    nodes: set[str] = field(default_factory=set)

    def cpus(self) -> float:
        return self.total.get("CPU", 0.0)


def alive_capacity() -> Capacity:
    """Totals and free resources summed over alive nodes only (a dead node's resources are gone)."""
    import ray
    from ray._private import state

    alive = {n["NodeID"]: n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")}
    cap = Capacity(nodes=set(alive))
    for resources in alive.values():
        for name, amount in resources.items():
            cap.total[name] = cap.total.get(name, 0.0) + float(amount)
    with contextlib.suppress(Exception):  # a GCS hiccup: count nothing free (the plan stays small)
        for node, resources in state.available_resources_per_node().items():
            if node in alive:
                for name, amount in resources.items():
                    cap.free[name] = cap.free.get(name, 0.0) + float(amount)
    return cap


class ActorPools:
    """The run's actors, by shape; an actor is *started* once it answered where it runs."""

    def __init__(self) -> None:
        self.pools: dict[Shape, list] = {}
        self.node_of: dict = {}  # started actor -> node id
        self.starting: dict = {}  # node() reference -> actor not yet started
        self.shape_of_actor: dict = {}

    def add(self, shape: Shape, actor) -> None:
        self.pools.setdefault(shape, []).append(actor)
        self.shape_of_actor[actor] = shape
        self.starting[actor.node.remote()] = actor

    def started(self, shape: Shape) -> list:
        return [a for a in self.pools.get(shape, []) if a in self.node_of]

    def mark_started(self, ref, node: str) -> None:
        self.node_of[self.starting.pop(ref)] = node

    def held(self, alive_nodes: set[str]) -> dict[str, float]:
        """Resources our started actors on alive nodes hold (ours to reuse or release)."""
        out: dict[str, float] = {}
        for actor, node in self.node_of.items():
            if node not in alive_nodes:
                continue
            cpus, gpus, memory_gb = self.shape_of_actor[actor]
            out["CPU"] = out.get("CPU", 0.0) + cpus
            out["GPU"] = out.get("GPU", 0.0) + gpus
            if memory_gb:
                out["memory"] = out.get("memory", 0.0) + memory_gb * 2**30
        return out

    def remove(self, actor) -> None:
        """Forget an actor and kill it (idempotent)."""
        import ray

        shape = self.shape_of_actor.pop(actor, None)
        if shape is not None and actor in self.pools.get(shape, []):
            self.pools[shape].remove(actor)
        self.node_of.pop(actor, None)
        for ref in [r for r, a in self.starting.items() if a is actor]:
            self.starting.pop(ref)
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)

    def release_others(self, keep: Shape) -> None:
        """Kill every actor of another shape: idle, they would hold what this stage needs."""
        for shape in [s for s in self.pools if s != keep]:
            for actor in list(self.pools[shape]):
                self.remove(actor)
            self.pools.pop(shape, None)

    def trim(self, shape: Shape, size: int) -> None:
        """Keep at most `size` actors of `shape`, dropping ones not started yet first."""
        pool = self.pools.get(shape, [])
        extra = len(pool) - size
        for actor in sorted(pool, key=lambda a: a in self.node_of)[: max(extra, 0)]:
            self.remove(actor)

    def close(self) -> None:
        for shape in list(self.pools):
            for actor in list(self.pools[shape]):
                self.remove(actor)
        self.pools.clear()
