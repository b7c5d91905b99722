"""Ingest stages: discover and probe videos, detect shots, plan clips."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "probe_stage: ProbeStage; shots_stage: ShotStage; shots: detect_shots detect_transitions; probe: "
    "probe; discover: discover"
))
