"""The HTML report: self-contained, its images decode (PIL), and it renders in headless Chromium."""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess

import pyarrow as pa
import pyarrow.compute  # noqa: F401 (pa.compute)
import pytest
from PIL import Image
from typer.testing import CliRunner

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.cli.annotate import app
from egocurate.jobs.corpus.report import build_report
from egocurate.jobs.corpus.stats import load_stats
from egocurate.testing.videos import make_video

DATA_URI = re.compile(r'src="data:image/(png|jpeg);base64,([A-Za-z0-9+/=]+)"')


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Catalog:
    root = tmp_path_factory.mktemp("report")
    video = root / "session.mp4"
    make_video(video, seed=5, scenes=2, scene_seconds=1.5, fps=10.0, width=320, height=240)
    cat = Catalog(root / "catalog")
    cat.append(
        tables.VIDEOS,
        pa.table(
            {
                "video_id": ["v1", "v2"],
                "uri": [str(video), str(root / "gone.mp4")],
                "dataset": ["synthetic", "lost"],
                "duration_s": [3.0, 2.0],
                "width": [320, 320],
                "height": [240, 240],
            }
        ),
    )
    cat.append(
        tables.QUARANTINE,
        pa.table(
            {
                "uri": ["/bad.mp4"],
                "stage": ["ingest"],
                "key": ["/bad.mp4"],
                "error_kind": ["truncated"],
                "message": ["moov atom not found"],
            }
        ),
    )
    cat.append(
        tables.CLIPS,
        pa.table(
            {
                "clip_id": ["c1", "c2", "c3", "c4"],
                "video_id": ["v1", "v1", "v1", "v2"],
                "start_frame": [0, 15, 5, 0],
                "end_frame": [15, 30, 20, 20],
                "duration_s": [1.5, 1.5, 1.5, 2.0],
            }
        ),
    )
    cat.append(
        tables.CLIP_LABELS,
        pa.table(
            {
                "clip_id": ["c1", "c2", "c3", "c4"],
                "task": ["push block", "push block", "stack block", "push block"],
                "scene": ["office", "kitchen", "office", "kitchen"],
                "label_source": ["given"] * 4,
                "objects": pa.array([["block"], ["block", "cup"], ["block"], []], pa.list_(pa.string())),
            }
        ),
    )
    cat.append(
        tables.CLIP_DEDUP,
        pa.table(
            {
                "clip_id": ["c1", "c2", "c3", "c4"],
                "group_id": ["g1", "g2", "g1", "g4"],
                "is_representative": [True, True, False, True],
                "nearest_similarity": [0.97, 0.5, 0.97, 0.4],
            }
        ),
    )
    return cat


def _images(html: str) -> list[Image.Image]:
    out = []
    for _, data in DATA_URI.findall(html):
        image = Image.open(io.BytesIO(base64.b64decode(data)))
        image.load()  # decodes the pixels, not only the header
        out.append(image)
    return out


def test_report_is_self_contained_and_its_images_decode(catalog, tmp_path):
    path, run_id, stats = build_report(catalog, tmp_path / "report.html", thumbnails=2)
    html = path.read_text()
    assert run_id and load_stats(catalog)[0] == run_id  # statistics of the report are stored and versioned
    assert "<script src" not in html and "<link" not in html and 'src="http' not in html
    images = _images(html)
    png = [i for i in images if i.format == "PNG"]
    jpeg = [i for i in images if i.format == "JPEG"]
    assert len(png) >= 8 and all(i.width > 100 and i.height > 40 for i in png)
    # Thumbnails: 2 top tasks and 2 top scenes, frames decoded from the clips; one video is missing.
    assert len(jpeg) >= 4 and all(min(i.size) > 20 for i in jpeg)
    assert "frame unavailable" in html
    assert "<td>files discovered</td><td>3</td>" in html and "<td>videos</td><td>2</td>" in html
    for text in (
        "push block",
        "stack block",
        "kitchen",
        "long tail",
        "filter funnel",
        "group g1",
        "truncated",
        "representative",
        "labels for 50% of hours",
    ):
        assert text in html, text
    assert stats.summary["clips"] == 4 and stats.long_tail["task"]["labels"] == 2


def test_report_renders_in_headless_chromium(catalog, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    assert chromium, "headless Chromium is needed (Debian: apt-get install -y chromium)"
    path, _, _ = build_report(catalog, tmp_path / "report.html", thumbnails=2, store=False)
    cmd = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=10000",
        "--dump-dom",
        path.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", proc.stdout)
    assert body, proc.stdout[:500]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    total = len(DATA_URI.findall(path.read_text()))
    assert attrs.get("data-images-total") == str(total) and total > 0
    assert attrs.get("data-images-ok") == str(total), attrs  # every image decoded in the browser
    assert "data-js-errors" not in attrs, attrs["data-js-errors"]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*cmd[:-2], f"--screenshot={shot}", "--window-size=1200,2000", path.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert Image.open(shot).size == (1200, 2000)


def test_report_command(catalog, tmp_path):
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(
        app, ["report", "--catalog", catalog.root, "--out", str(out), "--no-store", "--thumbnails", "1"]
    )
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # independent of terminal width and wrapping
    assert out.exists() and "4 clips" in words and len(_images(out.read_text())) >= 8
    missing = CliRunner().invoke(app, ["report", "--catalog", str(tmp_path / "empty"), "--out", str(out)])
    assert missing.exit_code == 2 and "no clips table" in " ".join(missing.output.split())


def test_demo_pipeline_stages_produce_labels_and_a_report(catalog, tmp_path):
    """The demo's labels and report stages, with their demo.yaml params, on a catalog of clips."""
    from importlib import resources

    import yaml

    from egocurate.jobs.config import PipelineConfig
    from egocurate.jobs.pipeline import run_pipeline

    demo = yaml.safe_load(resources.files("egocurate.configs").joinpath("demo.yaml").read_text())
    stages = [s for s in demo["stages"] if s["name"] in ("labels", "report")]
    assert [s["name"] for s in stages] == ["labels", "report"]
    stages[0]["params"] = {**stages[0]["params"], "text_embedder": "none"}  # lexical only: no model load here
    fresh = Catalog(tmp_path / "catalog")
    video_uri = catalog.read("videos").column("uri")[0].as_py()
    fresh.append(
        tables.VIDEOS,
        pa.table(
            {
                "video_id": ["v1"],
                "uri": [video_uri],
                "width": [320],
                "height": [240],
                "task_text": ["push the red block to the left"],
            }
        ),
    )
    fresh.append(
        tables.CLIPS, catalog.read("clips").filter(pa.compute.equal(catalog.read("clips")["video_id"], "v1"))
    )
    summaries = run_pipeline(PipelineConfig(catalog=fresh.root, stages=stages, progress=False))
    labels = {r["clip_id"]: r for r in fresh.read("clip_labels").to_pylist()}
    assert {cid: (r["task"], r["label_source"]) for cid, r in labels.items()} == {
        cid: ("push block", "given") for cid in ("c1", "c2", "c3")
    }
    assert summaries[0].rows_out == 3 and summaries[1].stage == "report"
    html = (tmp_path / "catalog" / "report.html").read_text()
    assert len(_images(html)) >= 10 and "push block" in html
