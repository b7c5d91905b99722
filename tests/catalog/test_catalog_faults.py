"""Fault injection: every table through every kind of damage, then check, repair and a rerun.

After each fault, every read command either fails with one `error:` line or returns the full data
(never less data without an error); `catalog check` names the fault (exit 1); `catalog repair`
fixes it keeping every row whose data still exists; a rerun restores the rest; `check` exits 0 and
every table holds exactly the keys of the undamaged catalog.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable
from deltalake.transaction import AddAction, CommitProperties, RemoveAction
from typer.testing import CliRunner

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.cli.main import app, user_error
from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline

KEYS = {
    "videos": ["video_id"],
    "clips": ["clip_id"],
    "quarantine": ["stage", "key"],
    "_ledger": ["stage", "key"],
}
# A column of each table a foreign file stores as text that cannot be cast back.
CAST_COLUMN = {"videos": "width", "clips": "start_frame", "quarantine": "time", "_ledger": "rows_out"}
FAULT_KIND = {
    "lost_file": "lost_file",
    "zero_byte_latest_entry": "damaged_log",
    "garbled_middle_entry": "damaged_log",
    "deleted_log_folder": "missing_log",
    "emptied_log_folder": "missing_log",
    "foreign_uncastable_file": "uncastable_file",
}


def _config(catalog: Path, sources: Path) -> PipelineConfig:
    return PipelineConfig(
        catalog=str(catalog),
        engine="local",
        sources=[str(sources)],
        commit_every=1,
        progress=False,
        stages=[
            {"name": "ingest", "params": {"batch_size": 1}},
            {
                "name": "shots",
                "params": {"detector": "fixed", "detector_params": {"window_s": 1.0}, "min_clip_s": 0.5},
            },  # fmt: skip
        ],
    )


def _keys(catalog: Catalog, name: str) -> list[tuple]:
    data = catalog.read(name, columns=KEYS[name])
    return sorted(zip(*(data.column(c).to_pylist() for c in KEYS[name]), strict=True))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, sample_videos, bad_files) -> dict:
    """A catalog built with one commit per row (several files and log entries per table)."""
    root = tmp_path_factory.mktemp("faults")
    sources = root / "src"
    sources.mkdir()
    for path in sample_videos:
        shutil.copy(path, sources / path.name)
    shutil.copy(bad_files["truncated"], sources / "broken.mp4")
    shutil.copy(bad_files["zero_length"], sources / "empty.mp4")
    run_pipeline(_config(root / "catalog", sources))
    catalog = Catalog(root / "catalog")
    keys = {name: _keys(catalog, name) for name in KEYS}
    assert all(keys.values()), keys  # every table has rows to lose
    assert all(len(catalog.files(name)) >= 2 for name in KEYS)
    return {"catalog": root / "catalog", "sources": sources, "keys": keys}


def _files_oldest_first(root: Path, name: str) -> list[str]:
    actions = pa.table(DeltaTable(str(root / name)).get_add_actions(flatten=True)).to_pylist()
    return [a["path"] for a in sorted(actions, key=lambda a: (a["modification_time"], a["path"]))]


def _entries(root: Path, name: str) -> list[Path]:
    return sorted((root / name / "_delta_log").glob("*.json"))


def _foreign_file(root: Path, name: str) -> None:
    """Swap a data file for a foreign copy whose column cannot be cast back (a real commit)."""
    dt = DeltaTable(str(root / name))
    victim = _files_oldest_first(root, name)[0]
    data = pq.read_table(root / name / victim)
    column = CAST_COLUMN[name]
    text = ["wide"] + [None if v is None else str(v) for v in data.column(column).to_pylist()[1:]]
    data = data.set_column(data.column_names.index(column), column, pa.array(text, pa.string()))
    foreign = "part-foreign-0000.parquet"
    pq.write_table(data, root / name / foreign)
    now = int(time.time() * 1000)
    dt.create_write_transaction(
        [RemoveAction(path=victim, data_change=True, deletion_timestamp=now, partition_values={}),
         AddAction(path=foreign, size=(root / name / foreign).stat().st_size, partition_values={},
                   modification_time=now, data_change=True, stats=json.dumps({"numRecords": data.num_rows}))],
        mode="append", schema=pa.schema(dt.schema().to_arrow()),
        commit_properties=CommitProperties(max_commit_retries=0),
    )  # fmt: skip


def _inject(root: Path, name: str, fault: str) -> set[tuple]:
    """Damage table `name`; returns the keys of the rows a lost file held (else empty)."""
    if fault == "lost_file":
        victim = root / name / _files_oldest_first(root, name)[0]
        data = pq.read_table(victim, columns=KEYS[name])
        victim.unlink()
        return set(zip(*(data.column(c).to_pylist() for c in KEYS[name]), strict=True))
    elif fault == "zero_byte_latest_entry":
        _entries(root, name)[-1].write_bytes(b"")
    elif fault == "garbled_middle_entry":
        _entries(root, name)[1].write_bytes(b'{"add": {"pa')
    elif fault == "deleted_log_folder":
        shutil.rmtree(root / name / "_delta_log")
    elif fault == "emptied_log_folder":
        for entry in (root / name / "_delta_log").iterdir():
            if entry.is_file():
                entry.unlink()
    elif fault == "foreign_uncastable_file":
        _foreign_file(root, name)
    return set()


def _cli(*args: str) -> tuple[int, str]:
    """Run a command in-process as the console entry point would: a user error is one line, exit 2."""
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        message = user_error(result.exception)
        assert message is not None, f"{args}: a traceback, not one line: {result.exception!r}"
        assert "\n" not in message
        return 2, f"error: {message}"
    return result.exit_code, result.output


def _read_commands(root: Path, name: str, expected: int) -> None:
    """Each read either fails in one line or returns every row of the undamaged table."""
    reads = {
        "show": ("catalog", "show", name, "-c", str(root), "--format", "json", "--limit", "100000"),
        "sql": ("catalog", "sql", f"SELECT count(*) AS n FROM {name}", "-c", str(root), "--format", "json"),
    }
    for what, args in reads.items():
        code, out = _cli(*args)
        if code != 0:
            assert code == 2 and out.strip().startswith("error:"), (what, code, out)
            assert len(out.strip().splitlines()) == 1, (what, out)
            continue
        rows = [json.loads(line) for line in out.splitlines() if line.strip()]  # JSON lines
        got = rows[0]["n"] if what == "sql" else len(rows)
        assert got == expected, f"{what} {name}: {got} of {expected} rows and no error"


@pytest.mark.parametrize("fault", list(FAULT_KIND))
@pytest.mark.parametrize("name", list(KEYS))
def test_fault_is_found_repaired_and_a_rerun_restores_every_row(tmp_path, pristine, name, fault):
    root = tmp_path / "catalog"
    shutil.copytree(pristine["catalog"], root)
    lost = _inject(root, name, fault)

    _read_commands(root, name, len(pristine["keys"][name]))
    code, out = _cli("catalog", "check", "-c", str(root))
    assert code == 1, out
    assert f"{name}: {FAULT_KIND[fault]}" in out, out

    code, out = _cli("catalog", "repair", "-c", str(root))
    assert code == 0, out
    catalog = Catalog(root)
    for other in KEYS:  # repair keeps what exists: nothing outside the damage is lost
        if other != name and other != "_ledger":
            assert _keys(catalog, other) == pristine["keys"][other], other
    if lost and name != "_ledger":  # exactly the lost file's rows are gone, every other row stays
        assert set(_keys(catalog, name)) == set(pristine["keys"][name]) - lost
    if lost and name == "videos":  # clips of the lost videos now dangle until the rerun
        code, out = _cli("catalog", "check", "-c", str(root))
        assert code == 1 and "clips: dangling_reference" in out, out

    run_pipeline(_config(root, pristine["sources"]))
    code, out = _cli("catalog", "check", "-c", str(root))
    assert code == 0, out
    for table in KEYS:
        assert _keys(Catalog(root), table) == pristine["keys"][table], table


def test_vacuum_refuses_a_retention_a_running_job_could_outlive(tmp_path, pristine):
    root = tmp_path / "catalog"
    shutil.copytree(pristine["catalog"], root)
    before = {p: p.stat().st_mtime for p in root.rglob("*") if p.is_file()}
    code, out = _cli("catalog", "vacuum", "videos", "-c", str(root), "--retention-hours", "0", "--no-dry-run")
    assert code == 2 and "running job" in out, out
    assert {p: p.stat().st_mtime for p in root.rglob("*") if p.is_file()} == before


def test_a_killed_runs_parts_are_counted_by_check_and_removed_by_repair(tmp_path, pristine):
    root = tmp_path / "catalog"
    shutil.copytree(pristine["catalog"], root)
    stale = root / "clips" / "part-killedrun-00000000.parquet"
    shutil.copy(root / "clips" / _files_oldest_first(root, "clips")[0], stale)
    old = time.time() - 2 * 3600
    os.utime(stale, (old, old))
    code, out = _cli("catalog", "check", "-c", str(root))
    assert code == 1 and "clips: orphan_files" in out, out
    assert _cli("catalog", "repair", "-c", str(root))[0] == 0
    assert not stale.exists()
    assert _cli("catalog", "check", "-c", str(root))[0] == 0
    assert _keys(Catalog(root), "clips") == pristine["keys"]["clips"]


def test_a_clean_run_leaves_no_unreferenced_part(pristine):
    """Every part a run wrote is either in the log or deleted (a fold or an already-present key)."""
    from egocurate.catalog.store import filesystem, logged_paths

    for name in KEYS:
        fs, path = filesystem(str(pristine["catalog"] / name), None)
        referenced = logged_paths(fs, f"{path}/_delta_log")
        on_disk = {p.name for p in (pristine["catalog"] / name).glob("*.parquet")}
        assert on_disk <= referenced, (name, sorted(on_disk - referenced))


def test_repair_commits_like_any_writer_and_keeps_a_row_committed_meanwhile(tmp_path, pristine):
    """Repair's rewrite is a compare-and-swap commit: a writer that commits between its plan and
    its commit makes it start again, and that writer's row survives (a blind overwrite lost it)."""
    from egocurate.catalog.repair import repair_files

    root = tmp_path / "catalog"
    shutil.copytree(pristine["catalog"], root)
    catalog = Catalog(root)
    extra = catalog.read("clips").slice(0, 1).to_pylist()[0] | {"clip_id": "committed-meanwhile"}
    _foreign_file(root, "clips")
    real_rewrite, calls = catalog.rewrite_files, []

    def plan_then_race(spec, plan, **kwargs):
        def racing_plan(dt):
            calls.append(dt.version())
            if len(calls) == 1:  # another writer commits right after this attempt planned
                catalog.append(tables.CLIPS, pa.Table.from_pylist([extra], schema=tables.CLIPS.schema))
            return plan(dt)

        return real_rewrite(spec, racing_plan, **kwargs)

    catalog.rewrite_files = plan_then_race
    change = repair_files(catalog, "clips", None)
    assert change is not None and len(calls) >= 2 and calls[1] > calls[0]
    ids = set(Catalog(root).read("clips", columns=["clip_id"]).column("clip_id").to_pylist())
    assert "committed-meanwhile" in ids
    assert len(ids) == len(pristine["keys"]["clips"])  # + the new row - the one uncastable row


def test_two_repairs_at_once_do_the_work_once_and_move_no_valid_commit_aside(tmp_path, pristine):
    """Both exit 0; `_corrupt/` holds only the damaged bytes (never a valid commit); nothing lost."""
    import subprocess
    import sys

    root = tmp_path / "catalog"
    shutil.copytree(pristine["catalog"], root)
    _inject(root, "clips", "garbled_middle_entry")
    _inject(root, "videos", "zero_byte_latest_entry")
    procs = [
        subprocess.Popen([sys.executable, "-m", "egocurate.cli.main", "catalog", "repair", "-c", str(root)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]  # fmt: skip
    for proc in procs:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out
    for name in ("clips", "videos"):
        for copy in (root / name / "_delta_log" / "_corrupt").iterdir():
            assert copy.read_bytes() in (b"", b'{"add": {"pa'), copy  # a damaged entry, never a commit
    run_pipeline(_config(root, pristine["sources"]))
    assert _cli("catalog", "check", "-c", str(root))[0] == 0
    for table in KEYS:
        assert _keys(Catalog(root), table) == pristine["keys"][table], table


@pytest.mark.parametrize("command", ["query", "export", "shards", "stats", "report"])
def test_a_lost_data_file_is_one_error_line_in_every_command_that_reads_it(tmp_path, pristine, command):
    root = tmp_path / "catalog"
    shutil.copytree(pristine["catalog"], root)
    _inject(root, "clips", "lost_file")
    out_dir = tmp_path / "out"
    args = {
        "query": ("query", "-c", str(root), "--out", str(tmp_path / "m.jsonl")),
        "export": ("export", "dreamdojo", "-c", str(root), "--out", str(out_dir), "--query",
                   "SELECT clip_id FROM clip_view"),
        "shards": ("shards", "write", "-c", str(root), "--out", str(out_dir), "--query",
                   "SELECT clip_id FROM clip_view"),
        "stats": ("stats", "-c", str(root)),
        "report": ("report", "-c", str(root), "--out", str(tmp_path / "r.html")),
    }[command]  # fmt: skip
    code, out = _cli(*args)
    assert code == 2, out
    lines = [line for line in out.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "clips" in lines[0], out
    assert not out_dir.exists() or not any(out_dir.rglob("*.mp4")) and not any(out_dir.rglob("*.parquet"))


def test_a_ledger_row_written_for_work_found_done_says_what_the_run_did(tmp_path, pristine):
    """Keys done but never ledgered (a kill, or a writer that ledgers them for another) get the
    rows_out and quarantined the finished run would have written, so check can still compare."""
    root = tmp_path / "catalog"
    shutil.copytree(pristine["catalog"], root)
    shutil.rmtree(root / "_ledger")  # every stage's work is in its tables, none in the ledger
    run_pipeline(_config(root, pristine["sources"]))
    columns = ["stage", "key", "rows_out", "quarantined"]

    def ledger(path: Path) -> list[dict]:
        return sorted(
            Catalog(path).read("_ledger", columns=columns).to_pylist(), key=lambda r: (r["stage"], r["key"])
        )

    assert ledger(root) == ledger(pristine["catalog"])
    assert any(r["quarantined"] for r in ledger(root)) and any(r["rows_out"] > 1 for r in ledger(root))
