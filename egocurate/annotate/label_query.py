"""Query clips by label: task, scene and object globs, duration and the keep flag, as SQL over the view.

``LabelQuery(...).sql()`` is plain SQL with ``?`` parameters over ``clip_view``, so a query by label
returns exactly what the same SQL typed into ``egocurate catalog sql`` returns, and ``inline_sql()``
gives that SQL with the values written in (for ``--query`` of shard building, or a notebook).
Globs are case-insensitive (``*`` any text, ``?`` one character); the task matches the annotator's
label, or the source's task text where a clip has no label yet (as shard selection does).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TASK_EXPR = "lower(coalesce(task, task_text, ''))"
DEFAULT_COLUMNS = (
    "clip_id, video_id, uri, start_frame, end_frame, start_s, end_s, duration_s, task, verb, scene, objects, "
    "label_source, task_score, scene_score, origin, generator, keep"
)


def _quote(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(float(value))
    return "'" + str(value).replace("'", "''") + "'"


@dataclass
class LabelQuery:
    """Filters over the clip view; unset filters match everything."""

    task: str | None = None
    scene: str | None = None
    objects: list[str] = field(default_factory=list)  # every glob must match one of the clip's objects
    source: str | None = None  # glob on dataset, else source
    label_source: str | None = None  # given | caption | zeroshot
    min_seconds: float | None = None
    max_seconds: float | None = None
    min_task_score: float | None = None
    keep: bool | None = None  # True: kept clips only; False: filtered clips only
    origin: str | None = None  # real | generated (a world model's rollout)
    limit: int | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The WHERE condition and its parameters."""
        conds: list[str] = []
        params: list[Any] = []
        if self.task:
            conds.append(f"{TASK_EXPR} GLOB lower(?)")
            params.append(self.task)
        if self.scene:
            conds.append("lower(coalesce(scene, '')) GLOB lower(?)")
            params.append(self.scene)
        for pattern in self.objects:
            conds.append("len(list_filter(coalesce(objects, []), lambda o: lower(o) GLOB lower(?))) > 0")
            params.append(pattern)
        if self.source:
            conds.append("lower(coalesce(dataset, source, '')) GLOB lower(?)")
            params.append(self.source)
        if self.label_source:
            conds.append("label_source = ?")
            params.append(self.label_source)
        if self.min_seconds is not None:
            conds.append("duration_s >= ?")
            params.append(float(self.min_seconds))
        if self.max_seconds is not None:
            conds.append("duration_s <= ?")
            params.append(float(self.max_seconds))
        if self.min_task_score is not None:
            conds.append("task_score >= ?")
            params.append(float(self.min_task_score))
        if self.keep is not None:
            conds.append("keep" if self.keep else "NOT coalesce(keep, FALSE)")
        if self.origin is not None:
            conds.append("origin = ?")
            params.append(self.origin)
        return (" AND ".join(conds) or "TRUE"), params

    def sql(self, columns: str = DEFAULT_COLUMNS) -> tuple[str, list[Any]]:
        """SELECT over ``clip_view`` (ordered by clip id) and its parameters."""
        where, params = self.where()
        query = f"SELECT {columns} FROM clip_view WHERE {where} ORDER BY clip_id"
        if self.limit is not None:
            query += f" LIMIT {int(self.limit)}"
        return query, params

    def inline_sql(self, columns: str = DEFAULT_COLUMNS) -> str:
        """The same SQL with its parameters written in as literals."""
        query, params = self.sql(columns)
        parts = query.split("?")
        out = parts[0]
        for value, rest in zip(params, parts[1:], strict=True):
            out += _quote(value) + rest
        return out
