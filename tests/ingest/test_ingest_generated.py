"""Generated rollouts as a source: marked `origin: generated`, through the stages like any video
(probe, shots and quality here; no stage looks at the origin), selected by `query --origin` and
by the Python/SQL query API."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from egocurate.catalog.query import sql
from egocurate.catalog.selection import select_clips
from egocurate.catalog.store import Catalog
from egocurate.cli.main import app
from egocurate.ingest.discover import discover
from egocurate.jobs.config import PipelineConfig
from egocurate.jobs.pipeline import run_pipeline
from egocurate.testing.videos import make_video


def test_generated_manifest_flows_through_the_stages_and_is_selected_by_origin(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for i, name in enumerate(("rollout_0.mp4", "rollout_1.mp4", "real_0.mp4")):
        make_video(media / name, seed=300 + i, scenes=1, scene_seconds=2.5, fps=10.0, width=320, height=240)
    (media / "start_0.png").write_bytes(b"png")
    rollouts = tmp_path / "rollouts.jsonl"
    generator = "dreamdojo-2b@abc123"
    records = [
        {"uri": "media/rollout_0.mp4", "prompt": "pick up the red cube", "initial_frame": "media/start_0.png",
         "generator": generator, "seed": 7},
        {"uri": "media/rollout_1.mp4", "prompt": "open the drawer", "generator": generator},
    ]  # fmt: skip
    rollouts.write_text("".join(json.dumps(r) + "\n" for r in records))
    real = tmp_path / "real.csv"
    real.write_text("uri,task\nmedia/real_0.mp4,wipe the table\n")
    found = {r["uri"].rsplit("/", 1)[-1]: r for r in discover([str(rollouts), str(real)]).to_pylist()}
    assert found["rollout_0.mp4"]["initial_frame"] == str(media / "start_0.png")  # resolved like uris
    assert found["rollout_0.mp4"]["task_text"] == "pick up the red cube"  # the prompt is the task
    assert json.loads(found["rollout_0.mp4"]["extra_json"]) == {"seed": 7}

    config = PipelineConfig.model_validate(
        {
            "catalog": str(tmp_path / "cat"),
            "sources": [str(rollouts), str(real)],
            "progress": False,
            "stages": [
                {"name": "ingest"},
                {"name": "shots", "params": {"detector": "fixed", "min_clip_s": 1.0, "max_clip_s": 20.0}},
                {"name": "quality", "params": {"batch_size": 8}},
            ],
        }
    )
    run_pipeline(config)
    catalog = Catalog(tmp_path / "cat", create=False)
    videos = {r["uri"].rsplit("/", 1)[-1]: r for r in catalog.read("videos").to_pylist()}
    assert {k: v["origin"] for k, v in videos.items()} == {
        "rollout_0.mp4": "generated", "rollout_1.mp4": "generated", "real_0.mp4": "real"
    }  # fmt: skip
    assert videos["rollout_0.mp4"]["generator"] == "dreamdojo-2b@abc123"
    assert videos["rollout_0.mp4"]["prompt"] == "pick up the red cube"
    assert videos["rollout_1.mp4"]["initial_frame"] is None and videos["real_0.mp4"]["prompt"] is None

    view = sql(
        catalog,
        "SELECT origin, count(*) AS n, count(q.clip_id) AS scored "
        "FROM clip_view v LEFT JOIN clip_quality q USING (clip_id) GROUP BY 1",
    ).to_pylist()
    generated = next(r for r in view if r["origin"] == "generated")
    assert generated["n"] >= 2 and generated["scored"] == generated["n"]  # cut and scored like any video
    assert {r["origin"] for r in view} == {"generated", "real"}

    picked = select_clips(catalog, "SELECT clip_id FROM clip_view", origin="generated")
    assert picked.num_rows == generated["n"] and set(picked.column("origin").to_pylist()) == {"generated"}

    out = tmp_path / "generated.jsonl"
    result = CliRunner().invoke(
        app, ["query", "--catalog", str(tmp_path / "cat"), "--origin", "generated", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == generated["n"] and {r["origin"] for r in rows} == {"generated"}
    assert {r["generator"] for r in rows} == {"dreamdojo-2b@abc123"}
    result = CliRunner().invoke(app, ["query", "--catalog", str(tmp_path / "cat"), "--origin", "simulated"])
    assert result.exit_code == 2
