"""What every export shares: its report, staged atomic publishing and atomic file writes.

An export is written into a staging folder next to ``--out`` and swapped into place only when every
file is written and checked, so a failed or killed export leaves the previous one exactly as it
was. A failing export publishes nothing: one that wrote none of its selected clips is refused
before the swap. A new export that would drop more than ``REMOVE_LIMIT`` of the previous export's
clips, or hold fewer than half of the most clips the folder has held (its high-water mark, kept in
the export's marker file, so a guard of "half" cannot be stepped down 8 -> 4 -> 2 -> 1), is refused
unless ``replace`` is given, with the counts and the reason (sources missing, or the selection
changed).

The swap itself (:func:`swap_into_place`) never leaves ``--out`` missing where the filesystem can
exchange two folders atomically (Linux ``renameat2(RENAME_EXCHANGE)``: ext4, xfs, btrfs, tmpfs). We
chose that over making ``--out`` a symlink to versioned folders because readers (DreamDojo's loader,
lerobot, rsync, du) then keep seeing a plain folder, and an existing export needs no migration
(turning a folder into a symlink is itself a two-step swap). Elsewhere the swap falls back to two
renames with a named backup, and :func:`recover_export` (run by every next export, and by
``egocurate export recover``) puts the backup back if a kill landed between them.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import json
import math
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

REMOVE_LIMIT = 0.5  # the largest fraction of the previous export's (or the high-water mark's) clips to drop
MIN_FPS, MAX_FPS = 1.0, 240.0  # export frame rates that make sense for training video
HIGH_WATER = "high_water"  # marker key: the most clips an export in this folder has held


class ExportRefused(ValueError):
    """An export that would destroy (much of) a good earlier export, or that wrote nothing.

    `report` (when set) says what was written and left out, so a caller can still show the reasons.
    """

    def __init__(self, message: str, report: ExportReport | None = None):
        super().__init__(message)
        self.report = report


@dataclass
class ExportReport:
    """What an export wrote and what it left out (and why)."""

    out: str
    written: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # clip_id -> reason
    renamed: dict[str, str] = field(default_factory=dict)  # original label -> folder name
    seconds: float = 0.0


def check_fps(fps: float | None) -> None:
    """Refuse a frame rate no export can render (0, negative, NaN, inf, 1e-9, 1000) before any work.

    None means "the latent-action model's rate" (``export dreamdojo``). NaN fails every comparison,
    so the range check refuses it too.
    """
    if fps is None:
        return
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = math.nan
    if not MIN_FPS <= value <= MAX_FPS:
        raise ValueError(f"--fps must be from {MIN_FPS:g} to {MAX_FPS:g} frames per second, got {fps!r}")


def inside(root: Path, rel: str) -> Path:
    """``root / rel``, refusing a relative path that would leave `root` (absolute, or with ``..``)."""
    path = Path(rel)
    if not rel or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"refusing to write {rel!r}: it would leave the export folder {root}")
    return root / path


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


def _dead_leftovers(out: Path, kind: str) -> list[Path]:
    """``.<out>.<kind>-<pid>...`` folders beside `out` whose export process is gone, newest first."""
    prefix = f".{out.name}.{kind}-"
    found = []
    for leftover in out.parent.glob(f"{glob_escape(prefix)}*"):
        pid = leftover.name[len(prefix) :].split("-", 1)[0]
        if not (pid.isdigit() and _pid_alive(int(pid))):
            found.append(leftover)
    return sorted(found, key=_mtime, reverse=True)


def _mtime(path: Path) -> float:
    """`path`'s modification time; 0 if another process removed it meanwhile."""
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def glob_escape(text: str) -> str:
    """`text` with glob's special characters taken literally."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def recover_export(out: str | os.PathLike[str]) -> bool:
    """Undo what killed exports left beside `out`; True when it put a half-swapped export back.

    If `out` is missing and a dead export's ``.previous-*`` backup is there (a kill between the two
    renames of the fallback swap), the backup becomes `out` again, byte for byte. Dead exports'
    staging folders and other backups are deleted. Folders of a running export are left alone.
    """
    out = Path(out).absolute()
    if not out.parent.is_dir():
        return False
    backups = _dead_leftovers(out, "previous")
    restored = False
    if backups and not os.path.lexists(out):
        os.rename(backups.pop(0), out)
        restored = True
    for leftover in [*backups, *_dead_leftovers(out, "staging")]:
        shutil.rmtree(leftover, ignore_errors=True)
    return restored


@functools.cache
def _renameat2():
    """libc's ``renameat2`` (glibc 2.28+), or None."""
    if not sys.platform.startswith("linux"):
        return None
    func = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if func is not None:
        func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
        func.restype = ctypes.c_int
    return func


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one atomic step; False where the OS or filesystem cannot."""
    func = _renameat2()
    if func is None:
        return False
    at_fdcwd, rename_exchange = -100, 2  # <fcntl.h>, <linux/fs.h>
    if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def exchange_supported(folder: str | os.PathLike[str]) -> bool:
    """Whether `folder`'s filesystem swaps two folders atomically (probed with two empty folders)."""
    probe = Path(folder) / f".egocurate-exchange-probe-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    a, b = probe / "a", probe / "b"
    a.mkdir(parents=True)
    b.mkdir()
    try:
        return _exchange(a, b)
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def swap_into_place(staged: Path, out: Path) -> None:
    """Make the folder `staged` the folder `out`, so that `out` is never missing or half-written.

    No `out` yet: one rename. Otherwise one atomic exchange, after which `staged` holds the previous
    export and is deleted (a kill before the delete leaves it for :func:`recover_export`). Without
    an atomic exchange: `out` is renamed to ``.<out>.previous-<pid>`` and `staged` into its place;
    a kill between the two renames is undone by :func:`recover_export`.
    """
    if not os.path.lexists(out):
        os.rename(staged, out)
        return
    if _exchange(staged, out):
        shutil.rmtree(staged, ignore_errors=True)
        return
    backup = out.parent / f".{out.name}.previous-{os.getpid()}"
    os.rename(out, backup)
    os.rename(staged, out)
    shutil.rmtree(backup, ignore_errors=True)


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def reasons_summary(skipped: Mapping[str, str], limit: int = 3) -> str:
    """The first few ``clip: why`` pairs of a left-out mapping, for one line."""
    items = list(skipped.items())[:limit]
    return "; ".join(f"{cid}: {why}" for cid, why in items) + (" ..." if len(skipped) > limit else "")


class Staging:
    """A staging folder next to `out`; :meth:`publish` swaps it into place, :meth:`abandon` drops it."""

    def __init__(self, out: str | os.PathLike[str], marker: str):
        self.out = Path(out).absolute()
        self.out.parent.mkdir(parents=True, exist_ok=True)
        recover_export(self.out)  # a killed export's backup is back before `out` is checked
        prepare_out(str(self.out), marker)
        self.marker = marker
        self.path = self.out.parent / f".{self.out.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()

    def file(self, rel: str) -> Path:
        """Where the staged file `rel` goes: inside the staging folder, whatever `rel` holds."""
        return inside(self.path, rel)

    def previous_ids(self, index: str, column: str = "clip_id") -> set[str]:
        """Clip ids the current export at `out` holds (from its index file), if it is ours."""
        path = self.out / index
        if not (self.out / self.marker).exists() or not path.exists():
            return set()
        table = pq.read_table(path)
        return set(table.column(column).to_pylist()) if column in table.column_names else set()

    def high_water(self, previous: set[str]) -> int:
        """The most clips an export in `out` has held: its marker's record, at least its current count."""
        recorded = _read_json(self.out / self.marker).get(HIGH_WATER)
        return max(recorded if isinstance(recorded, int) else 0, len(previous))

    def publish(
        self,
        previous: set[str],
        written: Iterable[str],
        selected: Iterable[str],
        files: Iterable[str],
        replace: bool = False,
        report: ExportReport | None = None,
    ) -> None:
        """Check the staged export, refuse a failure or a large loss, record the high-water mark, swap.

        Every refusal happens before the swap, so a refused export publishes nothing and the
        previous one stays byte-identical; `report` rides on the :class:`ExportRefused`.
        """
        written, selected = set(written), set(selected)
        high_water = self.high_water(previous)
        try:
            self._check_complete(files)
            if not replace:
                self._check_loss(previous, written, selected)
                self._check_high_water(high_water, previous, written, selected)
            self._check_written(written, selected, report)
        except ExportRefused as exc:
            exc.report = report
            raise
        marker = self.path / self.marker
        mark = len(written) if replace else max(high_water, len(written))
        write_atomic(marker, json.dumps(_read_json(marker) | {HIGH_WATER: mark}, indent=2).encode())
        swap_into_place(self.path, self.out)

    def _check_complete(self, files: Iterable[str]) -> None:
        missing = [rel for rel in files if not self.file(rel).is_file() or self.file(rel).stat().st_size == 0]
        if missing:
            raise ExportRefused(
                f"export incomplete: {len(missing)} staged file(s) missing, e.g. {missing[0]}"
            )
        if not (self.path / self.marker).is_file():
            raise ExportRefused(f"export incomplete: no {self.marker} staged")

    def _check_loss(self, previous: set[str], written: set[str], selected: set[str]) -> None:
        lost = previous - written
        if previous and len(lost) > REMOVE_LIMIT * len(previous):
            failed = len(lost & selected)
            unselected = len(lost - selected)
            raise ExportRefused(
                f"refusing to replace the export in {self.out}: it would remove {len(lost)} of its "
                f"{len(previous)} clip(s) ({failed} selected but not writable: sources missing or "
                f"unreadable; "
                f"{unselected} no longer selected: the selection changed); the previous export is unchanged; "
                f"pass --replace to accept"
            )

    def _check_high_water(
        self, high_water: int, previous: set[str], written: set[str], selected: set[str]
    ) -> None:
        """Refuse holding fewer than half of the most clips this folder has held (no stepping down)."""
        floor = (1 - REMOVE_LIMIT) * high_water
        if len(written) >= floor:
            return
        failed = len(selected - written)
        reasons = []
        if failed:
            reasons.append(f"{failed} selected but not writable: sources missing or unreadable")
        if len(selected) < floor:
            reasons.append(f"the selection holds only {len(selected)}: the selection changed")
        raise ExportRefused(
            f"refusing to replace the export in {self.out}: it would hold {len(written)} clip(s), fewer "
            f"than half of the high-water mark of {high_water} (the most clips an export here has held; "
            f"it holds {len(previous)} now) ({'; '.join(reasons)}); the previous export is unchanged; "
            f"pass --replace to accept (and reset the high-water mark)"
        )

    def _check_written(self, written: set[str], selected: set[str], report: ExportReport | None) -> None:
        """A command that wrote none of its selected clips failed: it must not publish an empty export."""
        if selected and not written:
            why = f": {reasons_summary(report.skipped)}" if report and report.skipped else ""
            kept = "; the previous export is unchanged" if self.out.exists() else ""
            raise ExportRefused(
                f"none of the {len(selected)} selected clip(s) could be written{why}; "
                f"nothing was published{kept}"
            )

    def abandon(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary name, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)
