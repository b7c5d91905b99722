"""Engines (local, Ray, Spark), the driver that commits, pipelines and corpus stages."""

from egocurate import lazy_exports

_EXPORTS = {
    "run_pipeline": "egocurate.jobs.pipeline",
    "ingest": "egocurate.jobs.pipeline",
    "PipelineConfig": "egocurate.jobs.config",
    "load_config": "egocurate.jobs.config",
    "run_stage": "egocurate.jobs.driver",
    "Stage": "egocurate.jobs.stage",
    "CorpusStage": "egocurate.jobs.stage",
    "Resources": "egocurate.jobs.stage",
}
__all__ = sorted(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
