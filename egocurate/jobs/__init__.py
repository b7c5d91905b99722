"""Engines (local, Ray, Spark), the driver that commits, pipelines and corpus stages."""

from egocurate import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, (
    "pipeline: run_pipeline ingest; config: PipelineConfig load_config; driver: run_stage; stage: Stage "
    "CorpusStage Resources"
))
