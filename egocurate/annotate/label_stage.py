"""The label stage: task, scene and object labels per clip, from given text, captions or pixels.

Each clip is labelled from the first source in ``sources`` that it has:

- ``given``: the manifest's task text or narration (videos.task_text), mapped by :class:`TextLabeler`;
- ``caption``: a caption from the captions stage, mapped the same way;
- ``zeroshot``: its CLIP image embedding, scored against the vocabulary by :class:`ZeroShotLabeler`.

A text that names no scene takes its scene from the pixels when the clip has an embedding
(``scene_source = zeroshot``). Models load on first use, once per worker; CPU is enough.
``text_embedder`` is ``minilm`` (default), a sentence-transformers folder or id, ``clip:<model>``, or
``none`` for lexical matching only.

A clip with none of the configured sources gets no row (and counts as done for this stage). The
``label_inputs`` builder leaves out clips that have no text, caption or embedding yet, so those are
labelled by a later run, once one of them arrives.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pyarrow as pa

from egocurate.annotate.embedders import DEFAULT_EMBEDDER
from egocurate.annotate.text_labels import TextLabeler
from egocurate.annotate.vocabulary import Vocabulary
from egocurate.annotate.zeroshot import ZeroShotLabeler
from egocurate.catalog import tables
from egocurate.stage_base import BaseStage, Resources

LabelSource = Literal["given", "caption", "zeroshot"]
EMBEDDING_MISMATCH = "embedding_mismatch"
ZEROSHOT_UNAVAILABLE = "zeroshot_unavailable"

OUTPUT_SCHEMA = pa.schema(
    [
        *tables.CLIP_LABELS.schema,
        ("video_id", pa.string()),
        ("uri", pa.string()),
        (tables.ERROR_KIND, pa.string()),
        (tables.ERROR_MESSAGE, pa.string()),
    ]
)


def as_vector(value: Any) -> np.ndarray:
    """A stored embedding as float32: little-endian float16 bytes (``clip_embeddings.vector``) or a list."""
    if isinstance(value, bytes | bytearray | memoryview):
        return np.frombuffer(value, dtype="<f2").astype(np.float32)
    return np.asarray(value, dtype=np.float32)


def _text(value: Any) -> str:
    return str(value).strip() if value is not None else ""


class LabelStage(BaseStage):
    """Label clips from given text, captions or CLIP embeddings (see module docstring)."""

    name = "labels"
    input_key = "clip_id"
    output_table = tables.CLIP_LABELS.name

    def __init__(
        self,
        sources: list[LabelSource] = ["given", "caption", "zeroshot"],  # noqa: B006 (pydantic copies it)
        vocab: list[str] = [],  # noqa: B006
        replace_vocab: bool = False,
        text_embedder: str = DEFAULT_EMBEDDER,
        lexical_weight: float = 0.6,
        min_scene_similarity: float = 0.3,
        clip_model: str = "ViT-B-32",
        clip_pretrained: str | None = "laion2b_s34b_b79k",
        clip_config: str | None = None,
        clip_seed: int = 0,
        top_k: int = 5,
        device: str = "cpu",
        cache_dir: str | None = None,
        batch_size: int = 256,
    ):
        if not sources:
            raise ValueError("sources must name at least one of: given, caption, zeroshot")
        self.sources = list(dict.fromkeys(sources))
        self.vocab_paths = list(vocab)
        self.replace_vocab = replace_vocab
        self.text_embedder = text_embedder
        self.lexical_weight = lexical_weight
        self.min_scene_similarity = min_scene_similarity
        self.clip_model = clip_model
        self.clip_pretrained = clip_pretrained
        self.clip_config = clip_config
        self.clip_seed = clip_seed
        self.top_k = top_k
        self.device = device
        self.cache_dir = cache_dir
        self.resources = Resources(cpus=1, batch_size=batch_size)
        self.vocab: Vocabulary | None = None
        self.vocab_id: str | None = None
        self._text_labeler: TextLabeler | None = None
        self._zeroshot: ZeroShotLabeler | None = None

    # ------------------------------------------------------------------ models (lazy, once per worker)
    def setup(self) -> None:
        """Load the vocabulary; the models load when a batch first needs them."""
        if self.vocab is None:
            self.vocab = Vocabulary.load(self.vocab_paths, replace=self.replace_vocab)
            self.vocab_id = self.vocab.fingerprint()

    @property
    def text_labeler(self) -> TextLabeler:
        if self._text_labeler is None:
            from egocurate.annotate.embedders import load_text_embedder

            self.setup()
            embedder = None  # "none": lexical matching only (fast, no model)
            if self.text_embedder != "none":
                embedder = load_text_embedder(self.text_embedder, self.device, self.clip_config)
            self._text_labeler = TextLabeler(
                self.vocab,
                embedder,
                self.lexical_weight,
                self.top_k,
                self.cache_dir,
                self.min_scene_similarity,
            )
        return self._text_labeler

    @property
    def zeroshot(self) -> ZeroShotLabeler:
        if self._zeroshot is None:
            from egocurate.annotate.embedders import ClipTextEmbedder

            self.setup()
            embedder = ClipTextEmbedder(
                self.clip_model, self.clip_pretrained, self.device, self.clip_config, seed=self.clip_seed
            )
            self._zeroshot = ZeroShotLabeler(self.vocab, embedder, self.top_k, self.cache_dir)
        return self._zeroshot

    # ------------------------------------------------------------------ labelling
    def _source_of(self, row: dict) -> LabelSource | None:
        for source in self.sources:
            if source == "given" and _text(row.get("task_text")):
                return "given"
            if source == "caption" and _text(row.get("caption")):
                return "caption"
            if source == "zeroshot" and row.get("vector") is not None:
                return "zeroshot"
        return None

    def _check_model(self, row: dict, tower_id: str) -> str | None:
        """Why a row's embedding cannot be scored by our text tower, or None if it can."""
        model_id = row.get("model_id") or ""
        if model_id and model_id != tower_id:
            return (
                f"embedding model {model_id!r} is not the zero-shot text tower {tower_id!r}: "
                "set clip_model / clip_pretrained / clip_seed to the embed stage's model"
            )
        return None

    def process(self, batch: pa.Table) -> pa.Table:
        """One label row per clip that has a configured source; others are left out (see module doc)."""
        self.setup()
        rows = batch.to_pylist()
        chosen = [self._source_of(r) for r in rows]
        out: list[dict] = [self._empty(r) for r in rows]
        text_rows = [i for i, s in enumerate(chosen) if s in ("given", "caption")]
        if text_rows:
            texts = [
                _text(rows[i]["task_text"] if chosen[i] == "given" else rows[i]["caption"]) for i in text_rows
            ]
            labeler = self.text_labeler
            for i, labels in zip(text_rows, labeler.label(texts), strict=True):
                out[i].update(
                    task=labels.task,
                    task_score=labels.task_score,
                    verb=labels.verb,
                    scene=labels.scene,
                    scene_score=labels.scene_score,
                    objects=labels.objects,
                    object_scores=labels.object_scores,
                    task_topk=labels.task_topk,
                    task_topk_scores=labels.task_topk_scores,
                    scene_topk=labels.scene_topk,
                    scene_topk_scores=labels.scene_topk_scores,
                    label_source=chosen[i],
                    scene_source=chosen[i] if labels.scene else None,
                    label_model=labeler.embedder.model_id if labeler.embedder is not None else "lexical",
                )
        # Pixels: clips labelled from pixels, and scenes that the text did not name.
        pixel_rows = [
            i
            for i, r in enumerate(rows)
            if r.get("vector") is not None
            and "zeroshot" in self.sources
            and (chosen[i] == "zeroshot" or out[i]["scene"] is None)
        ]
        usable, tower_id = [], ""
        if pixel_rows:
            try:
                tower_id = self.zeroshot.embedder.model_id
            except Exception as exc:  # e.g. weights not in the local cache: text labels still stand
                message = (
                    f"zero-shot text tower {self.clip_model!r} failed to load: {type(exc).__name__}: {exc}"
                )
                for i in pixel_rows:
                    if chosen[i] == "zeroshot":
                        out[i].update(
                            {tables.ERROR_KIND: ZEROSHOT_UNAVAILABLE, tables.ERROR_MESSAGE: message}
                        )
                pixel_rows = []
        for i in pixel_rows:
            problem = self._check_model(rows[i], tower_id)
            if problem is None:
                usable.append(i)
            elif chosen[i] == "zeroshot":
                out[i].update({tables.ERROR_KIND: EMBEDDING_MISMATCH, tables.ERROR_MESSAGE: problem})
        if usable:
            vectors = np.stack([as_vector(rows[i]["vector"]) for i in usable])
            labeler = self.zeroshot
            if vectors.shape[1] != labeler.dim:
                message = f"embedding dimension {vectors.shape[1]} != text tower dimension {labeler.dim}"
                for i in usable:
                    if chosen[i] == "zeroshot":
                        out[i].update({tables.ERROR_KIND: EMBEDDING_MISMATCH, tables.ERROR_MESSAGE: message})
                usable = []
            for i, labels in zip(usable, labeler.label(vectors) if usable else [], strict=True):
                scene_fields = dict(
                    scene=labels.scenes[0],
                    scene_score=labels.scene_scores[0],
                    scene_topk=labels.scenes,
                    scene_topk_scores=labels.scene_scores,
                    scene_source="zeroshot",
                )
                out[i].update(scene_fields)
                if chosen[i] == "zeroshot":
                    out[i].update(
                        task=labels.tasks[0],
                        task_score=labels.task_scores[0],
                        verb=labeler.verb_of(labels.tasks[0]),
                        task_topk=labels.tasks,
                        task_topk_scores=labels.task_scores,
                        objects=labels.objects,
                        object_scores=labels.object_scores,
                        label_source="zeroshot",
                        label_model=labeler.embedder.model_id,
                    )
        kept = [o for o, s in zip(out, chosen, strict=True) if s is not None]
        return pa.Table.from_pylist(kept, schema=OUTPUT_SCHEMA)

    def _empty(self, row: dict) -> dict:
        return {
            "clip_id": row["clip_id"],
            "video_id": row.get("video_id"),
            "uri": row.get("uri"),
            "text": _text(row.get("task_text")) or None,
            "caption": _text(row.get("caption")) or None,
            "scene": None,
            "vocab_id": self.vocab_id,
            tables.ERROR_KIND: None,
            tables.ERROR_MESSAGE: None,
        }
