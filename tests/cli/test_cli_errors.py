"""User errors are one line `error: ...` and exit 2, never a traceback (unless --debug)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from egocurate.testing.catalog import build_sample_catalog


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "egocurate.cli.main", *args], capture_output=True, text=True,
                          cwd=cwd)  # fmt: skip


def _one_error_line(done: subprocess.CompletedProcess, *needles: str) -> str:
    out = (done.stdout + done.stderr).strip()
    assert done.returncode == 2, out
    assert "Traceback" not in out and "╭" not in out, out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), out
    for needle in needles:
        assert needle in lines[0], out
    return lines[0]


@pytest.fixture(scope="module")
def corrupt_catalog(tmp_path_factory) -> Path:
    """A catalog with clips whose `videos` log has a truncated last entry."""
    root = tmp_path_factory.mktemp("corrupt")
    build_sample_catalog(root, videos=2, seconds=2.0, latents=False, tokenizer_latents=False)
    catalog = root / "catalog"
    last = sorted((catalog / "videos" / "_delta_log").glob("*.json"))[-1]
    last.write_bytes(last.read_bytes()[:60])
    (root / "p.yaml").write_text(f"catalog: {catalog}\nprogress: false\nstages:\n  - name: shots\n")
    return catalog


READ_COMMANDS = [
    ["catalog", "sql", "select count(*) from videos"],
    ["catalog", "show", "videos"],
    ["catalog", "tables"],
    ["query"],
    ["stats"],
    ["report", "--out", "{tmp}/r.html"],
    ["run", "{root}/p.yaml"],
    ["export", "dreamdojo", "--out", "{tmp}/dd"],
    ["shards", "write", "--out", "{tmp}/shards"],
]


@pytest.mark.parametrize("command", READ_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_a_corrupt_log_fails_every_read_command(corrupt_catalog, tmp_path, command):
    args = [a.format(tmp=tmp_path, root=corrupt_catalog.parent) for a in command]
    done = _cli(*args, "-c", str(corrupt_catalog))
    _one_error_line(done, "'videos'", "cannot be read", "latest version")
    assert not (tmp_path / "dd").exists() and not (tmp_path / "shards").exists()


def test_catalog_path_errors(tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    _one_error_line(_cli("ingest", str(tmp_path), "-c", str(a_file)), "is a file", str(a_file))
    _one_error_line(_cli("ingest", str(tmp_path), "-c", "/proc/egocurate-test/catalog"), "cannot create")
    missing = tmp_path / "no_such_catalog"
    _one_error_line(_cli("catalog", "tables", "-c", str(missing)), "no catalog at")
    _one_error_line(_cli("query", "-c", str(missing)), "no catalog at")
    assert not missing.exists()  # a read never creates the folder


def test_sources_that_match_nothing(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    catalog = str(tmp_path / "catalog")
    _one_error_line(
        _cli("ingest", str(empty), "-c", catalog, "--no-progress"), "no video found", "--allow-empty"
    )
    _one_error_line(_cli("ingest", f"{empty}/*.mp4", "-c", catalog, "--no-progress"), "no video found")
    assert _cli("ingest", str(empty), "-c", catalog, "--no-progress", "--allow-empty").returncode == 0
    _one_error_line(_cli("ingest", str(tmp_path / "gone"), "-c", catalog), "not found", "gone")


def test_pipeline_file_errors(tmp_path):
    top = tmp_path / "t.yaml"
    top.write_text(f"catalog: {tmp_path / 'c'}\nthresholds: {{blur: 3}}\n")
    _one_error_line(_cli("run", str(top)), "thresholds", "allowed keys: catalog")
    unknown = tmp_path / "u.yaml"
    unknown.write_text(f"catalog: {tmp_path / 'c'}\nstages:\n  - name: shotz\n")
    _one_error_line(_cli("run", str(unknown)), "shotz", "allowed")


def test_markup_in_a_message_is_printed_verbatim(tmp_path, sample_videos):
    catalog = str(tmp_path / "c")
    assert _cli("ingest", str(sample_videos[0]), "-c", catalog, "--no-progress").returncode == 0
    line = _one_error_line(_cli("catalog", "sql", "select '[/red]'::int", "-c", catalog), "SQL error")
    assert "[/red]" in line


def test_a_stage_checkpoint_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    build_sample_catalog(tmp_path, videos=1, seconds=2.0, latents=False, tokenizer_latents=False)
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(f"catalog: {tmp_path / 'catalog'}\nprogress: false\nstages:\n"
                        f"  - name: latent_actions\n    params: {{checkpoint: {bad}}}\n")  # fmt: skip
    _one_error_line(_cli("run", str(pipeline)), str(bad), "weights_only=True")
    debug = _cli("--debug", "run", str(pipeline))
    assert (
        debug.returncode != 0
        and "Traceback" in debug.stderr + debug.stdout
        or "CheckpointError" in debug.stderr
    )
