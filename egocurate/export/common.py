"""What every export shares: its report, the output folder check and atomic file writes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ExportReport:
    """What an export wrote and what it left out (and why)."""

    out: str
    written: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # clip_id -> reason
    renamed: dict[str, str] = field(default_factory=dict)  # original label -> folder name
    seconds: float = 0.0


def prepare_out(out: str, marker: str) -> Path:
    """Create `out`; refuse a non-empty folder that is not an earlier export of ours."""
    path = Path(out)
    if path.exists() and any(path.iterdir()) and not (path / marker).exists():
        raise FileExistsError(
            f"{out} is not empty and holds no earlier egocurate export; choose an empty folder"
        )
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary name, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
