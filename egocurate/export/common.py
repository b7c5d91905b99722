"""What every export shares: its report, staged atomic publishing and atomic file writes.

An export is written into a staging folder next to ``--out`` and swapped into place only when every
file is written and checked, so a failed or killed export leaves the previous one exactly as it
was. A new export that would drop more than ``REMOVE_LIMIT`` of the previous export's clips is
refused unless ``replace`` is given, with the count and the reason (sources missing, or the
selection changed).
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

REMOVE_LIMIT = 0.5  # the largest fraction of the previous export's clips a re-export may drop


class ExportRefused(ValueError):
    """An export that would destroy (much of) a good earlier export, or that wrote nothing."""


@dataclass
class ExportReport:
    """What an export wrote and what it left out (and why)."""

    out: str
    written: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # clip_id -> reason
    renamed: dict[str, str] = field(default_factory=dict)  # original label -> folder name
    seconds: float = 0.0


def prepare_out(out: str, marker: str) -> Path:
    """Check `out` (absent, empty, or an earlier export of ours) without creating it."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"{out} is a file; choose a folder for the export")
    if path.exists() and any(path.iterdir()) and not (path / marker).exists():
        raise FileExistsError(
            f"{out} is not empty and holds no earlier egocurate export; choose an empty folder"
        )
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Staging:
    """A staging folder next to `out`; :meth:`publish` swaps it into place, :meth:`abandon` drops it."""

    def __init__(self, out: str | os.PathLike[str], marker: str):
        self.out = prepare_out(str(out), marker).absolute()
        self.marker = marker
        parent = self.out.parent
        parent.mkdir(parents=True, exist_ok=True)
        self._recover(parent)
        self.path = parent / f".{self.out.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()

    def _recover(self, parent: Path) -> None:
        """Clean up after killed exports: drop their staging folders, put back a half-swapped export."""
        for pattern in (f".{self.out.name}.staging-*", f".{self.out.name}.previous-*"):
            for leftover in parent.glob(pattern):
                pid = (
                    leftover.name.rsplit("-", 2)[-2]
                    if "staging" in leftover.name
                    else leftover.name.rsplit("-", 1)[-1]
                )
                if pid.isdigit() and _pid_alive(int(pid)):
                    continue  # another export is running right now
                if "previous" in leftover.name and not self.out.exists():
                    os.rename(leftover, self.out)  # killed between the two renames of a swap
                else:
                    shutil.rmtree(leftover, ignore_errors=True)

    def previous_ids(self, index: str, column: str = "clip_id") -> set[str]:
        """Clip ids the current export at `out` holds (from its index file), if it is ours."""
        path = self.out / index
        if not (self.out / self.marker).exists() or not path.exists():
            return set()
        table = pq.read_table(path)
        return set(table.column(column).to_pylist()) if column in table.column_names else set()

    def publish(
        self,
        previous: set[str],
        written: Iterable[str],
        selected: Iterable[str],
        files: Iterable[str],
        replace: bool = False,
    ) -> None:
        """Check the staged files, refuse a large loss of the previous export, swap into place."""
        written, selected = set(written), set(selected)
        missing = [
            rel for rel in files if not (self.path / rel).is_file() or (self.path / rel).stat().st_size == 0
        ]
        if missing:
            raise ExportRefused(
                f"export incomplete: {len(missing)} staged file(s) missing, e.g. {missing[0]}"
            )
        if not (self.path / self.marker).is_file():
            raise ExportRefused(f"export incomplete: no {self.marker} staged")
        lost = previous - written
        if previous and len(lost) > REMOVE_LIMIT * len(previous) and not replace:
            failed = len(lost & selected)
            unselected = len(lost - selected)
            raise ExportRefused(
                f"refusing to replace the export in {self.out}: it would remove {len(lost)} of its "
                f"{len(previous)} clip(s) ({failed} selected but not writable: sources missing or "
                f"unreadable; "
                f"{unselected} no longer selected: the selection changed); the previous export is unchanged; "
                f"pass --replace to accept"
            )
        old = self.out.parent / f".{self.out.name}.previous-{os.getpid()}"
        if self.out.exists():
            os.rename(self.out, old)
        os.rename(self.path, self.out)
        shutil.rmtree(old, ignore_errors=True)

    def abandon(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary name, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
