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
                "label_model": ["sentence-transformers/all-MiniLM-L6-v2"] * 4,
                "objects": pa.array([["block"], ["block", "cup"], ["block"], []], pa.list_(pa.string())),
            }
        ),
    )
    cat.append(
        tables.CLIP_QUALITY,
        pa.table(
            {
                "clip_id": ["c1", "c2", "c3", "c4"],
                "motion": pa.array([0.05, 1.5, 2.5, 3.0], pa.float32()),  # c1 is below min_motion 0.2
                "blur": pa.array([40.0, 60.0, 80.0, 90.0], pa.float32()),
                "brightness": pa.array([0.4, 0.5, 0.6, 0.45], pa.float32()),
            }
        ),
    )
    cat.append(
        tables.CLIP_LATENTS,
        pa.table({"clip_id": ["c1", "c2"], "lam_model_id": ["lam-random-init-seed0-1a2b3c4d"] * 2}),
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
    funnel = dict(re.findall(r"<tr><td>([^<]+)</td><td>(\d+)</td><td>[^<]*</td></tr>", html))
    assert {k: funnel[k] for k in ("videos found", "probed", "quarantined: truncated", "clips", "kept")} == {
        "videos found": "3",
        "probed": "2",
        "quarantined: truncated": "1",
        "clips": "4",
        "kept": "2",
    }  # fmt: skip  (c1 moves too little, c3 is a near duplicate)
    assert "<td>probed</td><td>2</td><td>5.0 s</td>" in html  # durations at a readable precision
    assert "<td>quarantined: truncated</td><td>1</td><td>unknown (not probed)</td>" in html
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
        "moov atom not found",  # the quarantine table
        "Run history",
    ):
        assert text in html, text
    assert stats.summary["clips"] == 4 and stats.long_tail["task"]["labels"] == 2


def test_report_tells_what_is_a_guess_and_which_thresholds_filter(catalog, tmp_path):
    path, _, _ = build_report(catalog, tmp_path / "r.html", thumbnails=1, store=False)
    html = path.read_text()
    banner = html.index("id=untrained-banner")
    assert banner < html.index("<h2>")  # at the top
    assert "lam-random-init-seed0-1a2b3c4d" in html[banner : html.index("</div>", banner)]
    assert "all-MiniLM-L6-v2" not in html[banner : html.index("</div>", banner)]  # trained: no flag
    line = html[html.index("id=thresholds") : html.index("</p>", html.index("id=thresholds"))]
    assert "min_motion=0.2</code> <small>(default)" in line and "none" not in line
    # Every quality score's distribution, each with the thresholds on it.
    assert html.count('alt="score ') == 3
    # Model ids under thumbnails: the label's and the latents' (flagged).
    assert "label (given): <code>sentence-transformers/all-MiniLM-L6-v2</code>" in html
    assert "latents: <code>lam-random-init-seed0-1a2b3c4d</code> <span class=warn>" in html
    custom, _, _ = build_report(
        catalog,
        tmp_path / "c.html",
        thresholds={"min_motion": 2.0, "min_blur": None},
        thumbnails=0,
        store=False,
    )
    line = custom.read_text().split("id=thresholds", 1)[1].split("</p>", 1)[0]
    assert (
        "min_motion=2</code> <small>(set)" in line and "min_blur" in line and "turned off: min_blur" in line
    )


def test_score_plot_draws_the_threshold():
    from egocurate.annotate.report import score_plot, untrained

    image = Image.open(
        io.BytesIO(
            base64.b64decode(score_plot("motion", [0.1, 1, 2, 3], [("min_motion", ">=", 0.2)]).split(",")[1])
        )
    )
    pixels = image.convert("RGB").load()
    red = sum(1 for x in range(image.width) for y in range(image.height) if pixels[x, y][0] > 200
              and pixels[x, y][1] < 80 and pixels[x, y][2] < 80)  # fmt: skip
    assert red > 20  # the dashed threshold line (and its label) is drawn in red
    assert untrained("lam-random-init-seed0") and untrained("sample-lam") and untrained("clip:random_init")
    assert not untrained("LAM_400k.safetensors@ab12cd34ef56") and not untrained("all-MiniLM-L6-v2")


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
    dom = proc.stdout  # what the browser built: banner first, the thresholds line, score plots, funnel
    assert dom.index('id="untrained-banner"') < dom.index('id="thresholds"') < dom.index("<h2>")
    assert "min_motion=0.2" in dom and dom.count('alt="score ') == 3
    assert "<td>videos found</td>" in dom and "<td>quarantined: truncated</td>" in dom
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
    assert missing.exit_code == 2 and "no catalog at" in " ".join(missing.output.split())
    (tmp_path / "empty").mkdir()
    no_clips = CliRunner().invoke(app, ["report", "--catalog", str(tmp_path / "empty"), "--out", str(out)])
    assert no_clips.exit_code == 2 and "no clips table" in " ".join(no_clips.output.split())


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
