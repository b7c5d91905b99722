"""Soak: rounds of 1-4 concurrent `egocurate run` writers, with repair, vacuum and shard writers
beside them, random SIGKILLs, reruns, and a containment check.

Usage: python benchmarks/soak.py [--minutes 10] [--videos 6] [--seed 0] [--rounds N]
                                 [--tiny] [--keep-failed DIR]

Each round gets a fresh folder ``round_N/`` under the soak's temp root, holding its pipeline file,
an (empty, pre-created) ``catalog/`` and ``shards_out/``; every process of the round runs with that
folder as its working directory. A round launches 1-4 real `egocurate run` processes (ingest, shots,
quality, `commit_every: 1`, overlapping sources with a byte copy and a corrupt file) and, in most
rounds (the seeded RNG decides), side processes started at random moments while the writers commit:

- `egocurate catalog repair -c catalog` (one or two),
- `egocurate catalog vacuum TABLE -c catalog --no-dry-run` at the default (minimum) retention of
  168 h, which must delete nothing here (every file is minutes old),
- `egocurate shards write -c catalog --out shards_out --query "SELECT clip_id FROM clip_view"`
  (one or two at once into the same folder).

- `egocurate catalog optimize -c catalog` (one or two; every table that exists at that moment).

A random subset of writers and side
processes is SIGKILLed at random moments. Once all have ended, a vacuum round also tries
`--retention-hours 0 --no-dry-run`, which must exit 2 with an `error:` line and change no file.
Then the round reruns the pipeline to completion, runs one final `shards write` (shard rounds),
`catalog repair` and `catalog check` (which must exit 0), and compares every table with one serial
run (the reference this benchmark names). A shard round's folder must then hold exactly what its
`manifest.json` lists (no unlisted `*.parquet`, no listed file missing), and the catalog's `shards`
table must list exactly the manifest's shards.

Containment: before each round, every file and folder under the soak's temp root (the source
videos included) is recorded (path -> kind, size, mtime), leaving out only the round's `catalog/`
and `shards_out/` and the soak's own `logs/`; after the round anything created, changed or deleted
there counts as `outside_files`. Folder mtimes are compared too, so a temporary file created and
removed beside the catalog is caught as well.

Prints one JSON line: {"rounds", "kills" (writers), "side_kills", "max_concurrent" (writers),
"max_processes" (writers and side processes), "rows_expected", "rows_found", "duplicates", "lost",
"mismatched", "repairs", "vacuums", "shard_writes" (side processes launched beside writers),
"vacuum_deleted", "vacuum_zero_tries", "vacuum_zero_refused", "unlisted_shards", "shard_leftovers",
"outside_files", "check_failures", "final_failures", "side_failures", "writer_failures" (processes
not killed that exited non-zero), "seconds", "serial_run_s"}. `duplicates`, `lost`, `unlisted_shards`,
`outside_files`, `check_failures`, `final_failures` and `vacuum_deleted` must be 0 and
`vacuum_zero_refused` true; `mismatched` (rows whose stable columns differ from the reference) is
reported, with the differing columns on stderr.
A failing round is described on stderr (its processes, kill moments, exit codes, check output);
`--keep-failed DIR` also copies its folder and logs there.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egocurate.catalog.store import Catalog  # noqa: E402
from egocurate.testing.videos import make_corrupt_copy, make_video  # noqa: E402

# table -> columns that identify a row (what "duplicate" and "lost" are counted over)
KEYS = {
    "videos": ("video_id",),
    "clips": ("clip_id",),
    "clip_quality": ("clip_id",),
    "quarantine": ("stage", "key"),
    "_ledger": ("stage", "key"),
}
VOLATILE = {"time", "run_id", "rows_out"}  # rows_out: a ledger row repaired after a kill says 0
CATALOG, SHARDS_OUT, LOGS = "catalog", "shards_out", "logs"  # round-relative / root-relative names
SHARD_QUERY = "SELECT clip_id FROM clip_view"
# The test clips are 1 s at 10 fps: render them tiny, keep them all, and cut several small shards.
SHARD_ARGS = ["--min-frames", "4", "--width", "64", "--height", "48", "--target-mb", "0.01",
              "--row-group-mb", "0.01", "--val-fraction", "0.3", "--workers", "1",
              "--no-progress"]  # fmt: skip
WAIT_S = 600  # no process of a round may run longer than this (a hang is a failure, not a stall)

COUNTERS = ("rounds", "kills", "side_kills", "max_concurrent", "max_processes", "rows_expected",
            "rows_found", "duplicates", "lost", "mismatched", "repairs", "vacuums", "shard_writes",
            "optimizes", "vacuum_deleted", "vacuum_zero_tries", "unlisted_shards", "shard_leftovers",
            "outside_files", "check_failures", "final_failures", "side_failures",
            "writer_failures")  # fmt: skip
MUST_BE_ZERO = ("duplicates", "lost", "unlisted_shards", "outside_files", "check_failures",
                "final_failures", "vacuum_deleted")  # fmt: skip


def make_sources(root: Path, videos: int) -> list[str]:
    """Two overlapping folders of distinct small videos, a byte copy and a truncated file."""
    seed = root / "seed.mp4"
    make_video(seed, seed=3, scenes=2, scene_seconds=2.0, fps=10.0, width=320, height=240)
    a, b = root / "a", root / "b"
    a.mkdir()
    b.mkdir()
    data = seed.read_bytes()
    for i in range(videos):
        (a if i % 2 else b).joinpath(f"take_{i}.mp4").write_bytes(data + f"soak-{i}".encode())
    shutil.copy(b / "take_0.mp4", a / "copy_of_take_0.mp4")
    make_corrupt_copy(seed, a / "broken.mp4", keep=0.3)
    return [str(a), str(b)]


def pipeline(path: Path, catalog: Path, sources: list[str]) -> Path:
    """Write the soak's pipeline file (ingest, shots, quality; one commit per work unit)."""
    config = {
        "catalog": str(catalog),
        "engine": "local",
        "sources": sources,
        "commit_every": 1,
        "progress": False,
        "stages": [
            {"name": "ingest", "params": {"batch_size": 1}},
            {
                "name": "shots",
                "params": {"detector": "fixed", "detector_params": {"window_s": 1.0}, "min_clip_s": 0.5},
            },  # fmt: skip
            {"name": "quality", "params": {"batch_size": 1}},
        ],
    }
    path.write_text(yaml.safe_dump(config))
    return path


ENV = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "HF_HUB_OFFLINE": "1"}


def egocurate(*args: str) -> list[str]:
    """The argv of one `egocurate` command (this interpreter, this checkout)."""
    return [sys.executable, "-m", "egocurate.cli.main", *args]


def cli(config: Path) -> list[str]:
    return egocurate("run", str(config))


def shards_write() -> list[str]:
    """`shards write` of every clip into the round's shard folder (paths relative to the round)."""
    return egocurate(
        "shards", "write", "-c", CATALOG, "--out", SHARDS_OUT, "--query", SHARD_QUERY, *SHARD_ARGS
    )


# ----------------------------------------------------------------------------- processes
@dataclass
class Proc:
    """One process of a round: what it is, its log, and what happened to it."""

    name: str  # writer#0, repair#1, vacuum#0-clips, shards#1 ...
    argv: list[str]
    log: Path
    popen: subprocess.Popen | None = None
    started: float = 0.0  # seconds after the round began
    killed_at: float | None = None  # set only when the SIGKILL found it running
    rc: int | None = None
    hung: bool = False  # still running after WAIT_S (then killed by the soak, not counted as a kill)

    def start(self, cwd: Path, t: float) -> None:
        """Start it in its own session (so a kill takes its children too), output to its log."""
        self.started = t
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv, cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def kill(self, t: float) -> bool:
        """SIGKILL it (and its process group) if it still runs; True when that killed something."""
        if self.popen is None or self.popen.poll() is not None:
            return False
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.killed_at = t
        return True

    def wait(self) -> int | None:
        """Its exit code; a process still running after WAIT_S is killed and reported as a hang."""
        if self.popen is None:
            return None
        try:
            self.rc = self.popen.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.rc = self.popen.wait()
            self.hung = True
        return self.rc

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def describe(self) -> str:
        kill = f", killed at {self.killed_at:.1f}s" if self.killed_at is not None else ""
        hung = f", HUNG for {WAIT_S} s" if self.hung else ""
        return f"{self.name} started {self.started:.1f}s{kill}{hung}, rc {self.rc}"


def run_now(name: str, argv: list[str], cwd: Path, logs: Path) -> Proc:
    """Run one command to completion (cwd inside the round), its output kept in `logs`."""
    proc = Proc(name, argv, logs / f"{name}.log")
    proc.start(cwd, 0.0)
    proc.wait()
    return proc


# ----------------------------------------------------------------------------- the round's plan
@dataclass
class Event:
    at: float  # seconds after the round began
    action: str  # "start" or "kill"
    proc: Proc


@dataclass
class Round:
    """One round's folder, logs, processes and findings."""

    n: int
    dir: Path
    logs: Path
    procs: list[Proc] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what went wrong, for the failure report
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def catalog(self) -> Path:
        return self.dir / CATALOG

    @property
    def shards_out(self) -> Path:
        return self.dir / SHARDS_OUT

    def add(self, key: str, value: int = 1) -> None:
        self.stats[key] = self.stats.get(key, 0) + value

    def side(self, kind: str) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith(kind)]


def side_commands(rng: random.Random) -> list[tuple[str, list[str]]]:
    """(name, argv) of the side processes of one round: some of repair, vacuum, shards write."""
    kinds = [k for k in ("repair", "vacuum", "shards", "optimize") if rng.random() < 0.5] or [
        rng.choice(["repair", "vacuum", "shards", "optimize"])
    ]
    commands = []
    for kind in kinds:
        for i in range(1 if kind == "vacuum" else rng.randint(1, 2)):
            if kind == "repair":
                commands.append((f"repair#{i}", egocurate("catalog", "repair", "-c", CATALOG)))
            elif kind == "vacuum":
                table = rng.choice(sorted(KEYS))
                argv = egocurate("catalog", "vacuum", table, "-c", CATALOG, "--no-dry-run")
                commands.append((f"vacuum#{i}-{table}", argv))
            elif kind == "optimize":  # every table that exists yet, compacted beside the writers
                commands.append((f"optimize#{i}", egocurate("catalog", "optimize", "-c", CATALOG)))
            else:
                commands.append((f"shards#{i}", shards_write()))
    return commands


def plan_round(rnd: Round, rng: random.Random, config: Path, serial_s: float) -> None:
    """Writers start at once; side processes start while they commit; a random subset of each is
    given a SIGKILL moment (writers inside or past one serial run's length, side processes a few
    seconds after they start, which is around their own length)."""
    for i in range(rng.randint(1, 4)):
        proc = Proc(f"writer#{i}", cli(config), rnd.logs / f"writer-{i}.log")
        rnd.procs.append(proc)
        rnd.events.append(Event(0.0, "start", proc))
        if rng.random() < 0.7:
            rnd.events.append(Event(rng.uniform(0.5, serial_s * 1.2), "kill", proc))
    if rng.random() < 0.75:
        for name, argv in side_commands(rng):
            proc = Proc(name, argv, rnd.logs / f"{name}.log")
            rnd.procs.append(proc)
            begin = rng.uniform(0.1, 1.0) * serial_s
            rnd.events.append(Event(begin, "start", proc))
            if rng.random() < 0.5:
                rnd.events.append(Event(begin + rng.uniform(0.5, 1.5 * serial_s), "kill", proc))
    rnd.events.sort(key=lambda e: (e.at, e.action != "start"))


def execute(rnd: Round) -> None:
    """Play the round's schedule (starts and kills at their moments), then wait for every process."""
    begin = time.monotonic()
    for event in rnd.events:
        time.sleep(max(0.0, begin + event.at - time.monotonic()))
        now = time.monotonic() - begin
        if event.action == "start":
            event.proc.start(rnd.dir, now)
        elif event.proc.kill(now):
            rnd.add("kills" if event.proc.name.startswith("writer") else "side_kills")
    for proc in rnd.procs:
        proc.wait()
    rnd.add("max_concurrent", len(rnd.side("writer")))
    rnd.add("max_processes", len(rnd.procs))
    rnd.add("repairs", len(rnd.side("repair")))
    rnd.add("vacuums", len(rnd.side("vacuum")))
    rnd.add("shard_writes", len(rnd.side("shards")))
    rnd.add("optimizes", len(rnd.side("optimize")))


def judge_sides(rnd: Round) -> None:
    """Every process must exit 0 unless we killed it; a vacuum at 168 h must delete nothing."""
    for proc in rnd.procs:
        if proc.killed_at is not None:
            continue
        text = proc.text()
        if proc.rc != 0 or proc.hung:
            rnd.add("writer_failures" if proc.name.startswith("writer") else "side_failures")
            rnd.notes.append(f"{proc.describe()}: {last_lines(text)}")
        if proc.name.startswith("vacuum"):
            deleted = sum(int(n) for n in re.findall(r"deleted (\d+) file", text))
            if deleted:
                rnd.add("vacuum_deleted", deleted)
                rnd.notes.append(f"{proc.name} at 168 h deleted {deleted} file(s): {last_lines(text)}")


def last_lines(text: str, n: int = 3) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-n:])


# ----------------------------------------------------------------------------- containment
def snapshot(root: Path, exclude: set[Path]) -> dict[str, tuple[str, int, int]]:
    """path -> (kind, size, mtime_ns) of every file, link and folder under `root`, minus `exclude`.

    Folders are recorded with their mtime: creating or deleting anything in a folder changes it, so
    even a temporary file that came and went is seen. Links are not followed.
    """
    out = {}
    for top, dirs, files in os.walk(root, followlinks=False):
        here = Path(top)
        dirs[:] = [d for d in dirs if here / d not in exclude]
        st = here.lstat()
        out[str(here)] = ("dir", 0, st.st_mtime_ns)
        for name in files:
            path = here / name
            if path in exclude:
                continue
            st = path.lstat()
            out[str(path)] = ("link" if path.is_symlink() else "file", st.st_size, st.st_mtime_ns)
    return out


def containment_diff(before: dict, after: dict) -> list[str]:
    """What was created, deleted or changed between two snapshots, one line each."""
    created = [f"created {p}" for p in sorted(after.keys() - before.keys())]
    deleted = [f"deleted {p}" for p in sorted(before.keys() - after.keys())]
    changed = [f"changed {p}" for p in sorted(before.keys() & after.keys()) if before[p] != after[p]]
    return created + deleted + changed


# ----------------------------------------------------------------------------- after the kills
def try_vacuum_zero(rnd: Round, rng: random.Random) -> bool:
    """`vacuum --retention-hours 0 --no-dry-run` must exit 2 with an `error:` line, changing nothing."""
    table = rng.choice(sorted(KEYS))
    before = snapshot(rnd.catalog, set())
    argv = egocurate("catalog", "vacuum", table, "-c", CATALOG, "--retention-hours", "0", "--no-dry-run")
    proc = run_now(f"vacuum-zero-{table}", argv, rnd.dir, rnd.logs)
    changed = containment_diff(before, snapshot(rnd.catalog, set()))
    error_line = any(line.startswith("error:") for line in proc.text().splitlines())
    refused = proc.rc == 2 and error_line and not changed
    if not refused:
        rnd.notes.append(f"vacuum --retention-hours 0 on {table}: rc {proc.rc}, error line {error_line}, "
                         f"changed {changed[:5]}: {last_lines(proc.text())}")  # fmt: skip
    return refused


def finish(rnd: Round, config: Path) -> None:
    """Rerun the pipeline, write the shards once more (shard rounds), repair, then check."""
    steps = [("final-run", cli(config))]
    if rnd.side("shards"):
        steps.append(("final-shards", shards_write()))
    steps.append(("final-repair", egocurate("catalog", "repair", "-c", CATALOG)))
    for name, argv in steps:
        proc = run_now(name, argv, rnd.dir, rnd.logs)
        if proc.rc != 0:
            rnd.add("final_failures")
            rnd.notes.append(f"{name} exited {proc.rc}: {last_lines(proc.text(), 6)}")
    check = run_now("final-check", egocurate("catalog", "check", "-c", CATALOG), rnd.dir, rnd.logs)
    if check.rc != 0:
        rnd.add("check_failures")
        rnd.notes.append(f"catalog check exited {check.rc}:\n{check.text().strip()}")


def shard_violations(rnd: Round) -> tuple[list[str], list[str]]:
    """(violations, leftovers) of a finished shard folder against its manifest and `shards` table.

    Violations: a shard file (`*.parquet`, or `.parquet.partial`) the manifest does not list, a listed
    shard that is missing, and any difference between the manifest's shards and the table's rows.
    Leftovers: any other file besides `manifest.json` (a writer's marker or temporary manifest).
    """
    base = rnd.shards_out
    murl = base / "manifest.json"
    if not murl.exists():
        return [f"no manifest in {base}"], []
    manifest = json.loads(murl.read_text())
    listed = {s["path"] for s in manifest["shards"]}
    files = {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() or p.is_symlink()}
    shard_like = {f for f in files if f.endswith((".parquet", ".parquet.partial"))}
    bad = [f"unlisted shard file {f}" for f in sorted(shard_like - listed)]
    bad += [f"listed shard missing {f}" for f in sorted(listed - files)]
    leftovers = sorted(files - shard_like - {"manifest.json"})
    catalog = Catalog(rnd.catalog, create=False)
    table = set()
    if catalog.exists("shards"):
        table = set(catalog.read("shards", columns=["shard_uri"]).column("shard_uri").to_pylist())
    urls = {s["url"] or str(base / s["path"]) for s in manifest["shards"]}
    bad += [f"shards table row not in manifest {u}" for u in sorted(table - urls)]
    bad += [f"manifest shard not in shards table {u}" for u in sorted(urls - table)]
    return bad, leftovers


def rows(catalog: Catalog) -> dict[str, list[tuple]]:
    """table -> [(key, the row's stable columns as JSON)] for every table of KEYS."""
    out = {}
    for name, key in KEYS.items():
        table = catalog.read(name).to_pylist()
        out[name] = [
            (tuple(r[k] for k in key), json.dumps({k: v for k, v in r.items() if k not in VOLATILE},
                                                  sort_keys=True, default=str))
            for r in table
        ]  # fmt: skip
    return out


def compare(rnd: Round, expected: dict[str, list[tuple]]) -> None:
    """Count rows, duplicate keys, lost keys and differing rows of every table against the reference."""
    found = rows(Catalog(rnd.catalog, create=False))
    for name, want in expected.items():
        got = found[name]
        keys = [k for k, _ in got]
        dup, lost = len(keys) - len(set(keys)), len({k for k, _ in want} - set(keys))
        diff = len({v for _, v in want} ^ {v for _, v in got})
        rnd.add("rows_expected", len(want))
        rnd.add("rows_found", len(got))
        rnd.add("duplicates", dup)
        rnd.add("lost", lost)
        rnd.add("mismatched", diff)
        if dup or lost or diff:
            rnd.notes.append(f"table {name}: {dup} duplicate(s), {lost} lost, {diff} differing row(s)")
            rnd.notes += differing_columns(want, got)[:10]


def differing_columns(want: list[tuple], got: list[tuple]) -> list[str]:
    """For each key whose row differs from the reference: the columns that differ, both values."""
    ref, found = dict(want), dict(got)
    lines = []
    for key in sorted(ref.keys() & found.keys(), key=str):
        a, b = json.loads(ref[key]), json.loads(found[key])
        cols = {c: (a.get(c), b.get(c)) for c in a.keys() | b.keys() if a.get(c) != b.get(c)}
        if cols:
            lines.append(
                f"  row {key}: " + ", ".join(f"{c} reference {x!r} found {y!r}" for c, (x, y) in cols.items())
            )
    return lines


# ----------------------------------------------------------------------------- one round
def soak_round(n: int, work: Path, rng: random.Random, sources: list[str], serial_s: float,
               expected: dict[str, list[tuple]]) -> Round:  # fmt: skip
    """Plan, play, finish and verify one round; returns it with its counters and notes."""
    rnd = Round(n, work / f"round_{n}", work / LOGS / f"round_{n}")
    for folder in (rnd.dir, rnd.catalog, rnd.shards_out, rnd.logs):
        folder.mkdir(parents=True)
    config = pipeline(rnd.dir / "pipeline.yaml", rnd.catalog, sources)
    exclude = {rnd.catalog, rnd.shards_out, work / LOGS}
    before = snapshot(work, exclude)
    plan_round(rnd, rng, config, serial_s)
    execute(rnd)
    judge_sides(rnd)
    if rnd.side("vacuum"):
        rnd.add("vacuum_zero_tries")
        if not try_vacuum_zero(rnd, rng):
            rnd.add("vacuum_zero_failed")
    finish(rnd, config)
    outside = containment_diff(before, snapshot(work, exclude))
    rnd.add("outside_files", len(outside))
    rnd.notes += [f"outside the output folders: {line}" for line in outside[:20]]
    if rnd.side("shards"):
        bad, leftovers = shard_violations(rnd)
        rnd.add("unlisted_shards", len(bad))
        rnd.add("shard_leftovers", len(leftovers))
        rnd.notes += bad[:20] + [f"shard folder leftover {f}" for f in leftovers[:20]]
    compare(rnd, expected)
    return rnd


def failed(rnd: Round) -> bool:
    return bool(rnd.notes) or any(rnd.stats.get(k) for k in (*MUST_BE_ZERO, "vacuum_zero_failed"))


def report_failure(rnd: Round, keep: Path | None) -> None:
    """Describe a failing round on stderr (processes, kill moments, exit codes, notes); keep its files."""
    lines = [f"round {rnd.n} FAILED:"] + [f"  {p.describe()}" for p in rnd.procs]
    lines += [f"  ! {note}" for note in rnd.notes]
    print("\n".join(lines), file=sys.stderr, flush=True)
    if keep is not None:
        target = keep / f"round_{rnd.n}"
        shutil.copytree(rnd.dir, target / "round", symlinks=True, dirs_exist_ok=True)
        shutil.copytree(rnd.logs, target / LOGS, symlinks=True, dirs_exist_ok=True)
        (target / "report.txt").write_text("\n".join(lines) + "\n")


def add_round(stats: dict, rnd: Round) -> None:
    """Fold a round's counters into the totals (max_concurrent is a maximum, the rest are sums)."""
    for key, value in rnd.stats.items():
        if key in ("max_concurrent", "max_processes"):
            stats[key] = max(stats[key], value)
        elif key in stats:
            stats[key] += value
    stats["vacuum_zero_refused"] = stats["vacuum_zero_refused"] and not rnd.stats.get("vacuum_zero_failed")
    stats["rounds"] += 1


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="start no round after this long")
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=None, help="stop after this many rounds")
    parser.add_argument("--tiny", action="store_true", help="quick check: --minutes 1 --videos 3")
    parser.add_argument("--keep-failed", type=Path, default=None, help="copy failing rounds' files here")
    args = parser.parse_args()
    if args.tiny:
        args.minutes, args.videos = 1.0, 3
    return args


def main() -> None:
    args = parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="egocurate-soak-"))
    started_all = time.monotonic()
    try:
        (work / LOGS).mkdir()
        sources = make_sources(work, args.videos)
        ref = Catalog(work / "serial")
        started = time.perf_counter()
        serial = pipeline(work / "serial.yaml", Path(ref.root), sources)
        subprocess.run(cli(serial), check=True, capture_output=True, env=ENV, cwd=work)
        serial_seconds = time.perf_counter() - started
        expected = rows(ref)
        stats: dict = {k: 0 for k in COUNTERS} | {"vacuum_zero_refused": True}
        deadline = time.monotonic() + args.minutes * 60
        while time.monotonic() < deadline and (args.rounds is None or stats["rounds"] < args.rounds):
            rnd = soak_round(stats["rounds"], work, rng, sources, serial_seconds, expected)
            if failed(rnd):
                report_failure(rnd, args.keep_failed)
            add_round(stats, rnd)
            shutil.rmtree(rnd.dir, ignore_errors=True)
            shutil.rmtree(rnd.logs, ignore_errors=True)
        stats["seconds"] = round(time.monotonic() - started_all, 1)
        stats["serial_run_s"] = round(serial_seconds, 2)
        print(json.dumps(stats), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
