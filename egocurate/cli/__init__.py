"""The `egocurate` command line (Typer): one module per command group."""

from egocurate import lazy_exports

_EXPORTS = {
    "app": "egocurate.cli.main",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
