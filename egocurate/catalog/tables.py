"""Table schemas of the catalog and the row conventions every stage shares.

Every stage owns one Delta table (see DESIGN.md). The schemas live here so that stages, runners,
queries and exports agree on column names and types without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa

# A stage marks a row it could not process by filling these two columns; the runner moves such rows
# to the `quarantine` table instead of the stage's own table. Stages never write Delta themselves.
ERROR_KIND = "_error_kind"
ERROR_MESSAGE = "_error_message"

# Error kinds used across stages (a stage may add its own, in snake_case).
ZERO_LENGTH = "zero_length"
NOT_FOUND = "not_found"
UNREADABLE = "unreadable"
TRUNCATED = "truncated"
AUDIO_ONLY = "audio_only"
NO_VIDEO_STREAM = "no_video_stream"
ABSURD_METADATA = "absurd_metadata"
TOO_SHORT = "too_short"
DECODE_ERROR = "decode_error"
STAGE_EXCEPTION = "stage_exception"


@dataclass(frozen=True)
class TableSpec:
    """A catalog table: its name, the key that identifies a row, and its Arrow schema."""

    name: str
    key: str
    schema: pa.Schema
    partition_by: tuple[str, ...] = field(default_factory=tuple)
    description: str = ""

    @property
    def columns(self) -> list[str]:
        return list(self.schema.names)


VIDEOS = TableSpec(
    name="videos",
    key="video_id",
    description="One row per distinct source video (exact duplicates folded, their uris kept).",
    schema=pa.schema(
        [
            ("video_id", pa.string()),
            ("uri", pa.string()),
            ("duplicate_uris", pa.list_(pa.string())),
            ("source", pa.string()),
            ("dataset", pa.string()),
            ("task_text", pa.string()),
            ("split", pa.string()),
            ("extra_json", pa.string()),
            ("bytes", pa.int64()),
            ("fingerprint", pa.string()),
            ("duration_s", pa.float64()),
            ("fps", pa.float64()),
            ("avg_fps", pa.float64()),
            ("real_fps", pa.float64()),
            ("num_frames", pa.int64()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            ("codec", pa.string()),
            ("pix_fmt", pa.string()),
            ("rotation", pa.int32()),
            ("has_audio", pa.bool_()),
            ("bitrate", pa.int64()),
            ("is_vfr", pa.bool_()),
            ("probe_backend", pa.string()),
            # Added with robot and generated sources (issue 16); a catalog written before them reads
            # these as null (Catalog.dataset) and gains them on its next write (Catalog.ensure).
            ("origin", pa.string()),  # "real" (recorded) or "generated" (a world model's rollout)
            ("generator", pa.string()),  # generated rows: the model that produced the video
            ("prompt", pa.string()),  # generated rows: the instruction it was rolled out from
            ("initial_frame", pa.string()),  # generated rows: uri of the first frame it started from
            ("dataset_uri", pa.string()),  # robot datasets: the dataset root the episode came from
            ("episode_index", pa.int64()),  # robot datasets: the episode within it
            ("camera", pa.string()),  # robot datasets: the video key this row's uri is
            ("actions_uri", pa.string()),  # robot datasets: the episode's data file (actions, states)
        ]
    ),
)

ORIGINS = ("real", "generated")

QUARANTINE = TableSpec(
    name="quarantine",
    key="uri",
    description="Inputs a stage could not process, with the reason. Reruns skip them.",
    schema=pa.schema(
        [
            ("uri", pa.string()),
            ("stage", pa.string()),
            ("key", pa.string()),
            ("error_kind", pa.string()),
            ("message", pa.string()),
            ("time", pa.timestamp("us", tz="UTC")),
        ]
    ),
)

CLIPS = TableSpec(
    name="clips",
    key="clip_id",
    description="Clips cut from videos: frame ranges (virtual) or transcoded files.",
    schema=pa.schema(
        [
            ("clip_id", pa.string()),
            ("video_id", pa.string()),
            ("clip_index", pa.int32()),
            ("start_frame", pa.int64()),
            ("end_frame", pa.int64()),
            ("start_s", pa.float64()),
            ("end_s", pa.float64()),
            ("duration_s", pa.float64()),
            ("fps", pa.float64()),
            ("num_frames", pa.int64()),
            ("split_method", pa.string()),
            ("split_config", pa.string()),
            ("boundary_kind", pa.string()),
            ("clip_uri", pa.string()),
            ("width", pa.int32()),
            ("height", pa.int32()),
            # Owned by ingest.shots: fps/num_frames/width/height describe the clip as delivered
            # (after crop, resize and target fps); src_fps is the source's; crop is x, y, w, h of
            # the upright source frame (null: full frame); encoder is set for transcoded clips.
            ("src_fps", pa.float64()),
            ("crop", pa.list_(pa.int32())),
            ("encoder", pa.string()),
        ]
    ),
)

LEDGER = TableSpec(
    name="_ledger",
    key="key",
    description="Which input keys each stage has finished, so rows that produced no output are not redone.",
    schema=pa.schema(
        [
            ("stage", pa.string()),
            ("key", pa.string()),
            ("run_id", pa.string()),
            ("rows_out", pa.int64()),
            ("time", pa.timestamp("us", tz="UTC")),
            # The key went to the quarantine (null in ledgers written before this column): lets
            # `catalog check` tell a lost quarantine row from a key that simply had no output.
            ("quarantined", pa.bool_()),
        ]
    ),
)

SPECS: dict[str, TableSpec] = {spec.name: spec for spec in (VIDEOS, QUARANTINE, CLIPS, LEDGER)}


def register(spec: TableSpec) -> TableSpec:
    """Add a table spec (later stages register their own tables here at import time)."""
    SPECS[spec.name] = spec
    return spec


def spec_for(name: str) -> TableSpec:
    """The spec of table `name`, with a clear error listing the known tables."""
    try:
        return SPECS[name]
    except KeyError:
        raise KeyError(f"unknown catalog table {name!r}; known tables: {sorted(SPECS)}") from None


class SchemaCastError(TypeError):
    """A write whose column cannot be cast to the table's declared type."""


def conform(table: pa.Table, spec: TableSpec) -> pa.Table:
    """Select and cast `table` to `spec`'s schema; missing nullable columns become nulls.

    Every write goes through here, so a table keeps one physical schema (``string``, never
    ``string_view``; fixed column order). A column that cannot be cast raises SchemaCastError
    naming the table, the column and both types.
    """
    columns = []
    for fld in spec.schema:
        if fld.name in table.column_names:
            column = table.column(fld.name)
            try:
                columns.append(column if column.type == fld.type else column.cast(fld.type))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SchemaCastError(
                    f"table {spec.name!r}: column {fld.name!r} has type {column.type}, which cannot be "
                    f"cast to the declared {fld.type} ({exc})"
                ) from None
        else:
            columns.append(pa.nulls(table.num_rows, type=fld.type))
    return pa.Table.from_arrays(columns, schema=spec.schema)


def error_columns(num_rows: int) -> dict[str, pa.Array]:
    """Null error columns for `num_rows` good rows (helper for stages building their output)."""
    return {ERROR_KIND: pa.nulls(num_rows, pa.string()), ERROR_MESSAGE: pa.nulls(num_rows, pa.string())}


# ----------------------------------------------------------------------------- later stages' tables
# Owned by the filters, annotate, latent_actions stages and shards.write. Each stage may refine its
# own spec here; nobody else writes these tables.
CLIP_QUALITY = register(
    TableSpec(
        name="clip_quality",
        key="clip_id",
        description="Per-clip quality scores (floats); thresholds are applied when reading.",
        schema=pa.schema(
            [
                ("clip_id", pa.string()),
                ("video_id", pa.string()),
                ("duration_s", pa.float64()),
                ("fps", pa.float64()),
                ("width", pa.int32()),
                ("height", pa.int32()),
                ("motion", pa.float32()),
                ("motion_method", pa.string()),
                ("static_fraction", pa.float32()),
                ("shake", pa.float32()),
                ("blur", pa.float32()),
                ("brightness", pa.float32()),
                ("dark_fraction", pa.float32()),
                ("bright_fraction", pa.float32()),
                ("text_overlay", pa.float32()),
                ("frame_diff", pa.float32()),
                ("frames_analysed", pa.int32()),
            ]
        ),
    )
)

CLIP_EMBEDDINGS = register(
    TableSpec(
        name="clip_embeddings",
        key="clip_id",
        # Delta has no half-precision type: `vector` holds `dim` little-endian float16 values as bytes
        # (half the size of float32). Decode with `egocurate.filters.vectors.decode_vectors`.
        description="One L2-normalised embedding per clip (float16 bytes in `vector`) with its model id.",
        schema=pa.schema(
            [
                ("clip_id", pa.string()),
                ("video_id", pa.string()),
                ("model_id", pa.string()),
                ("dim", pa.int32()),
                ("vector", pa.binary()),
            ]
        ),
    )
)

CLIP_DEDUP = register(
    TableSpec(
        name="clip_dedup",
        key="clip_id",
        description="Near-duplicate groups: group id, representative flag, nearest similarity.",
        schema=pa.schema(
            [
                ("clip_id", pa.string()),
                ("group_id", pa.string()),
                ("is_representative", pa.bool_()),
                ("nearest_similarity", pa.float32()),
                ("nearest_clip_id", pa.string()),
                ("method", pa.string()),
                ("eps", pa.float32()),
            ]
        ),
    )
)

CLIP_LABELS = register(
    TableSpec(
        name="clip_labels",
        key="clip_id",
        description="Task, scene and object labels, scores, top-k and source (given / caption / zeroshot).",
        schema=pa.schema(
            [
                ("clip_id", pa.string()),
                ("task", pa.string()),
                ("task_score", pa.float32()),
                ("scene", pa.string()),
                ("scene_score", pa.float32()),
                ("objects", pa.list_(pa.string())),
                ("object_scores", pa.list_(pa.float32())),
                ("verb", pa.string()),
                ("label_source", pa.string()),  # of task and objects: given | caption | zeroshot
                ("scene_source", pa.string()),  # a text that names no scene takes it from pixels
                ("text", pa.string()),  # the original manifest text, kept verbatim
                ("caption", pa.string()),
                ("task_topk", pa.list_(pa.string())),
                ("task_topk_scores", pa.list_(pa.float32())),
                ("scene_topk", pa.list_(pa.string())),
                ("scene_topk_scores", pa.list_(pa.float32())),
                ("label_model", pa.string()),
                ("vocab_id", pa.string()),
            ]
        ),
    )
)

# Owned by the captions stage (annotate.captioner).
CLIP_CAPTIONS = register(
    TableSpec(
        name="clip_captions",
        key="clip_id",
        description="One vision-language-model caption per clip (the label stage can map it to labels).",
        schema=pa.schema(
            [
                ("clip_id", pa.string()),
                ("video_id", pa.string()),
                ("caption", pa.string()),
                ("caption_model", pa.string()),
                ("prompt", pa.string()),
                ("frames", pa.int32()),
            ]
        ),
    )
)

# Owned by the stats stage (jobs.corpus.stats): corpus statistics of one run, in long form, appended
# per run so statistics are versioned with the catalog.
STATS = register(
    TableSpec(
        name="stats",
        key="stat_key",
        description="Corpus statistics per run: section, label(s), clips, seconds and a value.",
        schema=pa.schema(
            [
                ("stat_key", pa.string()),  # run/section/label/label2
                ("stats_run", pa.string()),
                ("computed_at", pa.timestamp("us", tz="UTC")),
                ("engine", pa.string()),
                ("section", pa.string()),
                ("label", pa.string()),
                ("label2", pa.string()),
                ("clips", pa.int64()),
                ("seconds", pa.float64()),
                ("value", pa.float64()),
                ("catalog_versions", pa.string()),  # JSON: table -> Delta version the run read
                ("thresholds", pa.string()),  # JSON
            ]
        ),
    )
)

CLIP_LATENTS = register(
    TableSpec(
        name="clip_latents",
        key="clip_id",
        description="Latent actions per clip: z_mu and log-variance (T-1, 32) as float16 bytes + shape.",
        schema=pa.schema(
            [
                ("clip_id", pa.string()),
                ("video_id", pa.string()),
                ("lam_model_id", pa.string()),
                ("lam_stride", pa.int32()),
                ("latent_actions", pa.binary()),  # z_mu, float16 little-endian, row-major
                ("latent_actions_shape", pa.list_(pa.int32())),  # [T-1, latent_dim]
                ("latent_logvar", pa.binary()),  # same dtype and shape as latent_actions
            ]
        ),
    )
)

# Owned by the tokenizer_latents stage (a second table, so each stage owns one and resumes alone).
CLIP_TOKENIZER_LATENTS = register(
    TableSpec(
        name="clip_tokenizer_latents",
        key="clip_id",
        description="Wan VAE latent mean per clip: bfloat16 bytes inline (or a file uri), shape, norms.",
        schema=pa.schema(
            [
                ("clip_id", pa.string()),
                ("video_id", pa.string()),
                ("tokenizer_id", pa.string()),
                ("tokenizer_stride", pa.int32()),
                ("window_frames", pa.int32()),  # 1+4k frames per encoded window
                ("window_starts", pa.list_(pa.int64())),  # first source frame of each window
                ("frame_height", pa.int32()),
                ("frame_width", pa.int32()),
                ("latent", pa.binary()),  # bfloat16 little-endian, row-major; null when latent_uri is set
                ("latent_uri", pa.string()),  # a .safetensors file (tensor "latent") when written out
                ("latent_dtype", pa.string()),
                ("latent_shape", pa.list_(pa.int32())),  # [windows, C, 1+k, H/s, W/s]
                ("latent_mean", pa.list_(pa.float32())),  # per channel: normalised = (mu - mean) / std
                ("latent_std", pa.list_(pa.float32())),
            ]
        ),
    )
)

SHARDS = register(
    TableSpec(
        name="shards",
        key="shard_uri",
        description="Training shards written from a query, with the catalog version they came from.",
        schema=pa.schema(
            [
                ("shard_uri", pa.string()),
                ("split", pa.string()),
                ("rows", pa.int64()),
                ("bytes", pa.int64()),
                ("query", pa.string()),
                ("catalog_version", pa.string()),
                ("manifest_uri", pa.string()),
                ("time", pa.timestamp("us", tz="UTC")),
            ]
        ),
    )
)

# Owned by ingest (robot datasets): the recorded action and state arrays of each episode, one row
# per video. Arrays are float32 little-endian bytes, row-major, with their shape beside them (Delta
# has no fixed-shape tensor type); names and units come from the dataset's meta/info.json.
EPISODE_ACTIONS = register(
    TableSpec(
        name="episode_actions",
        key="video_id",
        description="Real per-frame actions (and states) of robot episodes: float32 bytes + shape + names.",
        schema=pa.schema(
            [
                ("video_id", pa.string()),
                ("dataset_uri", pa.string()),  # the dataset root the episode came from
                ("episode_index", pa.int64()),
                ("camera", pa.string()),  # the video key the video row was decoded from
                ("fps", pa.float64()),
                ("num_frames", pa.int64()),
                ("actions", pa.binary()),  # float32, shape [num_frames, action_dim]
                ("actions_shape", pa.list_(pa.int32())),
                ("action_names", pa.list_(pa.string())),
                ("action_units", pa.list_(pa.string())),  # null where the dataset gives none
                ("states", pa.binary()),  # float32, shape [num_frames, state_dim]; null if absent
                ("states_shape", pa.list_(pa.int32())),
                ("state_names", pa.list_(pa.string())),
                ("source_format", pa.string()),  # e.g. "lerobot_v2.1"
            ]
        ),
    )
)

# Owned by the idm_actions stage: pseudo-actions from an inverse dynamics model, in the robot's own
# action space, per clip frame transition.
CLIP_IDM_ACTIONS = register(
    TableSpec(
        name="clip_idm_actions",
        key="clip_id",
        description="IDM pseudo-actions per clip: float16 bytes (T-1, A), model id, checkpoint hash, error.",
        schema=pa.schema(
            [
                ("clip_id", pa.string()),
                ("video_id", pa.string()),
                ("idm_model_id", pa.string()),
                ("checkpoint_hash", pa.string()),  # sha256 of the safetensors file
                ("horizon", pa.int32()),
                ("actions", pa.binary()),  # float16 little-endian, row-major, de-normalised units
                ("actions_shape", pa.list_(pa.int32())),  # [T-1, action_dim]
                ("action_names", pa.list_(pa.string())),
                ("real_action_mae", pa.float32()),  # against episode_actions; null without real actions
                ("real_action_rmse", pa.float32()),
            ]
        ),
    )
)
