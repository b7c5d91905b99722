"""Map free text (a manifest's task description, a narration or a caption) to canonical labels.

Lexical matching comes first: lemmatised verbs and objects are looked up in the vocabulary, and a
task scores by how well its verb and its target match. Sentence-embedding similarity between the
text and each task, scene and object backs it up: it breaks ties and carries texts whose words
the vocabulary does not list ("making an omelette").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from egocurate.annotate.embedders import TextEmbedder, cached_encode
from egocurate.annotate.lexicon import PhraseMatcher, tokenize
from egocurate.annotate.vocabulary import ANY_OBJECT, Task, Vocabulary

# How well a found object fits a task target of each kind (an exact object fits best).
TARGET_FIT = {"object": 1.0, "category": 0.85, "group": 0.7, "any": 0.5}
NO_OBJECT_FIT = 0.3  # "any object" tasks when the text names no object at all
GENERIC_VERB_WEIGHT = 0.6  # "pick up", "hold": a specific verb in the same text wins


@dataclass
class TextLabels:
    """Labels for one text, with scores in [0, 1] and the top-k alternatives."""

    text: str
    task: str | None
    task_score: float
    verb: str | None
    scene: str | None
    scene_score: float
    objects: list[str] = field(default_factory=list)
    object_scores: list[float] = field(default_factory=list)
    task_topk: list[str] = field(default_factory=list)
    task_topk_scores: list[float] = field(default_factory=list)
    scene_topk: list[str] = field(default_factory=list)
    scene_topk_scores: list[float] = field(default_factory=list)


def task_description(task: Task, vocab: Vocabulary, examples: int = 6) -> str:
    """The text a task is embedded as: its name, verb synonyms and example objects."""
    verb_words = vocab.verbs[task.verb].synonyms[:3]
    if task.target_kind == "category":
        objects = [o.name for o in vocab.objects.values() if o.parent == task.target][:examples]
    elif task.target_kind == "group":
        objects = [o.name for o in vocab.objects.values() if o.grandparent == task.target][:examples]
    elif task.target_kind == "object":
        objects = list(vocab.objects[task.target].synonyms[:3])
    else:
        objects = []
    extra = ", ".join([*verb_words, *objects])
    return f"{task.name} ({extra})" if extra else task.name


def scene_description(name: str, vocab: Vocabulary) -> str:
    term = vocab.scenes[name]
    return f"in a {name} ({', '.join(term.synonyms[:4])})" if term.synonyms else f"in a {name}"


def object_description(name: str, vocab: Vocabulary) -> str:
    term = vocab.objects[name]
    return f"{name} ({', '.join(term.synonyms[:3])})" if term.synonyms else name


class TextLabeler:
    """Maps texts to a canonical task, scene and objects of a vocabulary (label source ``given``)."""

    def __init__(
        self,
        vocab: Vocabulary,
        embedder: TextEmbedder | None,
        lexical_weight: float = 0.6,
        top_k: int = 5,
        cache: str | None = None,
        min_scene_similarity: float = 0.3,
    ):
        self.vocab = vocab
        self.embedder = embedder
        self.lexical_weight = lexical_weight if embedder is not None else 1.0
        self.top_k = top_k
        self.min_scene_similarity = min_scene_similarity
        self.tasks = vocab.tasks
        self.scene_names = list(vocab.scenes)
        self.object_names = list(vocab.objects)
        self.verb_matcher = PhraseMatcher({p: t.name for t in vocab.verbs.values() for p in t.phrases})
        self.object_matcher = PhraseMatcher(vocab.object_by_phrase())
        self.scene_matcher = PhraseMatcher({p: t.name for t in vocab.scenes.values() for p in t.phrases})
        self._task_verbs = np.array([t.verb for t in self.tasks], dtype=object)
        if embedder is not None:
            self.task_vectors = cached_encode(
                embedder, [task_description(t, vocab) for t in self.tasks], cache
            )
            self.scene_vectors = cached_encode(
                embedder, [scene_description(s, vocab) for s in self.scene_names], cache
            )
            self.object_vectors = cached_encode(
                embedder, [object_description(o, vocab) for o in self.object_names], cache
            )

    # ------------------------------------------------------------------ lexical
    def lexical(self, text: str) -> tuple[list[str], list[str], list[str]]:
        """(verbs, objects, scenes) named in `text`, canonical, in text order.

        Objects are found first; words inside a multi-word object ("cutting board") are not verbs.
        """
        tokens = tokenize(text)
        object_matches = self.object_matcher.find(tokens)
        inside_objects = {i for m in object_matches if m.length > 1 for i in range(m.start, m.end)}
        scene_matches = self.scene_matcher.find(tokens)
        inside_scenes = {i for m in scene_matches if m.length > 1 for i in range(m.start, m.end)}
        verb_matches = self.verb_matcher.find(tokens, blocked=inside_objects | inside_scenes)
        dedup = lambda ms: list(dict.fromkeys(m.term for m in ms))  # noqa: E731
        scenes = [m.term for m in sorted(scene_matches, key=lambda m: (-m.length, m.start))]
        return dedup(verb_matches), dedup(object_matches), list(dict.fromkeys(scenes))

    def _object_fit(self, task: Task, objects: Sequence[str]) -> float:
        if not objects:
            return NO_OBJECT_FIT if task.target == ANY_OBJECT else 0.0
        best = 0.0
        for name in objects:
            term = self.vocab.objects[name]
            fit = 0.0
            if task.target_kind == "object" and name == task.target:
                fit = TARGET_FIT["object"]
            elif task.target_kind == "category" and term.parent == task.target:
                fit = TARGET_FIT["category"]
            elif task.target_kind == "group" and term.grandparent == task.target:
                fit = TARGET_FIT["group"]
            elif task.target_kind == "any":
                fit = TARGET_FIT["any"]
            best = max(best, fit)
        return best

    def lexical_task_scores(self, verbs: Sequence[str], objects: Sequence[str]) -> np.ndarray:
        """Per task, in [0, 1]: half for its verb being named, half for its target fitting an object."""
        specific = [v for v in verbs if v not in self.vocab.generic_verbs]
        scores = np.zeros(len(self.tasks), np.float32)
        for i, task in enumerate(self.tasks):
            verb_fit = 0.0
            if task.verb in verbs:
                generic = task.verb in self.vocab.generic_verbs
                verb_fit = GENERIC_VERB_WEIGHT if generic and specific else 1.0
            scores[i] = 0.5 * verb_fit + 0.5 * self._object_fit(task, objects)
        return scores

    # ------------------------------------------------------------------ labelling
    def label(self, texts: Sequence[str]) -> list[TextLabels]:
        """Labels for each text (empty or missing texts get no labels)."""
        texts = [str(t or "").strip() for t in texts]
        unique = list(dict.fromkeys(t for t in texts if t))  # clips of one video share its text
        by_text = {t: r for t, r in zip(unique, self._label_unique(unique), strict=True)}
        empty = TextLabels(text="", task=None, task_score=0.0, verb=None, scene=None, scene_score=0.0)
        return [by_text[t] if t else empty for t in texts]

    def _label_unique(self, texts: list[str]) -> list[TextLabels]:
        present = list(range(len(texts)))
        out = [
            TextLabels(text=t, task=None, task_score=0.0, verb=None, scene=None, scene_score=0.0)
            for t in texts
        ]
        if not present:
            return out
        text_vectors = (
            self.embedder.encode([texts[i] for i in present]) if self.embedder is not None else None
        )
        w = self.lexical_weight
        for row, i in enumerate(present):
            verbs, objects, scenes = self.lexical(texts[i])
            task_scores = w * self.lexical_task_scores(verbs, objects)
            scene_scores = np.zeros(len(self.scene_names), np.float32)
            for rank, scene in enumerate(scenes):
                scene_scores[self.scene_names.index(scene)] = w * (1.0 - 0.1 * rank)
            object_scores = {name: 1.0 for name in objects}
            if text_vectors is not None:
                vec = text_vectors[row]
                task_scores += (1 - w) * np.clip(self.task_vectors @ vec, 0, 1)
                scene_scores += (1 - w) * np.clip(self.scene_vectors @ vec, 0, 1)
                if not objects:  # nothing named: the closest object, if it is close
                    sims = self.object_vectors @ vec
                    best = int(np.argmax(sims))
                    if sims[best] >= 0.5:
                        object_scores[self.object_names[best]] = float(sims[best])
            result = out[i]
            top = np.argsort(-task_scores, kind="stable")[: self.top_k]
            result.task_topk = [self.tasks[j].name for j in top]
            result.task_topk_scores = [round(float(task_scores[j]), 4) for j in top]
            if task_scores[top[0]] > 0:
                result.task, result.task_score = result.task_topk[0], result.task_topk_scores[0]
                result.verb = self.tasks[top[0]].verb
            top_scenes = np.argsort(-scene_scores, kind="stable")[: self.top_k]
            result.scene_topk = [self.scene_names[j] for j in top_scenes]
            result.scene_topk_scores = [round(float(scene_scores[j]), 4) for j in top_scenes]
            # A scene the text does not name is only a guess: keep it when the text is close to it.
            guessed_ok = (
                text_vectors is not None
                and scene_scores[top_scenes[0]] >= (1 - w) * self.min_scene_similarity
            )
            if scenes or guessed_ok:
                result.scene, result.scene_score = result.scene_topk[0], result.scene_topk_scores[0]
            result.objects = list(object_scores)
            result.object_scores = [round(float(s), 4) for s in object_scores.values()]
        return out
