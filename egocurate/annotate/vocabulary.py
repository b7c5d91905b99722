"""The label vocabulary: manipulation verbs, objects, tasks and scenes, loaded from YAML data files.

The default taxonomy ships in ``annotate/vocab/default/`` (household, kitchen, workshop, retail,
office, lab, outdoor, ...). Users extend it with their own files, or replace it. A file may hold any
of the sections ``verbs``, ``generic``, ``objects``, ``tasks`` and ``scenes``, in the formats the
default files document. Entries are written ``"canonical | synonym | synonym"``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

DEFAULT_DIR = Path(__file__).resolve().parent / "vocab" / "default"
ANY_OBJECT = "object"  # the task target that matches any object

# How specific a task target is; the more specific one wins a tie (see tasks.yaml).
TARGET_KINDS = ("object", "category", "group", "any")


@dataclass(frozen=True)
class Term:
    """A canonical name with the words and phrases that mean it, and its parent in the taxonomy."""

    name: str
    synonyms: tuple[str, ...]
    parent: str = ""  # object -> category, scene -> domain
    grandparent: str = ""  # object -> group

    @property
    def phrases(self) -> tuple[str, ...]:
        return (self.name, *self.synonyms)


@dataclass(frozen=True)
class Task:
    """A canonical task: a verb applied to a target (an object, category, group or any object)."""

    verb: str
    target: str
    target_kind: str

    @property
    def name(self) -> str:
        return f"{self.verb} {self.target}"


def split_entry(entry: str) -> tuple[str, tuple[str, ...]]:
    """``"cup | mug"`` -> ``("cup", ("mug",))``; whitespace and case are normalised."""
    parts = [" ".join(p.split()).lower() for p in str(entry).split("|")]
    parts = [p for p in parts if p]
    if not parts:
        raise ValueError(f"empty vocabulary entry {entry!r}")
    return parts[0], tuple(dict.fromkeys(parts[1:]))


@dataclass
class Vocabulary:
    """Verbs, objects (with category and group), scenes (with domain) and tasks (verb x target)."""

    verbs: dict[str, Term] = field(default_factory=dict)
    generic_verbs: set[str] = field(default_factory=set)
    objects: dict[str, Term] = field(default_factory=dict)
    categories: dict[str, str] = field(default_factory=dict)  # category -> group
    scenes: dict[str, Term] = field(default_factory=dict)
    task_targets: dict[str, list[str]] = field(default_factory=dict)  # verb -> targets, as written
    sources: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, paths: Sequence[str | os.PathLike[str]] = (), replace: bool = False) -> Vocabulary:
        """The default vocabulary extended by `paths` (files or folders of YAML), or only `paths`."""
        vocab = cls()
        files: list[Path] = [] if replace else sorted(DEFAULT_DIR.glob("*.yaml"))
        for path in paths:
            path = Path(path)
            if path.is_dir():
                files.extend(sorted([*path.glob("*.yaml"), *path.glob("*.yml")]))
            elif path.exists():
                files.append(path)
            else:
                raise FileNotFoundError(f"vocabulary file not found: {path}")
        if not files:
            raise ValueError("no vocabulary files: give at least one YAML file or folder")
        for file in files:
            vocab.merge(yaml.safe_load(file.read_text()) or {}, source=str(file))
        vocab.validate()
        return vocab

    def merge(self, data: dict, source: str = "<dict>") -> None:
        """Add the sections of one vocabulary file (new entries, or synonyms of existing ones)."""
        unknown = set(data) - {"verbs", "generic", "objects", "tasks", "scenes"}
        if unknown:
            raise ValueError(
                f"{source}: unknown vocabulary sections {sorted(unknown)}; "
                "allowed: verbs, generic, objects, tasks, scenes"
            )
        for verb, synonyms in (data.get("verbs") or {}).items():
            self._add(self.verbs, f"{verb} | " + " | ".join(synonyms or []))
        self.generic_verbs.update(" ".join(str(v).split()).lower() for v in data.get("generic") or [])
        for group, categories in (data.get("objects") or {}).items():
            for category, items in (categories or {}).items():
                self.categories.setdefault(str(category).lower(), str(group).lower())
                for item in items or []:
                    self._add(
                        self.objects, item, parent=str(category).lower(), grandparent=str(group).lower()
                    )
        for domain, items in (data.get("scenes") or {}).items():
            for item in items or []:
                self._add(self.scenes, item, parent=str(domain).lower())
        for verb, targets in (data.get("tasks") or {}).items():
            verb = " ".join(str(verb).split()).lower()
            known = self.task_targets.setdefault(verb, [])
            known.extend(
                t for t in (" ".join(str(x).split()).lower() for x in targets or []) if t not in known
            )
        self.sources.append(source)

    @staticmethod
    def _add(terms: dict[str, Term], entry: str, parent: str = "", grandparent: str = "") -> None:
        name, synonyms = split_entry(entry)
        if name in terms:  # extending an entry: keep its place in the taxonomy, add synonyms
            old = terms[name]
            terms[name] = Term(
                name, tuple(dict.fromkeys(old.synonyms + synonyms)), old.parent, old.grandparent
            )
        else:
            terms[name] = Term(name, synonyms, parent, grandparent)

    def validate(self) -> None:
        """Every task must name a known verb and a known target."""
        problems = []
        for verb, targets in self.task_targets.items():
            if verb not in self.verbs:
                problems.append(f"task verb {verb!r} is not in verbs")
            for target in targets:
                if self.resolve_target(target) is None:
                    problems.append(
                        f"task target {target!r} (verb {verb!r}) is not an object, category or group"
                    )
        unknown_generic = self.generic_verbs - set(self.verbs)
        if unknown_generic:
            problems.append(f"generic verbs {sorted(unknown_generic)} are not in verbs")
        if problems:
            raise ValueError("invalid vocabulary: " + "; ".join(problems))

    # ------------------------------------------------------------------ lookups
    @property
    def groups(self) -> set[str]:
        return set(self.categories.values())

    def object_by_phrase(self) -> dict[str, str]:
        """Every phrase (canonical and synonyms) -> canonical object; the first definition wins."""
        return _phrase_map(self.objects.values())

    def resolve_target(self, target: str) -> tuple[str, str] | None:
        """(canonical target, kind) for a task target: an object (or synonym), category, group or any."""
        if target == ANY_OBJECT:
            return ANY_OBJECT, "any"
        # A name that is both a category and one of its objects ("vegetable") means the category.
        if target in self.categories:
            return target, "category"
        if target in self.groups:
            return target, "group"
        if target in self.objects:
            return target, "object"
        canonical = self.object_by_phrase().get(target)
        return (canonical, "object") if canonical else None

    @property
    def tasks(self) -> list[Task]:
        """Every task, in file order, without duplicates."""
        out: dict[str, Task] = {}
        for verb, targets in self.task_targets.items():
            for target in targets:
                resolved = self.resolve_target(target)
                if resolved is not None:
                    task = Task(verb, resolved[0], resolved[1])
                    out.setdefault(task.name, task)
        return list(out.values())

    def fingerprint(self) -> str:
        """A short hash of the whole vocabulary (caches and label rows record it)."""
        payload = {
            "verbs": {k: v.synonyms for k, v in sorted(self.verbs.items())},
            "generic": sorted(self.generic_verbs),
            "objects": {k: (v.synonyms, v.parent, v.grandparent) for k, v in sorted(self.objects.items())},
            "scenes": {k: (v.synonyms, v.parent) for k, v in sorted(self.scenes.items())},
            "tasks": [t.name for t in self.tasks],
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def summary(self) -> dict[str, int]:
        return {
            "verbs": len(self.verbs),
            "objects": len(self.objects),
            "categories": len(self.categories),
            "scenes": len(self.scenes),
            "tasks": len(self.tasks),
        }


def _phrase_map(terms: Iterable[Term]) -> dict[str, str]:
    out: dict[str, str] = {}
    for term in terms:
        for phrase in term.phrases:
            out.setdefault(phrase, term.name)
    return out
