"""Log retention: expired log entries are cleaned at checkpoints, and nothing is lost or doubled.

A commit on a local file system lists the whole `_delta_log` folder (deltalake's local object
store), so the log's length, not the table's, is what a long run's commits pay for; a retention
bounds it. These tests use a retention of 0 hours so that every checkpoint cleans up.
"""

from __future__ import annotations

import os

import pyarrow as pa
import pytest

from egocurate.catalog import tables
from egocurate.catalog.health import check
from egocurate.catalog.store import Catalog, CatalogPathError

LEDGER_KEY = [("key", "stage")]


def _ledger(keys: list[str], stage: str = "s") -> pa.Table:
    return pa.table({"stage": [stage] * len(keys), "key": keys, "rows_out": [1] * len(keys)})


def _entries(catalog: Catalog, name: str) -> list[str]:
    log = f"{catalog.uri(name)}/_delta_log"
    return sorted(e for e in os.listdir(log) if e.endswith(".json"))


def test_a_writer_whose_unread_entries_were_cleaned_up_doubles_nothing(tmp_path):
    stale, busy = (
        Catalog(tmp_path / "cat", log_retention_hours=0),
        Catalog(tmp_path / "cat", log_retention_hours=0),
    )
    stale.ensure(tables.LEDGER)
    assert (
        stale.table("_ledger").metadata().configuration["delta.logRetentionDuration"] == "interval 0 seconds"
    )
    base = stale.commit_base("_ledger", {"stage": "s"})
    busy_base = busy.commit_base("_ledger", {"stage": "s"})
    for i in range(105):  # past deltalake's checkpoint interval (100): the checkpoint cleans up
        busy.append_unique(tables.LEDGER, _ledger([f"k{i}"]), unique=LEDGER_KEY, base=busy_base)
    entries = _entries(stale, "_ledger")
    assert int(entries[0][:-5]) > base.version + 1, "the entries after the stale base were not cleaned"
    assert len(entries) < 20
    # The stale writer's commit repeats keys the busy writer committed in cleaned-up entries.
    stale.append_unique(tables.LEDGER, _ledger(["k3", "k50", "new"]), unique=LEDGER_KEY, base=base)
    keys = stale.read("_ledger").column("key").to_pylist()
    assert len(keys) == len(set(keys)) == 106
    assert "new" in keys
    # and the next commit of the stale writer goes on from the log again
    stale.append_unique(tables.LEDGER, _ledger(["k104", "new2"]), unique=LEDGER_KEY, base=base)
    assert stale.count("_ledger") == 107
    assert check(stale, lambda stages: {}) == []


def test_a_retention_set_later_reaches_an_existing_table(tmp_path):
    Catalog(tmp_path / "cat").ensure(tables.LEDGER)
    dt = Catalog(tmp_path / "cat").table("_ledger")
    assert "delta.logRetentionDuration" not in dt.metadata().configuration
    later = Catalog(tmp_path / "cat", log_retention_hours=24)
    later.ensure(tables.LEDGER)
    assert (
        later.table("_ledger").metadata().configuration["delta.logRetentionDuration"]
        == "interval 86400 seconds"
    )


def test_a_bad_retention_is_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("EGOCURATE_LOG_RETENTION_HOURS", "a week")
    with pytest.raises(CatalogPathError, match="EGOCURATE_LOG_RETENTION_HOURS"):
        Catalog(tmp_path / "cat")
    with pytest.raises(CatalogPathError, match="0 hours or more"):
        Catalog(tmp_path / "cat", log_retention_hours=-1)
