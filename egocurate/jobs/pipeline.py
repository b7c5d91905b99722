"""Run a pipeline: build the engine(s), feed each stage its rows, commit, summarise."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

from egocurate.catalog.store import Catalog
from egocurate.jobs.config import EmptySourceError, EngineName, PipelineConfig, StageConfig
from egocurate.jobs.driver import Engine, StageSummary, run_fused, run_stage
from egocurate.jobs.engine_logs import active_log, route_engine_output
from egocurate.jobs.fused import FusedStage
from egocurate.jobs.inputs import build_inputs
from egocurate.jobs.registry import build_stage, entry_for
from egocurate.jobs.stage import BaseStage, CorpusStage


def make_engine(name: EngineName, config: PipelineConfig | None = None) -> Engine:
    """An engine by name, configured from the pipeline's `ray` / `spark` sections."""
    config = config or PipelineConfig(catalog=".")
    if name == "local":
        from egocurate.jobs.runners.local import LocalEngine

        return LocalEngine()
    route_engine_output(config.catalog, config.storage_options)  # before Ray or the JVM starts
    if name == "ray":
        from egocurate.jobs.runners.ray import RayEngine

        return RayEngine(
            address=config.ray.address,
            num_cpus=config.ray.num_cpus,
            progress_timeout=config.ray.progress_timeout_s,
            keep_warm=True,  # one run keeps its actors across stages; the run closes the engine
        )
    if name == "spark":
        from egocurate.jobs.runners.spark import SparkEngine

        return SparkEngine(
            master=config.spark.master,
            work_unit_rows=config.commit_every,
            conf=config.spark.conf,
            progress_timeout=config.spark.progress_timeout_s,
        )
    raise ValueError(f"unknown engine {name!r}; allowed: local, ray, spark")


def _shares_decode(stage: object) -> bool:
    """A per-clip stage that declares its frames (``frame_plan``), so a fused pass can feed it."""
    return isinstance(stage, BaseStage) and type(stage).frame_plan is not BaseStage.frame_plan


def plan_groups(config: PipelineConfig, built: list[tuple]) -> list[list[tuple]]:
    """Consecutive stages run as one fused pass when ``shared_decode`` is on and they can share it:
    per-clip stages that declare their frames, read the same input and run on the same engine."""
    groups: list[list[tuple]] = []
    for item in built:
        stage_config, entry, stage = item
        previous = groups[-1][-1] if groups else None
        joins = (
            config.shared_decode
            and previous is not None
            and _shares_decode(stage)
            and _shares_decode(previous[2])
            and entry.inputs == previous[1].inputs
            and (stage_config.engine or config.engine) == (previous[0].engine or config.engine)
        )
        if joins:
            groups[-1].append(item)
        else:
            groups.append([item])
    return groups


def run_pipeline(config: PipelineConfig, console: Console | None = None) -> list[StageSummary]:
    """Run every enabled stage in order; each one resumes from what the catalog already holds."""
    catalog = Catalog(config.catalog, config.storage_options or None)
    engines: dict[str, Engine] = {}
    summaries: list[StageSummary] = []
    built = []
    stage_configs, auto = with_episode_actions(config)
    for stage_config in stage_configs:
        if not stage_config.enabled:
            continue
        entry = entry_for(stage_config.name)
        params = dict(stage_config.params)
        if config.storage_options and "storage_options" in inspect.signature(entry.load()).parameters:
            params.setdefault("storage_options", config.storage_options)  # one mapping for every stage
        if (stage_config.engine or config.engine) == "spark":
            _corpus_spark_params(entry.load(), params, config)
        if (stage_config.engine or config.engine) == "ray":
            _corpus_ray_params(entry.load(), params, config)
        stage = build_stage(stage_config.name, params)
        if stage_config.resources and not isinstance(stage, CorpusStage):
            stage.resources = stage.resources.with_(**stage_config.resources)
        built.append((stage_config, entry, stage))
    try:
        for group in plan_groups(config, built):
            stage_config, entry, stage = group[0]
            engine_name = stage_config.engine or config.engine
            if isinstance(stage, CorpusStage):  # whole-corpus work runs on the driver, no engine
                if getattr(stage, "engine", None) == "ray" and "ray" in engines:
                    engines["ray"].release(cpus=1.0)  # its Ray tasks need a CPU idle warm actors may hold
                if engine_name == "spark" and "spark" not in engines:
                    engines["spark"] = make_engine("spark", config)  # the session (and conf) it reuses
                summaries.append(stage.run_corpus(catalog, progress=config.progress))
                continue
            rows = build_inputs(
                entry.inputs, catalog, config.sources, config.storage_options or None, camera=config.camera
            )
            if stage_config is auto and rows.num_rows == 0:
                continue  # added for robot datasets; nothing of the kind to do: no engine, no summary
            if engine_name not in engines:
                engines[engine_name] = make_engine(engine_name, config)
            if entry.inputs == "discovered" and rows.num_rows == 0 and not config.allow_empty:
                raise EmptySourceError(
                    f"no video found in {', '.join(config.sources) or '(no sources)'}; "
                    "check the paths or globs, or pass --allow-empty (allow_empty: true)"
                )
            options = {"commit_every": config.commit_every, "progress": config.progress}
            if len(group) > 1:
                fused = FusedStage([item[2] for item in group])
                summaries += run_fused(fused, rows, catalog, engines[engine_name], **options)
            else:
                summaries.append(run_stage(stage, rows, catalog, engines[engine_name], **options))
    finally:
        for engine in engines.values():
            engine.close()
    if console is not None:
        print_summary(summaries, console)
    return summaries


def with_episode_actions(config: PipelineConfig) -> tuple[list[StageConfig], StageConfig | None]:
    """The configured stages with ``episode_actions`` right after ``ingest`` (unless the file names
    it), and that added stage: robot-dataset episodes get their actions in the same run. It runs
    only when the catalog has robot episodes without actions (none: no engine, no summary line)."""
    stages = list(config.stages)
    names = [s.name for s in stages]
    if "ingest" not in names or "episode_actions" in names:
        return stages, None
    at = names.index("ingest") + 1
    ingest = stages[at - 1]
    auto = StageConfig(name="episode_actions", engine=ingest.engine, engine_locked=ingest.engine_locked)
    return [*stages[:at], auto, *stages[at:]], auto


def _corpus_ray_params(cls: type, params: dict[str, Any], config: PipelineConfig) -> None:
    """Dedup on the Ray engine: its per-cluster search as Ray tasks on the run's cluster."""
    accepted = inspect.signature(cls).parameters
    if "engine" in accepted and "ray_address" in accepted:
        params.setdefault("engine", "ray")
        if config.ray.address:
            params.setdefault("ray_address", config.ray.address)


def _corpus_spark_params(cls: type, params: dict[str, Any], config: PipelineConfig) -> None:
    """Statistics and report on the Spark engine: the run's master unless the stage's params say."""
    accepted = inspect.signature(cls).parameters
    if "engine" in accepted and "spark_master" in accepted:
        params.setdefault("engine", "spark")
        if config.spark.master:
            params.setdefault("spark_master", config.spark.master)


def print_summary(summaries: Sequence[StageSummary], console: Console) -> None:
    table = Table(title="egocurate run summary")
    for column in ("stage", "engine", "rows in", "skipped", "rows out", "quarantined", "seconds", "rows/s",
                   "video h/h"):  # fmt: skip
        table.add_column(column, justify="right" if column not in ("stage", "engine") else "left")
    for s in summaries:
        table.add_row(
            s.stage, s.engine, str(s.rows_in), str(s.rows_skipped), str(s.rows_out), str(s.quarantined),
            f"{s.seconds:.2f}", f"{s.rows_per_s:.2f}", f"{s.video_hours_per_hour:.1f}",
        )  # fmt: skip
    console.print(table)
    for s in summaries:
        if s.no_output:  # work that yields nothing is said, not silently dropped
            console.print(f"{s.stage}: {s.no_output} {s.no_output_note}")
    if active_log():
        console.print(f"Ray and Spark output: {active_log()} (--verbose shows it here)", style="dim")


def ingest(
    sources: Sequence[str],
    catalog: str,
    engine: EngineName = "local",
    **config: Any,
) -> StageSummary:
    """Ingest `sources` into `catalog` (the Python twin of ``egocurate ingest``)."""
    cfg = PipelineConfig(catalog=catalog, engine=engine, sources=list(sources), **config)
    return run_pipeline(cfg)[0]
