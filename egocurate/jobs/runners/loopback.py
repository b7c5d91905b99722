"""Services this process started must listen on loopback only: find them with psutil and check."""

from __future__ import annotations

import contextlib
import os

LOOPBACK = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


def listening(pid: int | None = None, marker: str = "") -> list[tuple[str, int, str]]:
    """(address, port, process name) of every socket that process `pid` (default: this one) or any
    of its descendants whose command line contains `marker` listens on."""
    import psutil

    root = psutil.Process(pid or os.getpid())
    procs = [root]
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(child.cmdline()):
                procs.append(child)
    out = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            for conn in proc.net_connections(kind="inet"):
                if conn.status == psutil.CONN_LISTEN:
                    out.append((conn.laddr.ip, conn.laddr.port, proc.name()))
    return out


def beyond_loopback(sockets: list[tuple[str, int, str]]) -> list[tuple[str, int, str]]:
    """The sockets of `sockets` bound to anything but a loopback address (``::`` and ``0.0.0.0`` too)."""
    return [entry for entry in sockets if entry[0] not in LOOPBACK]
