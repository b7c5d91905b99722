"""`egocurate report` reads like every other command: a table that cannot be read is one error
line (exit 2) and no report, never an empty section; a table that is absent is an empty section."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from typer.testing import CliRunner

from egocurate.catalog import tables
from egocurate.catalog.store import Catalog
from egocurate.cli.main import app, user_error

# Two appends each, so losing the oldest data file leaves the table readable to its log.
ROWS = {
    "videos": lambda i: {"video_id": [f"v{i}"], "uri": [f"/v{i}.mp4"], "duration_s": [3.0]},
    "clips": lambda i: {
        "clip_id": [f"c{i}"],
        "video_id": [f"v{i}"],
        "start_frame": [0],
        "end_frame": [15],
        "duration_s": [1.5],
    },
    "quarantine": lambda i: {
        "uri": [f"/bad{i}.mp4"],
        "stage": ["ingest"],
        "key": [f"/bad{i}.mp4"],
        "error_kind": ["truncated"],
        "message": ["moov atom not found"],
    },
    "clip_captions": lambda i: {"clip_id": [f"c{i}"], "caption": ["a hand"], "caption_model": ["vlm-x"]},
    "clip_tokenizer_latents": lambda i: {"clip_id": [f"c{i}"], "tokenizer_id": ["wan-vae"]},
    "clip_embeddings": lambda i: {"clip_id": [f"c{i}"], "model_id": ["clip-b32"], "dim": [4]},
}


def _catalog(root: Path, names: tuple[str, ...]) -> Catalog:
    cat = Catalog(root)
    for name in names:
        for i in (1, 2):
            cat.append(tables.spec_for(name), pa.table(ROWS[name](i)))
    return cat


def _report(root: Path, out: Path) -> tuple[int, str]:
    """Run `egocurate report` as the console entry point would: a user error is one line, exit 2."""
    result = CliRunner().invoke(app, ["report", "-c", str(root), "--out", str(out), "--thumbnails", "0"])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        message = user_error(result.exception)
        assert message is not None, f"a traceback, not one line: {result.exception!r}"
        return 2, f"error: {message}"
    return result.exit_code, result.output


# clips is read by the statistics too; the others only by the report's own sections (funnel,
# quarantine list, model provenance), which used to turn the failed read into an empty section.
@pytest.mark.parametrize("lost", ["clips", "quarantine", "clip_captions", "clip_tokenizer_latents"])
def test_a_table_with_a_lost_data_file_fails_the_report_in_one_line(tmp_path, lost):
    root = tmp_path / "catalog"
    cat = _catalog(root, tuple(ROWS))
    victim = sorted((root / lost).glob("*.parquet"), key=lambda p: p.stat().st_mtime)[0]
    victim.unlink()  # still referenced by the table's log
    out = tmp_path / "r.html"
    code, output = _report(root, out)
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and lost in lines[0], output
    assert not out.exists()  # no report with a silently empty section
    assert "stats" not in cat.tables()  # nor statistics stored for a report that was not written


def test_absent_optional_tables_render_as_empty_sections(tmp_path):
    root = tmp_path / "catalog"
    _catalog(root, ("videos", "clips"))  # no quarantine, labels, captions, latents, quality, dedup
    out = tmp_path / "r.html"
    code, output = _report(root, out)
    assert code == 0, output
    html = out.read_text()
    assert "filter funnel" in html and "quarantined:" not in html and "moov atom" not in html
    assert "vlm-x" not in html and "group g" not in html
