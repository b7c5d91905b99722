"""Ray's and Spark's own output goes to a log file under the catalog's ``_logs/``, not the terminal.

Ray's C++ core worker, its raylet and GCS, and Spark's JVM write to file descriptor 2 (the JVM and
Ray's daemons inherit it when they start), not through Python. So the CLI, unless ``--verbose``,
points descriptor 2 at ``<catalog>/_logs/<time>-<pid>-engines.log`` before the first engine starts,
while Python's ``sys.stderr`` keeps the terminal: egocurate's own messages, warnings and tracebacks
still show. A catalog on object storage gets its log written locally and copied there at exit.
Library users are unaffected unless they call :func:`route_engine_output` themselves.
"""

from __future__ import annotations

import atexit
import logging
import os
import sys
import tempfile
import time
from typing import Any

LOGS_DIR = "_logs"
VERBOSE_ENV = "EGOCURATE_VERBOSE"

_state: dict[str, Any] = {"enabled": False, "path": None, "stream": None}


def enable(on: bool = True) -> None:
    """Turn routing on for this process (the CLI does, unless ``--verbose``)."""
    _state["enabled"] = on and not os.environ.get(VERBOSE_ENV)


def active_log() -> str | None:
    """Where engine output goes now, or None when it goes to the terminal."""
    return _state["path"]


def _is_remote(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


def route_engine_output(catalog_root: str, storage_options: dict | None = None) -> str | None:
    """Send descriptor 2 to the catalog's engine log, once per process; return the log's path.

    Does nothing (and returns None) unless routing is enabled, or when it is already routed.
    """
    if not _state["enabled"] or _state["path"]:
        return _state["path"]
    name = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{os.getpid()}-engines.log"
    root = catalog_root.rstrip("/")
    if _is_remote(root):
        local = os.path.join(tempfile.mkdtemp(prefix="egocurate-logs-"), name)
        target = f"{root}/{LOGS_DIR}/{name}"
        atexit.register(_upload, local, target, storage_options)
    else:
        directory = os.path.join(root.removeprefix("file://"), LOGS_DIR)
        os.makedirs(directory, exist_ok=True)
        local = target = os.path.join(directory, name)
    sys.stderr.flush()
    terminal = os.dup(2)
    log_fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    # Python keeps writing to the terminal; only what bypasses it (C++, JVM, child daemons) is logged.
    sys.stderr = open(terminal, "w", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    _state["stream"] = open(os.dup(2), "w", buffering=1, encoding="utf-8", errors="backslashreplace")  # noqa: SIM115
    _state["path"] = target
    capture_loggers("py4j", "pyspark")
    return target


def capture_loggers(*names: str) -> None:
    """Point the console handlers of Python loggers ``names`` (an engine's own) at the engine log.

    Ray configures its ``ray`` logger when imported, with a handler on the then ``sys.stderr``;
    the engine calls this after the import. Does nothing when output is not routed.
    """
    stream = _state["stream"]
    if stream is None:
        return
    for name in names:
        logger = logging.getLogger(name)
        handlers = [
            h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
        ]
        for handler in handlers:
            handler.setStream(stream)
        if not handlers:
            logger.addHandler(logging.StreamHandler(stream))
            logger.propagate = False


def _upload(local: str, target: str, storage_options: dict | None) -> None:
    """Copy a remote catalog's engine log to it at exit (best effort: a log is never worth a crash)."""
    import fsspec

    from egocurate.storage import fsspec_options

    try:
        with open(local, "rb") as src, fsspec.open(target, "wb", **fsspec_options(storage_options)) as dst:
            dst.write(src.read())
    except Exception as exc:  # noqa: BLE001 - report and keep the local copy
        print(f"note: engine log kept at {local} (copy to {target} failed: {exc})", file=sys.stderr)
