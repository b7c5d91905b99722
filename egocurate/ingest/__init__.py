"""Ingest stages: discover and probe videos, detect shots, plan clips."""

from egocurate import lazy_exports

_EXPORTS = {
    "ProbeStage": "egocurate.ingest.probe_stage",
    "ShotStage": "egocurate.ingest.shots_stage",
    "detect_shots": "egocurate.ingest.shots",
    "detect_transitions": "egocurate.ingest.shots",
    "probe": "egocurate.ingest.probe",
    "discover": "egocurate.ingest.discover",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
