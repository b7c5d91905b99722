"""Query by label: the same clips as SQL over the clip view, printed and written as a manifest."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from egocurate.annotate.label_query import LabelQuery
from egocurate.catalog import tables
from egocurate.catalog.query import connect, sql
from egocurate.catalog.store import Catalog
from egocurate.cli.annotate import app
from egocurate.testing.corpus_tables import synthetic_tables


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    cat = Catalog(tmp_path_factory.mktemp("query"))
    data = synthetic_tables(4_000, seed=3)
    # Plant a few known clips so the globs below have something to find.
    labels = data["clip_labels"]
    ids = labels.column("clip_id").to_pylist()
    planted = {
        ids[0]: ("pour liquid", "kitchen"),
        ids[1]: ("pour water", "Kitchen"),
        ids[2]: ("pour juice", "office"),
    }
    tasks = [
        planted.get(i, (t, None))[0] for i, t in zip(ids, labels.column("task").to_pylist(), strict=True)
    ]
    scenes = [
        planted[i][1] if i in planted else s
        for i, s in zip(ids, labels.column("scene").to_pylist(), strict=True)
    ]
    labels = labels.set_column(labels.schema.get_field_index("task"), "task", pa.array(tasks))
    data["clip_labels"] = labels.set_column(labels.schema.get_field_index("scene"), "scene", pa.array(scenes))
    for name, table in data.items():
        cat.append(tables.spec_for(name), table)
    return cat


def _ids(table: pa.Table) -> list[str]:
    return table.column("clip_id").to_pylist()


def test_query_by_task_equals_sql_over_the_view(catalog):
    spec = LabelQuery(task="pour*", scene="kitchen", min_seconds=0.0, keep=True)
    query, params = spec.sql()
    con = connect(catalog)
    try:
        by_label = _ids(con.sql(query, params=params).to_arrow_table())
    finally:
        con.close()
    by_sql = _ids(
        sql(
            catalog,
            "SELECT clip_id FROM clip_view WHERE lower(task) GLOB 'pour*' "
            "AND lower(scene) = 'kitchen' AND duration_s >= 0 AND keep ORDER BY clip_id",
        )
    )
    assert by_label == by_sql and len(by_sql) >= 2
    # The same holds across many label globs, with and without duration bounds.
    for task, minimum in (("cut *", 4.0), ("*drawer", None), ("p?ck and place *", 2.5), ("*", 30.0)):
        spec = LabelQuery(task=task, min_seconds=minimum)
        where = f"lower(coalesce(task, task_text, '')) GLOB '{task}'" + (
            f" AND duration_s >= {minimum}" if minimum else ""
        )
        expected = _ids(sql(catalog, f"SELECT clip_id FROM clip_view WHERE {where} ORDER BY clip_id"))
        got = _ids(sql(catalog, spec.inline_sql("clip_id")))
        assert got == expected and 0 < len(got) < 4_000, task


def test_object_and_source_filters(catalog):
    spec = LabelQuery(objects=["cup", "*"], source="ego*", max_seconds=10)
    got = sql(catalog, spec.inline_sql("clip_id, objects, dataset, duration_s"))
    assert got.num_rows > 0
    for row in got.to_pylist():
        assert "cup" in row["objects"] and row["dataset"].startswith("ego") and row["duration_s"] <= 10


def test_query_command_prints_and_writes_manifests(catalog, tmp_path):
    runner = CliRunner()
    parquet = tmp_path / "m.parquet"
    args = [
        "query",
        "--catalog",
        catalog.root,
        "--task",
        "pour*",
        "--scene",
        "kitchen",
        "--min-seconds",
        "0",
        "--keep",
    ]
    result = runner.invoke(app, [*args, "--out", str(parquet), "--sql"])
    assert result.exit_code == 0, result.output
    manifest = pq.read_table(parquet)
    assert manifest.num_rows >= 2 and f"{manifest.num_rows} clip(s)" in result.output
    assert {"clip_id", "video_id", "uri", "start_frame", "end_frame", "task", "scene"} <= set(
        manifest.column_names
    )
    assert "GLOB lower('pour*')" in result.output
    jsonl = tmp_path / "m.jsonl"
    assert runner.invoke(app, [*args, "--out", str(jsonl), "--show", "0"]).exit_code == 0
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["clip_id"] for r in rows] == manifest.column("clip_id").to_pylist()
    bad = runner.invoke(app, ["query", "--catalog", catalog.root, "--threshold", "motion"])
    assert bad.exit_code == 2 and "NAME=NUMBER" in bad.output
