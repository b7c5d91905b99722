"""Commits that check keys only against what others added since the plan, and compaction beside them."""

from __future__ import annotations

import threading

import pyarrow as pa

from egocurate.catalog import tables
from egocurate.catalog.health import check
from egocurate.catalog.store import Catalog

LEDGER_KEY = [("key", "stage")]


def _ledger(keys: list[str], stage: str = "s") -> pa.Table:
    return pa.table({"stage": [stage] * len(keys), "key": keys, "rows_out": [1] * len(keys)})


def test_a_key_another_writer_committed_after_the_base_lands_once(tmp_path):
    mine, other = Catalog(tmp_path / "cat"), Catalog(tmp_path / "cat")
    mine.ensure(tables.LEDGER)
    base = mine.commit_base("_ledger", {"stage": "s"})
    other.append_unique(tables.LEDGER, _ledger(["k1", "k2"]), unique=LEDGER_KEY)  # the racing writer
    mine.append_unique(tables.LEDGER, _ledger(["k2", "k3"]), unique=LEDGER_KEY, base=base)
    keys = sorted(mine.read("_ledger").column("key").to_pylist())
    assert keys == ["k1", "k2", "k3"]  # k2 once
    assert base.files_read == 1  # the other writer's one file, not the table


def test_files_of_other_stages_and_compaction_are_never_read(tmp_path):
    mine, other = Catalog(tmp_path / "cat"), Catalog(tmp_path / "cat")
    for i in range(3):
        mine.append_unique(tables.LEDGER, _ledger([f"old{i}"]), unique=LEDGER_KEY)
    base = mine.commit_base("_ledger", {"stage": "s"})
    other.append_unique(tables.LEDGER, _ledger(["x"], stage="other"), unique=LEDGER_KEY)  # ruled out by stats
    other.optimize("_ledger")  # dataChange false: no new keys
    for i in range(3):
        mine.append_unique(tables.LEDGER, _ledger([f"new{i}"]), unique=LEDGER_KEY, base=base)
    assert base.files_read == 0
    assert mine.count("_ledger") == 7


def test_optimize_beside_a_writer_loses_and_doubles_nothing_and_leaves_the_catalog_clean(tmp_path):
    writer, compactor = Catalog(tmp_path / "cat"), Catalog(tmp_path / "cat")
    writer.ensure(tables.LEDGER)
    base = writer.commit_base("_ledger", {"stage": "s"})
    done = threading.Event()

    def compact() -> None:
        while not done.is_set():
            compactor.optimize("_ledger")

    thread = threading.Thread(target=compact)
    thread.start()
    try:
        for i in range(40):
            writer.append_unique(tables.LEDGER, _ledger([f"k{i}"]), unique=LEDGER_KEY, base=base)
    finally:
        done.set()
        thread.join()
    keys = writer.read("_ledger").column("key").to_pylist()
    assert sorted(keys) == sorted(f"k{i}" for i in range(40))
    history = [h.get("operation") for h in writer.history("_ledger")]
    assert "OPTIMIZE" in history
    assert writer.read("_ledger", version=5).num_rows >= 1  # time travel still works
    assert check(writer) == []
