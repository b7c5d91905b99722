"""egocurate: turn raw egocentric video into a training corpus for robot world models.

Rooms (see README "How it is built"): ``media`` (pixels and ffmpeg), ``catalog`` (Delta state),
stage packages ``ingest``, ``filters``, ``annotate``, ``latent_actions``, then ``shards`` and
``export`` for trainers, ``jobs`` (engines and driver), ``cli``, and ``testing`` (generators).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

__version__ = "0.1.0"


def lazy_exports(package: str, spec: str) -> tuple[Callable[[str], Any], list[str]]:
    """A module ``__getattr__`` (and ``__all__``) that imports a public name on first use.

    `spec` reads ``"module: Name other_name; module2: Name3"`` (modules relative to `package`).
    Packages list the names users import (``from egocurate.catalog import Catalog``) without paying
    for torch, Ray or deltalake until one of them is used.
    """
    exports = {
        name: f"{package}.{module.strip()}"
        for part in spec.split(";")
        for module, _, names in [part.partition(":")]
        for name in names.split()
    }

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    return __getattr__, sorted(exports)
