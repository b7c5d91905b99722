"""Corpus statistics time on synthetic clip rows: the local runner (DuckDB) and the Spark job, side by side.

    .venv/bin/python benchmarks/stats.py [--clips 1000000] [--master local[*]] [--keep-catalog DIR]

Prints one JSON line per measurement: data generation, Delta write, local statistics, Spark session
start, Spark statistics, and whether both engines gave identical numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from egocurate.catalog import tables  # noqa: E402
from egocurate.catalog.store import Catalog  # noqa: E402
from egocurate.jobs.corpus import stats as corpus_stats  # noqa: E402
from egocurate.testing.corpus_tables import synthetic_tables  # noqa: E402


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=1_000_000)
    parser.add_argument("--master", default=os.environ.get("EGOCURATE_SPARK_MASTER", "local[*]"))
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--keep-catalog", default=None, help="write the catalog here and keep it")
    parser.add_argument("--skip-spark", action="store_true")
    args = parser.parse_args()

    root = args.keep_catalog or tempfile.mkdtemp(prefix="egocurate-stats-bench-")
    catalog = Catalog(root)
    try:
        if not catalog.exists("clips"):
            start = time.perf_counter()
            data = synthetic_tables(args.clips, seed=0)
            emit(
                benchmark="stats",
                step="generate",
                clips=args.clips,
                seconds=round(time.perf_counter() - start, 2),
            )
            start = time.perf_counter()
            for name, table in data.items():
                catalog.append(tables.spec_for(name), table)
            del data
            emit(
                benchmark="stats",
                step="write_delta",
                clips=args.clips,
                seconds=round(time.perf_counter() - start, 2),
            )
        start = time.perf_counter()
        local = corpus_stats.compute_local(catalog)
        local_s = time.perf_counter() - start
        emit(
            benchmark="stats",
            engine="local",
            clips=local.summary["clips"],
            hours=round(local.hours(), 1),
            unique_tasks=local.summary["unique_tasks"],
            seconds=round(local_s, 2),
            clips_per_s=round(local.summary["clips"] / local_s),
        )
        if args.skip_spark:
            return
        from egocurate.jobs.runners.spark import spark_session

        start = time.perf_counter()
        spark = spark_session(
            args.master,
            app_name="egocurate-stats-bench",
            conf={"spark.sql.shuffle.partitions": str(args.shuffle_partitions)},
        )
        emit(
            benchmark="stats",
            engine="spark",
            step="session",
            master=args.master,
            seconds=round(time.perf_counter() - start, 2),
        )
        start = time.perf_counter()
        on_spark = corpus_stats.compute_spark(catalog, spark=spark)
        spark_s = time.perf_counter() - start
        emit(
            benchmark="stats",
            engine="spark",
            clips=on_spark.summary["clips"],
            master=args.master,
            seconds=round(spark_s, 2),
            clips_per_s=round(on_spark.summary["clips"] / spark_s),
        )
        emit(
            benchmark="stats",
            step="compare",
            identical=on_spark == local,
            spark_over_local=round(spark_s / local_s, 2),
        )
        spark.stop()
    finally:
        if not args.keep_catalog:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
