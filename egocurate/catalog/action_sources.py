"""The action-source vocabulary: which catalog table an exported or streamed ``action`` comes from.

One parser for ``--action-source`` (``export lerobot``) and ``action_source=`` (``ShardDataset``), so
both accept the same spellings and refuse the same input with the same message. It lives in
``catalog`` because the names stand for catalog tables (``real``: ``episode_actions``, ``idm``:
``clip_idm_actions``, ``latent``: ``clip_latents``) and ``shards`` and ``export`` may both import
``catalog`` but not each other (tests/test_layout.py).
"""

from __future__ import annotations

from collections.abc import Sequence

# The canonical names, in the README's order; ``zeros`` (no table) is an export's last resort.
ACTION_SOURCES = ("real", "idm", "latent", "zeros")


class ActionSourceError(ValueError):
    """An action-source order that names no source or an unknown one (a user's input, one line)."""


def parse_action_order(value: str | Sequence[str] | None, default: tuple[str, ...] = ()) -> tuple[str, ...]:
    """A preference order from ``"real,idm,latent"`` (or a sequence of names); None is `default`.

    Names are case- and space-insensitive and a repeated name counts once (its first place), so
    ``" Real, idm,real"`` is ``("real", "idm")``. An order with no name or an unknown one raises
    :class:`ActionSourceError` with one message, whichever caller asked.
    """
    if value is None:
        return default
    parts = value.split(",") if isinstance(value, str) else list(value)
    items = [str(v).strip().lower() for v in parts]
    items = [v for v in items if v]
    unknown = [v for v in items if v not in ACTION_SOURCES]
    if not items or unknown:
        raise ActionSourceError(
            f"action source must be a comma-separated order of {', '.join(ACTION_SOURCES)}; got {value!r}"
        )
    return tuple(dict.fromkeys(items))
