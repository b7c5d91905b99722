"""Corpus statistics over the clip view, defined once as SQL that DuckDB and Spark SQL both run.

Every number is an integer count or a sum of whole milliseconds, so the local runner (DuckDB) and
the Spark job give identical results whatever order they add in; hours are derived afterwards.
The long tail (how many labels cover 50%, 90% and 99% of hours) is computed here from the small
per-label tables, by the same Python code for both engines.

The driver (``jobs.corpus.stats``) runs the SQL on an engine and stores the result as rows of the
``stats`` Delta table, so statistics are versioned with the catalog.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa

Dialect = Literal["duckdb", "spark"]
RunSQL = Callable[[str], pa.Table]

MS_PER_HOUR = 3_600_000
COVERAGE = (50, 90, 99)
LABEL_SECTIONS = ("per_task", "per_scene", "per_object", "per_source", "per_label_source")
TAIL_KINDS = {"task": "per_task", "scene": "per_scene", "object": "per_object"}

DURATION_BINS = ((0, 2), (2, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 128), (128, None))
RESOLUTION_BINS = (
    (0, 240, "<240p"), (240, 360, "240p"), (360, 480, "360p"), (480, 720, "480p"),
    (720, 1080, "720p"), (1080, 1440, "1080p"), (1440, 2160, "1440p"), (2160, None, "2160p+"),
)  # fmt: skip
UNKNOWN = "unknown"


def format_duration(ms: float | None) -> str:
    """A duration at a precision that fits its size: seconds under a minute, minutes under an hour,
    hours above (a small corpus of 2.4 minutes does not read as "0.04 h")."""
    if ms is None:
        return "unknown"
    seconds = float(ms) / 1000.0
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    hours = seconds / 3600
    return f"{hours:,.2f} h" if hours < 1000 else f"{hours:,.0f} h"


def iso_time(epoch_ms: int | float | None) -> str:
    """A stored time (epoch milliseconds, as Delta records commits) as ISO-8601 UTC."""
    if epoch_ms is None:
        return ""
    from datetime import UTC, datetime

    moment = datetime.fromtimestamp(float(epoch_ms) / 1000, UTC)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def duration_label(lo: float, hi: float | None) -> str:
    return f"{lo}-{hi}s" if hi is not None else f">={lo}s"


BIN_ORDER = {
    "duration_hist": [duration_label(lo, hi) for lo, hi in DURATION_BINS] + [UNKNOWN],
    "resolution_hist": [name for _, _, name in RESOLUTION_BINS] + [UNKNOWN],
}


@dataclass(frozen=True, order=True)
class StatRow:
    """One group of clips: its label(s), clip count, total and kept milliseconds."""

    label: str
    label2: str = ""
    clips: int = 0
    ms: int = 0
    kept_ms: int = 0

    @property
    def hours(self) -> float:
        return self.ms / MS_PER_HOUR

    @property
    def kept_hours(self) -> float:
        return self.kept_ms / MS_PER_HOUR


@dataclass
class CorpusStats:
    """Statistics of one catalog state: summary counts, grouped sections and the long tail."""

    summary: dict[str, int] = field(default_factory=dict)
    sections: dict[str, list[StatRow]] = field(default_factory=dict)
    long_tail: dict[str, dict[str, int]] = field(default_factory=dict)

    def section(self, name: str) -> list[StatRow]:
        return self.sections.get(name, [])

    def hours(self, key: str = "ms") -> float:
        return self.summary.get(key, 0) / MS_PER_HOUR

    def top(self, name: str, n: int) -> list[StatRow]:
        return self.section(name)[:n]


# ----------------------------------------------------------------------------------------- SQL
def _identifier(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise ValueError(f"not a column name: {name!r}")
    return name


def rule_reason_sql(rules: Iterable[tuple[str, str, float]]) -> str:
    """SQL naming the first rule a clip fails; a rule is (column, comparison, value).

    Comparisons are ``>=``, ``<=``, ``>``, ``<``, or ``is`` (the column must be true). A missing score
    fails nothing, as in the keep predicate. Clips that fail no rule are ``other``.
    """
    flipped = {">=": "<", "<=": ">", ">": "<=", "<": ">="}
    cases = []
    for column, comparison, value in rules:
        column = _identifier(column)
        if comparison == "is":
            label = "near duplicate" if column == "is_representative" else f"not {column}"
            cases.append(f"WHEN {column} = FALSE THEN '{label}'")
        elif comparison in flipped:
            number = float(value)
            label = f"{column} {flipped[comparison]} {number:g}"
            cases.append(f"WHEN NOT ({column} {comparison} {number!r}) THEN '{label}'")
        else:
            raise ValueError(f"unknown comparison {comparison!r} for {column}")
    return "CASE " + " ".join(cases) + " ELSE 'other' END" if cases else "'other'"


def threshold_reason_sql(thresholds: Mapping[str, float], columns: Iterable[str]) -> str:
    """Reasons for thresholds named ``min_<col>`` / ``max_<col>`` (plus near duplicates), when the
    filters package does not describe its own; thresholds on unknown columns are ignored."""
    known = set(columns)
    rules = []
    for key, value in sorted(thresholds.items()):
        bound, _, column = key.partition("_")
        if bound in ("min", "max") and column in known:
            rules.append((column, ">=" if bound == "min" else "<=", float(value)))
    if "is_representative" in known:
        rules.append(("is_representative", "is", 1.0))
    return rule_reason_sql(rules)


def base_sql(reason_expression: str = "'other'") -> str:
    """One row per clip with what statistics need; milliseconds are exact integers."""
    duration = "COALESCE(duration_s, end_s - start_s, 0)"
    return (
        "SELECT clip_id, video_id, task, scene, objects, label_source, "
        "COALESCE(dataset, source, 'unknown') AS source, "
        f"CAST(FLOOR({duration} * 1000 + 0.5) AS BIGINT) AS ms, {duration} AS dur, "
        "COALESCE(width, video_width) AS w, COALESCE(height, video_height) AS h, "
        "COALESCE(keep, FALSE) AS kept, "
        f"CASE WHEN COALESCE(keep, FALSE) THEN NULL ELSE ({reason_expression}) END AS reason "
        "FROM clip_view"
    )


def _duration_case() -> str:
    whens = []
    for lo, hi in DURATION_BINS:
        cond = f"dur >= {lo}" + (f" AND dur < {hi}" if hi is not None else "")
        whens.append(f"WHEN {cond} THEN '{duration_label(lo, hi)}'")
    return f"CASE {' '.join(whens)} ELSE '{UNKNOWN}' END"


def _resolution_case() -> str:
    short = "LEAST(w, h)"
    whens = []
    for lo, hi, name in RESOLUTION_BINS:
        cond = f"{short} >= {lo}" + (f" AND {short} < {hi}" if hi is not None else "")
        whens.append(f"WHEN {cond} THEN '{name}'")
    return f"CASE {' '.join(whens)} ELSE '{UNKNOWN}' END"


AGG = "COUNT(*) AS clips, SUM(ms) AS ms, SUM(CASE WHEN kept THEN ms ELSE 0 END) AS kept_ms"
BASE = "stats_base"  # the per-clip rows, materialised once per run (a temp table / cached view)


SUMMARY_SQL = (
    "SELECT COUNT(*) AS clips, COALESCE(SUM(ms), 0) AS ms, "
    "COALESCE(SUM(CASE WHEN kept THEN ms ELSE 0 END), 0) AS kept_ms, "
    "COALESCE(SUM(CASE WHEN kept THEN 1 ELSE 0 END), 0) AS kept_clips, "
    f"COUNT(DISTINCT video_id) AS videos, COUNT(task) AS labelled_clips FROM {BASE}"
)

# Each grouped section is one grouping set of a single aggregation (one engine job for all of them).
GROUPINGS: dict[str, tuple[str, ...]] = {
    "per_task": ("task",),
    "per_scene": ("scene",),
    "per_source": ("source",),
    "per_label_source": ("label_source",),
    "cooccurrence": ("task", "scene"),
    "filter": ("kept_label",),
    "filter_reason": ("reason",),
    "duration_hist": ("dur_bin",),
    "resolution_hist": ("res_bin",),
}
GROUP_COLUMNS = ("task", "scene", "source", "label_source", "kept_label", "reason", "dur_bin", "res_bin")
SKIP_NULL = {"per_task", "per_scene", "per_label_source", "cooccurrence", "filter_reason"}
SECTIONS = (*GROUPINGS, "per_object")


def grouped_sql() -> str:
    """Every grouped statistic but objects, as GROUPING SETS of one aggregation (DuckDB and Spark)."""
    derived = (
        "SELECT task, scene, source, label_source, reason, ms, kept, "
        f"CASE WHEN kept THEN 'kept' ELSE 'filtered' END AS kept_label, {_duration_case()} AS dur_bin, "
        f"{_resolution_case()} AS res_bin FROM {BASE}"
    )
    flags = ", ".join(f"GROUPING({c}) AS g_{c}" for c in GROUP_COLUMNS)
    sets = ", ".join("(" + ", ".join(cols) + ")" for cols in GROUPINGS.values())
    columns = ", ".join(GROUP_COLUMNS)
    return f"SELECT {columns}, {flags}, {AGG} FROM ({derived}) b GROUP BY GROUPING SETS ({sets})"


def objects_sql(dialect: Dialect) -> str:
    """Clips and hours per object (a clip with several objects counts for each)."""
    explode = "unnest(objects)" if dialect == "duckdb" else "explode(objects)"
    return (
        f"SELECT label, {AGG} FROM (SELECT {explode} AS label, ms, kept FROM {BASE} "
        "WHERE objects IS NOT NULL) o WHERE label IS NOT NULL GROUP BY label"
    )


def split_groupings(grouped: pa.Table) -> dict[str, list[StatRow]]:
    """Rows of :func:`grouped_sql` sorted into their sections, by which columns were grouped."""
    by_key = {tuple(sorted(cols)): name for name, cols in GROUPINGS.items()}
    out: dict[str, list[StatRow]] = {name: [] for name in GROUPINGS}
    for row in grouped.to_pylist():
        cols = tuple(sorted(c for c in GROUP_COLUMNS if row[f"g_{c}"] == 0))
        name = by_key[cols]
        values = [row[c] for c in GROUPINGS[name]]
        if name in SKIP_NULL and any(v is None for v in values):
            continue
        label = UNKNOWN if values[0] is None else str(values[0])
        label2 = str(values[1]) if len(values) > 1 else ""
        out[name].append(
            StatRow(label, label2, int(row["clips"] or 0), int(row["ms"] or 0), int(row["kept_ms"] or 0))
        )
    return out


# ------------------------------------------------------------------------------- post-processing
def _sort(name: str, rows: list[StatRow]) -> list[StatRow]:
    if name in BIN_ORDER:
        order = {label: i for i, label in enumerate(BIN_ORDER[name])}
        return sorted(rows, key=lambda r: (order.get(r.label, len(order)), r.label))
    return sorted(rows, key=lambda r: (-r.ms, -r.clips, r.label, r.label2))


def coverage(rows: list[StatRow], percents: Iterable[int] = COVERAGE) -> dict[str, int]:
    """How many labels (largest first) it takes to cover each percentage of hours."""
    weights = sorted((r.ms for r in rows), reverse=True)
    total = sum(weights)
    out = {"labels": len(weights)}
    for percent in percents:
        if total == 0:
            out[str(percent)] = 0
            continue
        need = math.ceil(total * percent / 100)
        running, count = 0, 0
        for weight in weights:
            running += weight
            count += 1
            if running >= need:
                break
        out[str(percent)] = count
    return out


def compute_stats(
    run_sql: RunSQL,
    materialize: Callable[[str, str], None],
    dialect: Dialect,
    reason_expression: str = "'other'",
) -> CorpusStats:
    """Materialise the per-clip rows once (``materialize(name, select)``), then run three queries."""
    materialize(BASE, base_sql(reason_expression))
    summary_row = run_sql(SUMMARY_SQL).to_pylist()[0]
    stats = CorpusStats(summary={k: int(v or 0) for k, v in summary_row.items()})
    sections = split_groupings(run_sql(grouped_sql()))
    objects = run_sql(objects_sql(dialect)).to_pylist()
    sections["per_object"] = [
        StatRow(str(r["label"]), "", int(r["clips"]), int(r["ms"] or 0), int(r["kept_ms"] or 0))
        for r in objects
    ]
    stats.sections = {name: _sort(name, sections[name]) for name in SECTIONS}
    stats.summary["unique_tasks"] = len(stats.sections["per_task"])
    stats.summary["unique_scenes"] = len(stats.sections["per_scene"])
    stats.summary["unique_objects"] = len(stats.sections["per_object"])
    stats.summary["unique_sources"] = len(stats.sections["per_source"])
    stats.long_tail = {kind: coverage(stats.sections[section]) for kind, section in TAIL_KINDS.items()}
    return stats


# ------------------------------------------------------------------------------- table rows
def to_rows(stats: CorpusStats) -> list[dict[str, Any]]:
    """Long-form rows (section, label, label2, clips, seconds, value) for the ``stats`` table.

    ``seconds`` is all hours of the group, ``value`` its kept seconds; summary and long-tail rows
    carry their number in ``value``.
    """
    rows = [
        {"section": "summary", "label": k, "label2": "", "value": float(v)} for k, v in stats.summary.items()
    ]
    for name, section in stats.sections.items():
        for r in section:
            rows.append({"section": name, "label": r.label, "label2": r.label2, "clips": r.clips,
                         "seconds": r.ms / 1000, "value": r.kept_ms / 1000})  # fmt: skip
    for kind, values in stats.long_tail.items():
        for key, value in values.items():
            rows.append({"section": "long_tail", "label": kind, "label2": key, "value": float(value)})
    return rows


def from_rows(rows: Iterable[Mapping[str, Any]]) -> CorpusStats:
    """Rebuild :class:`CorpusStats` from ``stats`` table rows of one run (inverse of :func:`to_rows`)."""
    stats = CorpusStats()
    sections: dict[str, list[StatRow]] = {name: [] for name in SECTIONS}
    for row in rows:
        section = row["section"]
        if section == "summary":
            stats.summary[row["label"]] = int(round(row["value"]))
        elif section == "long_tail":
            stats.long_tail.setdefault(row["label"], {})[row["label2"]] = int(round(row["value"]))
        else:
            sections.setdefault(section, []).append(
                StatRow(row["label"], row["label2"] or "", int(row["clips"] or 0),
                        int(round((row["seconds"] or 0) * 1000)), int(round((row["value"] or 0) * 1000)))
            )  # fmt: skip
    stats.sections = {name: _sort(name, rows) for name, rows in sections.items()}
    return stats
