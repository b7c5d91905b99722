"""The corpus report: one self-contained HTML file with matplotlib PNG plots and JPEG thumbnails.

Everything is embedded as data URIs, so the file can be mailed, attached to a dataset card or opened
offline. A small inline script records whether every image decoded (``data-images-ok`` on
``<body>``) and any script error, which the headless-browser test reads back.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from egocurate.annotate.frames import clip_frames
from egocurate.annotate.stats import MS_PER_HOUR, CorpusStats, StatRow

THUMB_SHORT_SIDE = 144


@dataclass
class ReportData:
    """What the report shows; gathered from the catalog by ``jobs.corpus.report.build_report``."""

    catalog: str
    stats: CorpusStats
    stats_run: str | None = None
    engine: str = "local"
    versions: dict[str, int] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    funnel: list[dict[str, Any]] = field(default_factory=list)
    task_samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    scene_samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    dedup_groups: list[list[dict[str, Any]]] = field(default_factory=list)
    quarantine: list[tuple[str, str, int]] = field(default_factory=list)
    top: int = 12


# ---------------------------------------------------------------------------------------- images
def _figure(width: float = 7.0, height: float = 3.2):
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(width, height), dpi=96)
    return plt, fig, ax


def _png(plt: Any, fig: Any) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _empty_plot(title: str) -> str:
    plt, fig, ax = _figure(5, 1.2)
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}: no data yet", ha="center", va="center", color="#777")
    return _png(plt, fig)


def bar_plot(rows: Sequence[StatRow], title: str, top: int = 12, kept: bool = True) -> str:
    """Horizontal bars of hours per label (kept hours overlaid), largest at the top."""
    rows = list(rows)[:top]
    if not rows:
        return _empty_plot(title)
    plt, fig, ax = _figure(7, max(1.6, 0.32 * len(rows) + 0.8))
    labels = [r.label if not r.label2 else f"{r.label} / {r.label2}" for r in rows][::-1]
    hours = [r.hours for r in rows][::-1]
    ax.barh(labels, hours, color="#9ecae1", label="all")
    if kept:
        ax.barh(labels, [r.kept_hours for r in rows][::-1], color="#3182bd", label="kept")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("hours")
    ax.set_title(title, fontsize=10)
    ax.tick_params(labelsize=8)
    return _png(plt, fig)


def histogram_plot(rows: Sequence[StatRow], title: str) -> str:
    """Clips and hours per bin (bins in their natural order)."""
    if not rows:
        return _empty_plot(title)
    plt, fig, ax = _figure(7, 2.8)
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r.clips for r in rows], width=0.4, color="#6baed6", label="clips")
    ax.set_ylabel("clips")
    ax.set_xticks(x, [r.label for r in rows], fontsize=8)
    twin = ax.twinx()
    twin.bar(x + 0.2, [r.hours for r in rows], width=0.4, color="#fd8d3c", label="hours")
    twin.set_ylabel("hours")
    ax.set_title(title, fontsize=10)
    fig.legend(loc="upper right", fontsize=8)
    return _png(plt, fig)


def long_tail_plot(stats: CorpusStats) -> str:
    """Cumulative share of hours covered by the top-n labels, for tasks, scenes and objects."""
    series = {kind: stats.section(section) for kind, section in (("task", "per_task"), ("scene", "per_scene"),
                                                                   ("object", "per_object"))}  # fmt: skip
    if not any(series.values()):
        return _empty_plot("long tail")
    plt, fig, ax = _figure(7, 3.0)
    for kind, rows in series.items():
        weights = np.sort(np.array([r.ms for r in rows], dtype=np.float64))[::-1]
        if weights.sum() <= 0:
            continue
        cum = np.cumsum(weights) / weights.sum() * 100
        ax.plot(np.arange(1, len(cum) + 1), cum, marker=".", label=f"{kind} ({len(cum)} labels)")
    for level in (50, 90, 99):
        ax.axhline(level, color="#bbb", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("number of labels (largest first)")
    ax.set_ylabel("% of hours covered")
    ax.set_title("long tail", fontsize=10)
    ax.legend(fontsize=8)
    return _png(plt, fig)


def cooccurrence_plot(stats: CorpusStats, top: int = 12) -> str:
    """Hours of the top tasks x top scenes."""
    tasks = [r.label for r in stats.top("per_task", top)]
    scenes = [r.label for r in stats.top("per_scene", top)]
    cells = {(r.label, r.label2): r.hours for r in stats.section("cooccurrence")}
    if not tasks or not scenes or not cells:
        return _empty_plot("task x scene")
    grid = np.array([[cells.get((t, s), 0.0) for s in scenes] for t in tasks])
    plt, fig, ax = _figure(min(2 + 0.5 * len(scenes), 10), max(2.0, 0.35 * len(tasks) + 1.4))
    image = ax.imshow(grid, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(scenes)), scenes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    fig.colorbar(image, ax=ax, label="hours")
    ax.set_title("task x scene (hours)", fontsize=10)
    return _png(plt, fig)


def funnel_plot(steps: Sequence[dict[str, Any]]) -> str:
    if not steps:
        return _empty_plot("filter funnel")
    plt, fig, ax = _figure(7, 0.35 * len(steps) + 1.0)
    names = [s["step"] for s in steps][::-1]
    counts = [s["count"] for s in steps][::-1]
    ax.barh(names, counts, color="#74c476")
    for y, count in enumerate(counts):
        ax.text(count, y, f" {count}", va="center", fontsize=8)
    ax.set_title("filter funnel (counts)", fontsize=10)
    ax.tick_params(labelsize=8)
    return _png(plt, fig)


def thumbnail(row: dict[str, Any]) -> str | None:
    """A JPEG data URI of the clip's middle frame, or None if it cannot be decoded."""
    from PIL import Image

    try:
        frame = clip_frames(row, 1, THUMB_SHORT_SIDE)[0]
    except Exception:  # a missing or unreadable video: the report shows a note instead
        return None
    image = Image.fromarray(np.ascontiguousarray(frame))
    if min(image.size) > THUMB_SHORT_SIDE:
        image.thumbnail((THUMB_SHORT_SIDE * 4, THUMB_SHORT_SIDE))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


# ------------------------------------------------------------------------------------------ HTML
def _e(value: Any) -> str:
    return html.escape(str(value))


def _hours(ms: int) -> str:
    return f"{ms / MS_PER_HOUR:.3f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _stat_table(rows: Sequence[StatRow], first: str, second: str | None = None, top: int = 20) -> str:
    headers = [first, *([second] if second else []), "clips", "hours", "kept hours"]
    body = [
        [r.label, *([r.label2] if second else []), r.clips, _hours(r.ms), _hours(r.kept_ms)]
        for r in rows[:top]
    ]
    return _table(headers, body)


def _img(src: str, alt: str) -> str:
    return f'<img src="{src}" alt="{_e(alt)}">'


def _gallery(samples: dict[str, list[dict[str, Any]]]) -> str:
    if not samples:
        return "<p class=note>No labelled clips yet.</p>"
    parts = []
    for label, rows in samples.items():
        thumbs = []
        for row in rows:
            src = thumbnail(row)
            caption = f"{row.get('clip_id', '')[:10]} · {row.get('duration_s') or 0:.1f}s"
            body = _img(src, label) if src else "<div class=missing>frame unavailable</div>"
            thumbs.append(f"<figure>{body}<figcaption>{_e(caption)}</figcaption></figure>")
        parts.append(f"<div class=gallery><h4>{_e(label)}</h4>{''.join(thumbs)}</div>")
    return "".join(parts)


def _dedup(groups: list[list[dict[str, Any]]]) -> str:
    if not groups:
        return "<p class=note>No near-duplicate groups (or the dedup stage has not run).</p>"
    parts = []
    for rows in groups:
        thumbs = []
        for row in rows:
            src = thumbnail(row)
            role = (
                "representative"
                if row.get("is_representative")
                else f"sim {row.get('nearest_similarity') or 0:.3f}"
            )
            body = _img(src, role) if src else "<div class=missing>frame unavailable</div>"
            thumbs.append(f"<figure>{body}<figcaption>{_e(role)}</figcaption></figure>")
        group = rows[0].get("group_id") or (rows[0].get("clip_id") or "")[:10]
        parts.append(
            f"<div class=gallery><h4>group {_e(group)} ({len(rows)} shown)</h4>{''.join(thumbs)}</div>"
        )
    return "".join(parts)


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
.meta{color:#666;font-size:.9em}.note{color:#777}
.cards{display:flex;flex-wrap:wrap;gap:.8em}.card{background:#f5f7fa;border-radius:6px;padding:.6em 1em}
.card b{display:block;font-size:1.4em}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 8px}
th{background:#f0f0f0}img{max-width:100%}.gallery{display:inline-block;vertical-align:top;margin-right:1.2em}
.gallery figure{display:inline-block;margin:.3em;text-align:center}
.gallery img{height:110px}.gallery figcaption{font-size:.75em;color:#555}
.missing{width:140px;height:100px;background:#eee;color:#999;font-size:.8em;display:flex;align-items:center;
justify-content:center}.cols{display:flex;gap:1.5em;flex-wrap:wrap}
"""

CHECK_SCRIPT = """
window.addEventListener('error', function (e) {
  var seen = document.body.getAttribute('data-js-errors') || '';
  document.body.setAttribute('data-js-errors', seen + e.message + ';');
});
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images-total', String(imgs.length));
  document.body.setAttribute('data-images-ok', String(ok));
});
"""


def render_report(data: ReportData) -> str:
    """The whole report as one HTML string."""
    s, top = data.stats, data.top
    summary = s.summary
    tail = s.long_tail
    cards = [
        ("clips", summary.get("clips", 0)),
        ("hours", f"{s.hours():.2f}"),
        ("kept hours", f"{s.hours('kept_ms'):.2f}"),
        ("videos", summary.get("videos", 0)),
        ("unique tasks", summary.get("unique_tasks", 0)),
        ("unique scenes", summary.get("unique_scenes", 0)),
        ("unique objects", summary.get("unique_objects", 0)),
        ("labelled clips", summary.get("labelled_clips", 0)),
    ]
    card_html = "".join(f"<div class=card><b>{_e(v)}</b>{_e(k)}</div>" for k, v in cards)
    tail_rows = [
        [kind, v.get("labels", 0), v.get("50", 0), v.get("90", 0), v.get("99", 0)] for kind, v in tail.items()
    ]
    funnel_rows = [
        [f["step"], f["count"], "" if f.get("hours") is None else f"{f['hours']:.3f}"] for f in data.funnel
    ]
    sections = [
        "<h1>egocurate corpus report</h1>"
        f"<p class=meta>catalog <code>{_e(data.catalog)}</code> · statistics run "
        f"<code>{_e(data.stats_run or 'not stored')}</code> ({_e(data.engine)}) · table versions "
        f"<code>{_e(data.versions)}</code> · thresholds <code>{_e(data.thresholds or 'none')}</code></p>",
        f"<div class=cards>{card_html}</div>",
        "<h2>Tasks</h2>",
        _img(bar_plot(s.section("per_task"), "hours per task", top), "hours per task"),
        _stat_table(s.section("per_task"), "task", top=top * 2),
        "<h3>Sample frames of the top tasks</h3>",
        _gallery(data.task_samples),
        "<h2>Scenes</h2>",
        _img(bar_plot(s.section("per_scene"), "hours per scene", top), "hours per scene"),
        _stat_table(s.section("per_scene"), "scene", top=top * 2),
        "<h3>Sample frames of the top scenes</h3>",
        _gallery(data.scene_samples),
        "<h2>Objects</h2>",
        _img(bar_plot(s.section("per_object"), "hours per object", top), "hours per object"),
        "<h2>Sources and label sources</h2><div class=cols>",
        _stat_table(s.section("per_source"), "source", top=top),
        _stat_table(s.section("per_label_source"), "label source", top=top),
        "</div>",
        "<h2>Long tail</h2>",
        _img(long_tail_plot(s), "long tail"),
        _table(["kind", "labels", "labels for 50% of hours", "for 90%", "for 99%"], tail_rows),
        "<h2>Task x scene</h2>",
        _img(cooccurrence_plot(s, top), "task x scene"),
        _stat_table(s.section("cooccurrence"), "task", "scene", top=top * 2),
        "<h2>Filtering</h2>",
        _img(funnel_plot(data.funnel), "filter funnel"),
        _table(["step", "count", "hours"], funnel_rows),
        "<div class=cols>",
        _stat_table(s.section("filter"), "kept / filtered"),
        _stat_table(s.section("filter_reason"), "reason filtered"),
        "</div>",
        _table(["stage", "error kind", "quarantined"], data.quarantine) if data.quarantine else "",
        "<h3>Near-duplicate groups</h3>",
        _dedup(data.dedup_groups),
        "<h2>Duration and resolution</h2>",
        _img(histogram_plot(s.section("duration_hist"), "clip duration"), "clip duration"),
        _img(histogram_plot(s.section("resolution_hist"), "resolution (short side)"), "resolution"),
    ]
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>egocurate corpus report</title>"
        f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head><body>"
        + "\n".join(sections)
        + "</body></html>"
    )
