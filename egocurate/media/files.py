"""Where a video's bytes are: a local path, or an fsspec URL opened as a file object."""

from __future__ import annotations

import os
from typing import Any


def is_remote(uri: str) -> bool:
    """True for object-store and other fsspec URLs (anything with a scheme but ``file://``)."""
    return "://" in uri and not uri.startswith("file://")


def local_path(uri: str) -> str:
    return uri[len("file://") :] if uri.startswith("file://") else uri


def open_source(uri: str, storage_options: dict | None) -> tuple[Any, Any]:
    """(what PyAV opens, file handle to close or None)."""
    if is_remote(uri):
        import fsspec

        handle = fsspec.open(uri, "rb", **(storage_options or {})).open()
        return handle, handle
    return local_path(uri), None


def file_stamp(uri: str) -> tuple:
    """(size, mtime) of a local file, so caches keyed by it notice a rewritten file; () otherwise."""
    if is_remote(uri):
        return ()
    try:
        st = os.stat(local_path(uri))
    except OSError:
        return ()
    return (st.st_size, st.st_mtime_ns)
