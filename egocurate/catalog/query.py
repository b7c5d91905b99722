"""The joined clip view and SQL over the catalog: DuckDB locally, Spark SQL on a cluster.

Both read the same Delta tables without any jar or extension: DuckDB scans the tables' Arrow
datasets (from ``deltalake``), Spark reads the Parquet files of each table's current version.
Thresholds become the view's ``keep`` column, so changing one never needs a recompute.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa

from egocurate.catalog import tables
from egocurate.catalog.keep import keep_predicate
from egocurate.catalog.store import Catalog

# Tables joined into the clip view, with the alias used in SQL. Embedding vectors and latent arrays
# stay out of the view (they are large); join `clip_embeddings` / `clip_latents` explicitly for them.
VIEW_JOINS: tuple[tuple[str, str, str], ...] = (
    ("videos", "v", "video_id"),
    ("clip_quality", "q", "clip_id"),
    ("clip_dedup", "d", "clip_id"),
    ("clip_labels", "l", "clip_id"),
    ("clip_latents", "a", "clip_id"),
    ("clip_tokenizer_latents", "k", "clip_id"),
)
HEAVY_COLUMNS = {"vector", "latent_actions", "latent_logvar", "latent", "extra_json", "fingerprint"}
RENAMES = {
    "videos": {
        "width": "video_width",
        "height": "video_height",
        "fps": "video_fps",
        "duration_s": "video_duration_s",
        "num_frames": "video_num_frames",
        "bytes": "video_bytes",
    }
}


# The tables are Arrow datasets registered by the connection (read by pyarrow, not by DuckDB's
# file systems), so disabling external access costs the reads nothing.
READ_ONLY_CONFIG = {"enable_external_access": False, "lock_configuration": True}


def keep_expression(thresholds: Mapping[str, float] | None) -> str:
    """SQL boolean for the view's `keep` column (defined by the filters package's thresholds)."""
    return keep_predicate(dict(thresholds or {}))


def clip_view_sql(thresholds: Mapping[str, float] | None = None) -> str:
    """SELECT statement of the clip view over tables registered under their own names."""
    selected = set(tables.CLIPS.columns)
    columns = [f"c.{name}" for name in tables.CLIPS.columns]
    joins = []
    for name, alias, key in VIEW_JOINS:
        spec = tables.spec_for(name)
        for column in spec.columns:
            out_name = RENAMES.get(name, {}).get(column, column)
            if column in HEAVY_COLUMNS or out_name in selected:
                continue
            selected.add(out_name)
            if (name, column) == ("videos", "origin"):  # rows ingested before origins existed are real
                columns.append(f"coalesce({alias}.origin, 'real') AS origin")
                continue
            columns.append(f"{alias}.{column} AS {out_name}" if out_name != column else f"{alias}.{column}")
        joins.append(f"LEFT JOIN {name} {alias} ON c.{key} = {alias}.{key}")
    keep = keep_expression(thresholds)
    return f"SELECT {', '.join(columns)}, ({keep}) AS keep FROM clips c " + " ".join(joins)


def _has_half(dtype: pa.DataType) -> bool:
    if pa.types.is_float16(dtype):
        return True
    return (pa.types.is_list(dtype) or pa.types.is_fixed_size_list(dtype)) and _has_half(dtype.value_type)


def _duckdb_source(dataset: Any, schema: pa.Schema) -> Any:
    """What DuckDB can scan: the dataset itself, or, if it has float16 columns (DuckDB has no half
    type), a materialised projection without them (read those with ``Catalog.read``)."""
    source_schema = dataset.schema if dataset is not None else schema
    keep = [f.name for f in source_schema if not _has_half(f.type)]
    if len(keep) == len(source_schema):
        return dataset if dataset is not None else schema.empty_table()
    if dataset is None:
        return schema.empty_table().select(keep)
    return dataset.to_table(columns=keep)


def connect(
    catalog: Catalog, thresholds: Mapping[str, float] | None = None, version: int | None = None
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with every catalog table registered by name, plus the `clip_view`.

    `version` time-travels every table to that Delta version (a table younger than it reads empty).
    The connection is read-only to the outside: SQL given by users (`catalog sql`, `shards write
    --query`) can read the registered tables but never write or read a file (``COPY ... TO``,
    ``ATTACH``, ``read_csv``), nor load an extension or change that setting back.
    """
    con = duckdb.connect(config=READ_ONLY_CONFIG)
    for name, spec in tables.SPECS.items():
        # An absent table reads as empty; a broken one raises CatalogReadError (never "empty").
        latest = catalog.version(name)
        if latest is None or (version is not None and version > latest):
            dataset = None  # absent, or time travel past this table's newest version
        else:
            dataset = catalog.dataset(name, version) if version is not None else catalog.dataset(name)
        con.register(name, _duckdb_source(dataset, spec.schema))
    for name in catalog.tables():
        if name not in tables.SPECS:  # tables written by newer stages or by users
            ds = catalog.dataset(name)
            if ds is not None:
                con.register(name, _duckdb_source(ds, ds.schema))
    con.execute(f"CREATE OR REPLACE TEMP VIEW clip_view AS {clip_view_sql(thresholds)}")
    return con


def sql(catalog: Catalog, query: str, thresholds: Mapping[str, float] | None = None) -> pa.Table:
    """Run SQL over the catalog (tables by name, plus `clip_view`) and return Arrow."""
    con = connect(catalog, thresholds)
    try:
        return con.sql(query).to_arrow_table()
    finally:
        con.close()


def clip_view(
    catalog: Catalog, thresholds: Mapping[str, float] | None = None, where: str | None = None
) -> pa.Table:
    """The joined clip view as Arrow, optionally filtered by a SQL `where` clause."""
    query = "SELECT * FROM clip_view" + (f" WHERE {where}" if where else "") + " ORDER BY clip_id"
    return sql(catalog, query, thresholds)


# ---------------------------------------------------------------------------------------- Spark
def spark_dataframe(spark: Any, catalog: Catalog, name: str, version: int | None = None) -> Any:
    """A Spark DataFrame of a Delta table's current (or given) version, read as plain Parquet.

    This needs no Delta jars: the file list comes from the Delta log via ``deltalake``.
    """
    files = catalog.files(name, version)
    spec = tables.SPECS.get(name)
    if not files:
        return spark.createDataFrame(tables.spec_for(name).schema.empty_table())
    # Files of a table written before a column existed lack it: merge the files' schemas, then add
    # what the spec declares and no file has yet as nulls (as Catalog.dataset does for DuckDB).
    frame = spark.read.option("mergeSchema", "true").parquet(*files)
    missing = [f for f in spec.schema if f.name not in frame.columns] if spec is not None else []
    if missing:
        from pyspark.sql import functions
        from pyspark.sql.pandas.types import from_arrow_type

        for fld in missing:
            frame = frame.withColumn(fld.name, functions.lit(None).cast(from_arrow_type(fld.type)))
    return frame


def register_spark_views(
    spark: Any,
    catalog: Catalog,
    thresholds: Mapping[str, float] | None = None,
    names: list[str] | None = None,
) -> list[str]:
    """Register catalog tables (and `clip_view`) as Spark temp views; returns the names registered."""
    wanted = names or [n for n in tables.SPECS if n not in ("clip_embeddings",)]
    for name in wanted:
        spark_dataframe(spark, catalog, name).createOrReplaceTempView(name)
    if not {"clips", *(name for name, _, _ in VIEW_JOINS)} <= set(wanted):
        return wanted  # the view needs every table it joins
    spark.sql(f"CREATE OR REPLACE TEMP VIEW clip_view AS {clip_view_sql(thresholds)}")
    return [*wanted, "clip_view"]
