"""Zero-shot task, scene and object labels from pixels: CLIP image embeddings against text prompts.

The image side is already in the catalog (``clip_embeddings``). The text side is one prompt-ensembled
vector per vocabulary entry, computed once per (model, vocabulary, templates) and cached on disk, so
labelling a clip is one matrix product on CPU and needs no GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from egocurate.annotate.embedders import TextEmbedder, cached_encode
from egocurate.annotate.vocabulary import ANY_OBJECT, Task, Vocabulary

TASK_TEMPLATES = (
    "a photo of hands {ing} {obj}.",
    "a first-person video of a person {ing} {obj}.",
    "an egocentric view of someone {ing} {obj}.",
    "a close-up of hands {ing} {obj} on a table.",
)
SCENE_TEMPLATES = (
    "a photo of a {scene}.",
    "a first-person view inside a {scene}.",
    "a photo taken in the {scene}.",
)
OBJECT_TEMPLATES = (
    "a photo of a {obj}.",
    "a close-up photo of a {obj} held in a hand.",
    "a {obj} on a table.",
)
EXAMPLES_PER_TARGET = 3  # a category prompt is ensembled over a few of its objects too


def gerund(verb: str) -> str:
    """ "pick and place" -> "picking and placing", "type on" -> "typing on"."""
    from lemminflect import getInflection

    words = verb.split()
    out = []
    for i, word in enumerate(words):
        if i == 0 or words[i - 1] == "and":
            forms = getInflection(word, tag="VBG")
            out.append(forms[0] if forms else f"{word}ing")
        else:
            out.append(word)
    return " ".join(out)


def _target_phrases(task: Task, vocab: Vocabulary) -> list[str]:
    if task.target == ANY_OBJECT:
        return ["an object", "something"]
    if task.target_kind == "category":
        examples = [
            o.name for o in vocab.objects.values() if o.parent == task.target and o.name != task.target
        ]
    elif task.target_kind == "group":
        examples = [o.name for o in vocab.objects.values() if o.grandparent == task.target]
    else:
        examples = list(vocab.objects[task.target].synonyms)
    return [f"the {task.target}", *(f"a {e}" for e in examples[:EXAMPLES_PER_TARGET])]


def task_prompts(task: Task, vocab: Vocabulary, templates: Sequence[str] = TASK_TEMPLATES) -> list[str]:
    ing = gerund(task.verb)
    return [t.format(ing=ing, obj=obj) for obj in _target_phrases(task, vocab) for t in templates]


def ensemble(
    embedder: TextEmbedder, prompt_lists: Sequence[Sequence[str]], cache: str | None = None
) -> np.ndarray:
    """One unit vector per entry: the normalised mean of its prompts' embeddings (CLIP's ensembling)."""
    flat = [p for prompts in prompt_lists for p in prompts]
    vectors = cached_encode(embedder, flat, cache)
    out = np.zeros((len(prompt_lists), vectors.shape[1] if len(flat) else 0), np.float32)
    offset = 0
    for i, prompts in enumerate(prompt_lists):
        mean = vectors[offset : offset + len(prompts)].mean(axis=0)
        out[i] = mean / max(float(np.linalg.norm(mean)), 1e-12)
        offset += len(prompts)
    return out


@dataclass
class ZeroShotLabels:
    """Top-k tasks, scenes and objects of one image embedding, with softmax probabilities."""

    tasks: list[str] = field(default_factory=list)
    task_scores: list[float] = field(default_factory=list)
    scenes: list[str] = field(default_factory=list)
    scene_scores: list[float] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    object_scores: list[float] = field(default_factory=list)


class ZeroShotLabeler:
    """Scores CLIP image embeddings against prompt-ensembled vocabulary text embeddings."""

    def __init__(
        self,
        vocab: Vocabulary,
        embedder: TextEmbedder,
        top_k: int = 5,
        cache: str | None = None,
        logit_scale: float | None = None,
    ):
        self.vocab = vocab
        self.embedder = embedder
        self.top_k = top_k
        self.logit_scale = float(logit_scale or getattr(embedder, "logit_scale", 100.0))
        self.tasks = vocab.tasks
        self._verbs = {t.name: t.verb for t in self.tasks}
        self.scene_names = list(vocab.scenes)
        self.object_names = list(vocab.objects)
        self.task_vectors = ensemble(embedder, [task_prompts(t, vocab) for t in self.tasks], cache)
        self.scene_vectors = ensemble(
            embedder, [[t.format(scene=s) for t in SCENE_TEMPLATES] for s in self.scene_names], cache
        )
        self.object_vectors = ensemble(
            embedder, [[t.format(obj=o) for t in OBJECT_TEMPLATES] for o in self.object_names], cache
        )

    @property
    def dim(self) -> int:
        return int(self.task_vectors.shape[1])

    def _top(
        self, image: np.ndarray, text: np.ndarray, names: Sequence[str]
    ) -> tuple[np.ndarray, np.ndarray, list]:
        logits = self.logit_scale * (image @ text.T)
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        k = min(self.top_k, probs.shape[1])
        top = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        return top, np.take_along_axis(probs, top, axis=1), list(names)

    def label(self, vectors: np.ndarray) -> list[ZeroShotLabels]:
        """Labels for image embeddings (N, D); they are re-normalised (float16 storage rounds them)."""
        image = np.asarray(vectors, dtype=np.float32)
        if image.ndim != 2 or image.shape[1] != self.dim:
            raise ValueError(
                f"image embeddings have shape {image.shape}; the text tower has dimension {self.dim}"
            )
        image = image / np.maximum(np.linalg.norm(image, axis=1, keepdims=True), 1e-12)
        task_names = [t.name for t in self.tasks]
        results = [ZeroShotLabels() for _ in range(len(image))]
        for attr, text, names in (
            ("tasks", self.task_vectors, task_names),
            ("scenes", self.scene_vectors, self.scene_names),
            ("objects", self.object_vectors, self.object_names),
        ):
            top, probs, names = self._top(image, text, names)
            score_attr = {"tasks": "task_scores", "scenes": "scene_scores", "objects": "object_scores"}[attr]
            for i, result in enumerate(results):
                setattr(result, attr, [names[j] for j in top[i]])
                setattr(result, score_attr, [round(float(p), 4) for p in probs[i]])
        return results

    def verb_of(self, task_name: str) -> str | None:
        return self._verbs.get(task_name)
