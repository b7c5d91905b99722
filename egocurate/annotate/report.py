"""The corpus report: one self-contained HTML file with matplotlib PNG plots and JPEG thumbnails.

Everything is embedded as data URIs, so the file can be mailed, attached to a dataset card or opened
offline. A small inline script records whether every image decoded (``data-images-ok`` on
``<body>``) and any script error, which the headless-browser test reads back.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from egocurate.annotate.stats import MS_PER_HOUR, CorpusStats, StatRow, format_duration
from egocurate.media.encode import clip_stills
from egocurate.media.source import clip_source

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
    threshold_overrides: dict[str, float | None] = field(default_factory=dict)
    threshold_lines: dict[str, list[tuple[str, str, float]]] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)  # kind, model_id, clips
    quality: dict[str, list[float]] = field(default_factory=dict)  # score -> values
    quarantine_rows: list[list[Any]] = field(default_factory=list)  # time, stage, kind, uri, message
    history: dict[str, list[list[Any]]] = field(default_factory=dict)  # table -> version, time, op, rows


UNTRAINED = re.compile(r"random[-_ ]?init|untrained|(^|[-_:/ ])(test|sample|dummy|mock)([-_:/ ]|$)", re.I)


def untrained(model_id: str | None) -> bool:
    """Whether a model id names random-init or test weights (their outputs are placeholders)."""
    return bool(model_id) and bool(UNTRAINED.search(str(model_id)))


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


def time_unit(max_ms: float) -> tuple[float, str]:
    """(milliseconds per unit, unit name) that suits values up to `max_ms`: minutes below an hour."""
    return (MS_PER_HOUR, "hours") if max_ms >= MS_PER_HOUR else (60_000.0, "minutes")


def bar_plot(rows: Sequence[StatRow], title: str, top: int = 12, kept: bool = True) -> str:
    """Horizontal bars of time per label (kept time overlaid), largest at the top."""
    rows = list(rows)[:top]
    if not rows:
        return _empty_plot(title)
    plt, fig, ax = _figure(7, max(1.6, 0.32 * len(rows) + 0.8))
    per, unit = time_unit(max(r.ms for r in rows))
    labels = [r.label if not r.label2 else f"{r.label} / {r.label2}" for r in rows][::-1]
    ax.barh(labels, [r.ms / per for r in rows][::-1], color="#9ecae1", label="all")
    if kept:
        ax.barh(labels, [r.kept_ms / per for r in rows][::-1], color="#3182bd", label="kept")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel(unit)
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
    per, unit = time_unit(max(r.ms for r in rows))
    twin.bar(x + 0.2, [r.ms / per for r in rows], width=0.4, color="#fd8d3c", label=unit)
    twin.set_ylabel(unit)
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
    cells = {(r.label, r.label2): r.ms for r in stats.section("cooccurrence")}
    if not tasks or not scenes or not cells:
        return _empty_plot("task x scene")
    per, unit = time_unit(max(cells.values()))
    grid = np.array([[cells.get((t, s), 0.0) / per for s in scenes] for t in tasks])
    plt, fig, ax = _figure(min(2 + 0.5 * len(scenes), 10), max(2.0, 0.35 * len(tasks) + 1.4))
    image = ax.imshow(grid, cmap="Blues", aspect="auto")
    ax.set_xticks(range(len(scenes)), scenes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    fig.colorbar(image, ax=ax, label=unit)
    ax.set_title(f"task x scene ({unit})", fontsize=10)
    return _png(plt, fig)


def score_plot(name: str, values: Sequence[float], lines: Sequence[tuple[str, str, float]]) -> str:
    """Distribution of one quality score over clips, with each threshold in force drawn as a line."""
    plt, fig, ax = _figure(3.4, 2.3)
    data = np.asarray(values, dtype=np.float64)
    ax.hist(data, bins=min(40, max(5, len(data) // 3)), color="#9ecae1", edgecolor="#6baed6")
    for label, comparison, value in lines:
        ax.axvline(value, color="#d62728", lw=1.5, ls="--")
        rejected = int(np.sum(data < value) if comparison == ">=" else np.sum(data > value))
        ax.text(value, ax.get_ylim()[1] * 0.92, f" {label} {comparison} {value:g}\n {rejected} below"
                if comparison == ">=" else f" {label} {comparison} {value:g}\n {rejected} above",
                color="#d62728", fontsize=7, va="top")  # fmt: skip
    ax.set_title(f"{name} ({len(data)} clips)", fontsize=9)
    ax.set_ylabel("clips", fontsize=8)
    ax.tick_params(labelsize=7)
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
        frame = clip_stills(clip_source(row), 1, THUMB_SHORT_SIDE)[0]
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
    return format_duration(ms)


def _step_hours(hours: float | None) -> str:
    return "unknown (not probed)" if hours is None else format_duration(hours * MS_PER_HOUR)


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _stat_table(rows: Sequence[StatRow], first: str, second: str | None = None, top: int = 20) -> str:
    headers = [first, *([second] if second else []), "clips", "duration", "kept duration"]
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
            thumbs.append(f"<figure>{body}<figcaption>{_e(caption)}{_provenance(row)}</figcaption></figure>")
        parts.append(f"<div class=gallery><h4>{_e(label)}</h4>{''.join(thumbs)}</div>")
    return "".join(parts)


def _model(model_id: str | None) -> str:
    if not model_id:
        return "<span class=warn>model unknown</span>"
    flag = " <span class=warn>⚠ untrained</span>" if untrained(model_id) else ""
    return f"<code>{_e(model_id)}</code>{flag}"


def _provenance(row: dict[str, Any]) -> str:
    """Which model gave this clip its label (and latents), under its thumbnail."""
    parts = [f"<br>label ({_e(row.get('label_source') or '?')}): {_model(row.get('label_model'))}"]
    if row.get("lam_model_id"):
        parts.append(f"<br>latents: {_model(row.get('lam_model_id'))}")
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
.banner{background:#fff3cd;border:2px solid #d39e00;border-radius:6px;padding:.7em 1em;margin:1em 0}
.warn{color:#b00;font-weight:600}.thresholds{background:#f5f7fa;padding:.4em .8em;border-radius:4px}
.scores img{width:330px}
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


def _banner(models: Sequence[dict[str, Any]]) -> str:
    """The warning at the top when any label, caption or latent comes from random-init or test weights."""
    bad = [m for m in models if untrained(m["model_id"])]
    if not bad:
        return ""
    items = "".join(
        f"<li>{_e(m['kind'])}: <code>{_e(m['model_id'])}</code> ({m['clips']} clips)</li>" for m in bad
    )
    return (
        "<div class=banner id=untrained-banner><b>⚠ Placeholder outputs.</b> These come from random-init or "
        "test models; treat the labels, captions and latents below as placeholders, not as facts about "
        f"the footage:<ul>{items}</ul></div>"
    )


def _thresholds_line(data: ReportData) -> str:
    if not data.thresholds:
        return "<p class=thresholds id=thresholds><b>thresholds in force:</b> none (every clip is kept)</p>"
    parts = []
    for name, value in data.thresholds.items():
        origin = "set" if name in data.threshold_overrides else "default"
        parts.append(f"<code>{_e(name)}={value:g}</code> <small>({origin})</small>")
    off = [n for n, v in data.threshold_overrides.items() if v is None]
    tail = f" · turned off: {_e(', '.join(off))}" if off else ""
    return f"<p class=thresholds id=thresholds><b>thresholds in force:</b> {' · '.join(parts)}{tail}</p>"


def _models_table(models: Sequence[dict[str, Any]]) -> str:
    if not models:
        return "<p class=note>No labels, captions or latents yet.</p>"
    rows = "".join(
        f"<tr><td>{_e(m['kind'])}</td><td>{_model(m['model_id'])}</td><td>{m['clips']}</td></tr>"
        for m in models
    )
    return (
        f"<table id=models><thead><tr><th>output</th><th>model</th><th>clips</th></tr></thead>{rows}</table>"
    )


def _score_plots(data: ReportData) -> str:
    if not data.quality:
        return "<p class=note>No quality scores yet (the quality stage has not run).</p>"
    plots = [
        _img(score_plot(name, values, data.threshold_lines.get(name, [])), f"score {name}")
        for name, values in data.quality.items()
    ]
    return f"<div class='cols scores'>{''.join(plots)}</div>"


def _history(history: dict[str, list[list[Any]]]) -> str:
    if not history:
        return "<p class=note>No tables yet.</p>"
    parts = []
    headers = ["version", "time (UTC)", "operation", "rows added"]
    for name, rows in history.items():
        parts.append(f"<div><h4>{_e(name)}</h4>{_table(headers, rows)}</div>")
    return f"<div class=cols>{''.join(parts)}</div>"


def render_report(data: ReportData) -> str:
    """The whole report as one HTML string."""
    s, top = data.stats, data.top
    summary = s.summary
    tail = s.long_tail
    cards = [
        ("clips", summary.get("clips", 0)),
        ("duration", format_duration(summary.get("ms", 0))),
        ("kept duration", format_duration(summary.get("kept_ms", 0))),
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
    funnel_rows = [[f["step"], f["count"], _step_hours(f.get("hours"))] for f in data.funnel]
    sections = [
        "<h1>egocurate corpus report</h1>",
        _banner(data.models),
        f"<p class=meta>catalog <code>{_e(data.catalog)}</code> · statistics run "
        f"<code>{_e(data.stats_run or 'not stored')}</code> ({_e(data.engine)}) · table versions "
        f"<code>{_e(data.versions)}</code></p>",
        _thresholds_line(data),
        f"<div class=cards>{card_html}</div>",
        "<h2>Models behind labels, captions and latents</h2>",
        _models_table(data.models),
        "<h2>Tasks</h2>",
        _img(bar_plot(s.section("per_task"), "time per task", top), "time per task"),
        _stat_table(s.section("per_task"), "task", top=top * 2),
        "<h3>Sample frames of the top tasks</h3>",
        _gallery(data.task_samples),
        "<h2>Scenes</h2>",
        _img(bar_plot(s.section("per_scene"), "time per scene", top), "time per scene"),
        _stat_table(s.section("per_scene"), "scene", top=top * 2),
        "<h3>Sample frames of the top scenes</h3>",
        _gallery(data.scene_samples),
        "<h2>Objects</h2>",
        _img(bar_plot(s.section("per_object"), "time per object", top), "time per object"),
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
        _table(["step", "count", "duration"], funnel_rows),
        "<h3>Quality scores and the thresholds in force</h3>",
        _score_plots(data),
        "<div class=cols>",
        _stat_table(s.section("filter"), "kept / filtered"),
        _stat_table(s.section("filter_reason"), "reason filtered"),
        "</div>",
        _table(["stage", "error kind", "quarantined"], data.quarantine) if data.quarantine else "",
        "<h3>Quarantine</h3>",
        _table(["time", "stage", "kind", "uri", "message"], data.quarantine_rows)
        if data.quarantine_rows
        else "<p class=note>Nothing quarantined.</p>",
        "<h3>Near-duplicate groups</h3>",
        _dedup(data.dedup_groups),
        "<h2>Duration and resolution</h2>",
        _img(histogram_plot(s.section("duration_hist"), "clip duration"), "clip duration"),
        _img(histogram_plot(s.section("resolution_hist"), "resolution (short side)"), "resolution"),
        "<h2>Run history</h2>",
        _history(data.history),
    ]
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>egocurate corpus report</title>"
        f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head><body>"
        + "\n".join(sections)
        + "</body></html>"
    )
