"""The `egocurate` command line (Typer): one module per command group."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, "main: app")
