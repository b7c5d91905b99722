"""One action-source vocabulary: `export lerobot --action-source` and `ShardDataset(action_source=)`
accept the same spellings and refuse the same input with the same message (issue 21)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from egocurate.catalog.action_sources import ACTION_SOURCES, ActionSourceError
from egocurate.cli.main import app
from egocurate.export.actions import parse_action_source
from egocurate.shards.stream import ShardDataset, parse_action_order

SPELLINGS = [
    ("real,idm,latent", ("real", "idm", "latent")),
    (" Real , IDM ,latent ", ("real", "idm", "latent")),  # case and spaces do not matter
    ("idm,,real,idm", ("idm", "real")),  # an empty name is skipped, a repeat keeps its first place
    (["latent", "REAL"], ("latent", "real")),  # a sequence as well as a string
    (("idm",), ("idm",)),
]
BAD = ["telepathy", "real,telepathy", "real;idm", "", " , ", [], ["real", "action"], "real_actions"]


@pytest.mark.parametrize(("value", "order"), SPELLINGS)
def test_both_call_sites_read_the_same_spellings_as_the_same_order(value, order):
    assert parse_action_source(value) == order
    assert parse_action_order(value) == order


@pytest.mark.parametrize("value", BAD, ids=repr)
def test_both_call_sites_refuse_bad_input_with_one_message(tmp_path, value):
    with pytest.raises(ActionSourceError) as export_error:
        parse_action_source(value)
    with pytest.raises(ActionSourceError) as stream_error:
        ShardDataset(str(tmp_path / "no-shards"), action_source=value)  # refused before any read
    message = str(export_error.value)
    assert message == str(stream_error.value)
    assert message.startswith(f"action source must be a comma-separated order of {', '.join(ACTION_SOURCES)}")
    assert isinstance(export_error.value, ValueError)  # callers that catch ValueError still do


def test_the_defaults_differ_by_design_and_zeros_is_an_export_fallback():
    assert parse_action_source(None) == ("latent", "zeros")  # the export as it always was
    assert parse_action_order(None) == ()  # a stream adds no `action` unless asked
    assert parse_action_source("real,zeros") == ("real", "zeros")
    with pytest.raises(ActionSourceError, match="'zeros' is for exports only"):
        parse_action_order("real,zeros")  # a known name, refused with its reason, not as unknown


def test_the_cli_prints_the_same_message_as_one_error_line(tmp_path):
    (tmp_path / "catalog").mkdir()
    out = tmp_path / "out"
    args = ["export", "lerobot", "-c", str(tmp_path / "catalog"), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--action-source", "real,nope"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.strip().splitlines() if line]
    assert lines == [f"error: {parse_error('real,nope')}"] and not out.exists()


def parse_error(value: str) -> str:
    """The shared parser's message for `value`."""
    with pytest.raises(ActionSourceError) as error:
        parse_action_source(value)
    return str(error.value)
