"""Pipeline configuration: stages with their parameters, engine and catalog in one YAML file.

Validated with pydantic; a bad value names the field and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator

EngineName = Literal["local", "ray", "spark"]


class RayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    address: str | None = Field(
        None, description="ray.init address: None starts a local Ray, 'auto' joins a cluster"
    )
    num_cpus: int | None = Field(None, ge=1)
    progress_timeout_s: float | None = Field(
        None, gt=0, description="end a stage when no batch finished for this long (default 300 s)"
    )


class SparkConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    master: str | None = Field(None, description="spark master URL, e.g. local[*], spark://host:7077, yarn")
    conf: dict[str, str] = Field(default_factory=dict)
    progress_timeout_s: float | None = Field(
        None, gt=0, description="fail a work unit's job that makes no progress this long per batch wave"
    )


class StageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    engine: EngineName | None = None
    engine_locked: bool = Field(
        False, description="keep this stage's engine even when the run's engine is overridden"
    )
    enabled: bool = True
    resources: dict[str, Any] = Field(
        default_factory=dict, description="overrides of the stage's Resources (cpus, gpus, batch_size, ...)"
    )

    @field_validator("name")
    @classmethod
    def _known(cls, value: str) -> str:
        from egocurate.jobs.registry import STAGES

        if value not in STAGES:
            raise ValueError(f"unknown stage {value!r}; allowed: {', '.join(sorted(STAGES))}")
        return value


class PipelineConfig(BaseModel):
    """One run: where the catalog lives, which engine, which sources, which stages with what params."""

    model_config = ConfigDict(extra="forbid")
    catalog: str
    engine: EngineName = "local"
    sources: list[str] = Field(default_factory=list)
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig(name="ingest")])
    commit_every: int = Field(256, ge=1, description="input rows per Delta commit (the resumption unit)")
    storage_options: dict[str, str] = Field(default_factory=dict)
    ray: RayConfig = Field(default_factory=RayConfig)
    spark: SparkConfig = Field(default_factory=SparkConfig)
    # No top-level `thresholds`: they are read-time filters of the commands and stages that read the
    # clip view (`--threshold`, or the stats/report stage's `params: {thresholds: ...}`), never
    # applied while the catalog is written, so a top-level key would silently do nothing.
    progress: bool = True
    shared_decode: bool = Field(
        True,
        description="run consecutive per-clip stages that read frames (quality, embed, latent_actions) "
        "as one pass that decodes each clip once",
    )
    allow_empty: bool = Field(False, description="accept sources that match no file (else an error)")
    camera: str | None = Field(
        None, description="LeRobot sources: the video key to ingest (default: each dataset's first)"
    )


class EmptySourceError(ValueError):
    """Sources that match no file: almost always a typo, so it is an error unless allowed."""


def with_engine_options(
    config: PipelineConfig,
    engine: str | None = None,
    ray_address: str | None = None,
    spark_master: str | None = None,
    spark_conf: dict[str, str] | None = None,
    progress_timeout: float | None = None,
) -> PipelineConfig:
    """`config` with the command line's (or environment's) engine options over the file's.

    An engine given here replaces the run's engine and every stage's, except stages with
    ``engine_locked: true``; None leaves the file's value. `progress_timeout` (``--progress-timeout``
    or ``EGOCURATE_PROGRESS_TIMEOUT``) replaces both ``ray.progress_timeout_s`` and
    ``spark.progress_timeout_s``.
    """
    config = config.model_copy(deep=True)
    if engine:
        config.engine = engine
        for stage in config.stages:
            if not stage.engine_locked:
                stage.engine = None
    if ray_address:
        config.ray.address = ray_address
    if spark_master:
        config.spark.master = spark_master
    config.spark.conf.update(spark_conf or {})
    if progress_timeout:
        config.ray.progress_timeout_s = config.spark.progress_timeout_s = float(progress_timeout)
    return config


class ConfigError(ValueError):
    """A configuration problem, worded for the person who wrote the file."""


def describe(exc: pydantic.ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        line = f"  {loc}: {err['msg']} (got {err.get('input')!r})"
        if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
            line += f"; allowed keys: {', '.join(PipelineConfig.model_fields)}"
            if loc == "thresholds":
                line += "; thresholds are read-time filters: give them to the stats/report stage params"
        lines.append(line)
    return "\n".join(lines)


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Read and validate a pipeline YAML; relative catalog and source paths resolve against its folder."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"pipeline config not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw.update(overrides or {})
    base = path.resolve().parent
    if isinstance(raw.get("catalog"), str) and "://" not in raw["catalog"]:
        raw["catalog"] = str((base / raw["catalog"]).resolve())
    if isinstance(raw.get("sources"), list):
        raw["sources"] = [
            str((base / s).resolve())
            if isinstance(s, str) and "://" not in s and not s.startswith("/")
            else s
            for s in raw["sources"]
        ]
    try:
        return PipelineConfig.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"{path}: invalid pipeline config:\n{describe(exc)}") from None
