"""Exports the trainers read as they are: DreamDojo's MP4 tree and LeRobot v2.1."""

from egocurate import lazy_exports

_EXPORTS = {
    "export_dreamdojo": "egocurate.export.dreamdojo",
    "export_lerobot": "egocurate.export.lerobot",
    "ExportReport": "egocurate.export.common",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
