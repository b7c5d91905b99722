"""Exports the trainers read as they are: DreamDojo's MP4 tree and LeRobot v2.1."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "dreamdojo: export_dreamdojo; lerobot: export_lerobot; common: ExportReport ExportRefused recover_export"
))
