"""CLI output a person can read: durations in the right unit, times in ISO-8601."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from egocurate.annotate.stats import format_duration, iso_time
from egocurate.cli.main import app
from egocurate.testing.catalog import build_sample_catalog


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return build_sample_catalog(
        tmp_path_factory.mktemp("cli_out"), videos=2, seconds=2.0, tokenizer_latents=False
    )


def test_format_duration_picks_a_readable_unit():
    assert format_duration(42_000) == "42.0 s"
    assert format_duration(144_000) == "2.4 min"  # 0.04 h would hide it
    assert format_duration(3_600_000 * 12.345) == "12.35 h"
    assert format_duration(3_600_000 * 12_345) == "12,345 h"
    assert format_duration(None) == "unknown"


def test_iso_time():
    assert iso_time(1_764_452_439_000) == "2025-11-29T21:40:39Z"
    assert iso_time(None) == ""


def test_stats_prints_durations_not_milliseconds(catalog):
    result = CliRunner().invoke(app, ["stats", "--catalog", catalog.root, "--no-store"])
    assert result.exit_code == 0, result.output
    lines = [" ".join(line.replace("│", " ").split()) for line in result.output.splitlines()]
    seconds = sum(catalog.read("clips").column("duration_s").to_pylist())  # 4 clips of 20 frames at 15 fps
    assert f"duration {seconds:.1f} s" in lines and 5 < seconds < 6, result.output
    assert not any(re.search(r"\bms\b", line) for line in lines), result.output


def test_catalog_history_shows_iso_times(catalog):
    result = CliRunner().invoke(app, ["catalog", "history", "videos", "--catalog", catalog.root])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", text), result.output
    assert not re.search(r"\b\d{13}\b", text), result.output  # no raw epoch milliseconds


def test_lerobot_help_says_which_loaders_read_it():
    result = CliRunner().invoke(app, ["export", "lerobot", "--help"], env={"COLUMNS": "200"})
    words = " ".join(result.output.split())
    assert result.exit_code == 0 and "Read by lerobot's LeRobotDataset" in words
    assert "NOT by DreamDojo's robot loader" in words and "state" in words
