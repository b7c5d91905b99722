"""Which stages exist, how to build them from config, and which rows each one reads.

Entries are import strings so that a pipeline only imports what it runs (torch, open_clip and
friends stay unloaded for an ingest-only run). Add a stage by adding one entry here.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from dataclasses import dataclass
from typing import Any

import pydantic


@dataclass(frozen=True)
class StageEntry:
    """A registered stage: its class and the named input it consumes (see ``jobs.inputs``)."""

    name: str
    target: str  # "package.module:Class"
    inputs: str  # "discovered", "videos", "clips", ... (a builder in jobs.inputs)
    description: str = ""

    def load(self) -> type:
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


STAGES: dict[str, StageEntry] = {
    entry.name: entry
    for entry in (
        StageEntry(
            "ingest",
            "egocurate.ingest.probe_stage:ProbeStage",
            "discovered",
            "probe, fingerprint, quarantine",
        ),
        StageEntry(
            "episode_actions",
            "egocurate.ingest.episode_actions_stage:EpisodeActionsStage",
            "robot_episodes",
            "recorded actions and states of robot-dataset episodes",
        ),  # fmt: skip
        StageEntry("shots", "egocurate.ingest.shots_stage:ShotStage", "videos", "shot boundaries -> clips"),
        StageEntry(
            "quality", "egocurate.filters.quality_stage:QualityStage", "clips", "motion, blur, exposure"
        ),
        StageEntry("embed", "egocurate.filters.embed_stage:EmbedStage", "clips", "CLIP embedding per clip"),
        StageEntry(  # the stage and its logic: filters/dedup_stage.py, filters/dedup.py
            "dedup", "egocurate.jobs.corpus.dedup:DedupCorpusStage", "corpus", "near-dup groups"
        ),
        StageEntry(
            "captions", "egocurate.annotate.captioner_stage:CaptionStage", "clips", "VLM caption per clip"
        ),
        StageEntry(
            "labels",
            "egocurate.annotate.label_stage:LabelStage",
            "label_inputs",
            "task/scene/object labels from given text, captions or CLIP zero-shot",
        ),  # fmt: skip
        StageEntry("stats", "egocurate.jobs.corpus.stats:StatsStage", "corpus", "corpus statistics table"),
        StageEntry(
            "report", "egocurate.jobs.corpus.report:ReportStage", "corpus", "statistics + HTML report"
        ),
        StageEntry(
            "latent_actions",
            "egocurate.actions.lam_stage:LatentActionStage",
            "clips",
            "DreamDojo latent actions (T-1, 32) per clip",
        ),  # fmt: skip
        StageEntry(
            "idm_actions",
            "egocurate.actions.idm_stage:IDMActionStage",
            "idm_inputs",
            "inverse-dynamics pseudo-actions (T-1, A) per clip, in the robot's units",
        ),  # fmt: skip
        StageEntry(
            "tokenizer_latents",
            "egocurate.actions.tokenizer_stage:TokenizerLatentStage",
            "clips",
            "Wan VAE latents per clip",
        ),  # fmt: skip
    )
}


def register(entry: StageEntry) -> None:
    STAGES[entry.name] = entry


def entry_for(name: str) -> StageEntry:
    if name not in STAGES:
        raise ValueError(f"unknown stage {name!r}; allowed stages: {', '.join(sorted(STAGES))}")
    return STAGES[name]


def params_model(cls: type) -> type[pydantic.BaseModel]:
    """A pydantic model of `cls.__init__`'s parameters (type hints and defaults), forbidding extras."""
    hints = typing.get_type_hints(cls.__init__)
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(cls.__init__).parameters.items():
        if pname == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[pname] = (hints.get(pname, Any), default)
    config = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    return pydantic.create_model(f"{cls.__name__}Params", __config__=config, **fields)


def build_stage(name: str, params: dict[str, Any] | None = None) -> Any:
    """Instantiate stage `name` with `params`, validated against its constructor's type hints.

    A bad value raises ``ValueError`` naming the stage, the field and what it accepts.
    """
    cls = entry_for(name).load()
    model = params_model(cls)
    try:
        validated = model.model_validate(dict(params or {}))
    except pydantic.ValidationError as exc:
        raise ValueError(f"stage {name!r}: invalid parameters: {describe_errors(exc)}") from None
    try:
        return cls(**{k: getattr(validated, k) for k in model.model_fields})
    except ValueError as exc:  # e.g. Resources: batch_size must be >= 1
        raise ValueError(f"stage {name!r}: {exc}") from None


def describe_errors(exc: pydantic.ValidationError) -> str:
    """One line per problem: the field path, what is wrong, and the value given."""
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']} (got {err.get('input')!r})"
        for err in exc.errors()
    )


def stage_outputs(names: Any) -> dict[str, Any]:
    """``{stage: StageOutput}`` for the per-row stages among `names` (what ``catalog check`` needs
    to tell whether a ledgered key's output exists). Unknown names and corpus stages are skipped."""
    from egocurate.catalog.health import StageOutput

    out = {}
    for name in names:
        if name not in STAGES:
            continue
        cls = STAGES[name].load()
        if getattr(cls, "corpus", False) or not hasattr(cls, "input_key"):
            continue
        columns = getattr(cls, "done_key_columns", None) or (cls.input_key,)
        out[name] = StageOutput(table=cls.output_table, columns=tuple(columns))
    return out
