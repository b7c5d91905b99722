"""Lexical matching of free text against vocabulary phrases, on lemmas.

"Slicing two cucumbers" matches the verb ``slice`` and the object ``cucumber`` because every token
is compared through the set of its lemmas (lemminflect, all parts of speech), so no tagger is needed.
Phrases ("cutting board", "pick up") match as token sequences, longest first.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

_TOKEN = re.compile(r"[^\W_]+(?:['\-][^\W_]+)*", re.UNICODE)

# Words that are also common function words: they only count as a vocabulary word after one of
# these (so "you can open it" has no object "can", while "open the can" does).
_NEEDS_DETERMINER = {
    "can": {
        "a",
        "an",
        "the",
        "this",
        "that",
        "one",
        "each",
        "every",
        "of",
        "soda",
        "tin",
        "empty",
        "metal",
        "open",
        "another",
        "my",
        "your",
        "his",
        "her",
        "their",
        "our",
    }
}


@lru_cache(maxsize=200_000)
def lemmas(word: str) -> frozenset[str]:
    """The word and all its lemmas as any part of speech ("leaves" -> leaves, leaf, leave)."""
    from lemminflect import getAllLemmas, getAllLemmasOOV

    out = {word}
    for forms in getAllLemmas(word).values():
        out.update(forms)
    if len(out) == 1 and word.isalpha():
        for upos in ("NOUN", "VERB"):
            out.update(getAllLemmasOOV(word, upos).get(upos, ()))
    return frozenset(out)


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; hyphenated words and apostrophes stay inside one token."""
    return _TOKEN.findall(str(text).lower())


@dataclass(frozen=True)
class Match:
    """One vocabulary phrase found in a text: its canonical term and token span."""

    term: str
    phrase: str
    start: int
    end: int  # exclusive

    @property
    def length(self) -> int:
        return self.end - self.start


class PhraseMatcher:
    """Finds non-overlapping vocabulary phrases in token sequences, longest phrase first."""

    def __init__(self, phrases: Mapping[str, str]):
        """`phrases` maps each phrase (canonical or synonym) to its canonical term."""
        self.index: dict[str, list[tuple[tuple[frozenset[str], ...], str, str]]] = {}
        for phrase, term in phrases.items():
            words = tokenize(phrase)
            if not words:
                continue
            pattern = tuple(lemmas(w) for w in words)
            for key in pattern[0]:
                self.index.setdefault(key, []).append((pattern, phrase, term))
        for entries in self.index.values():
            entries.sort(key=lambda e: -len(e[0]))

    def find(self, tokens: list[str], blocked: Iterable[int] = ()) -> list[Match]:
        """Matches in `tokens` (skipping token positions in `blocked`), in text order."""
        token_lemmas = [lemmas(t) for t in tokens]
        blocked = set(blocked)
        candidates: list[Match] = []
        for i, lem in enumerate(token_lemmas):
            if i in blocked:
                continue
            seen: set[tuple[str, int]] = set()
            for key in lem:
                for pattern, phrase, term in self.index.get(key, ()):
                    end = i + len(pattern)
                    if end > len(tokens) or (phrase, end) in seen:
                        continue
                    if any(j in blocked for j in range(i, end)):
                        continue
                    if all(pattern[k] & token_lemmas[i + k] for k in range(len(pattern))):
                        if not _allowed(tokens, i, end):
                            continue
                        seen.add((phrase, end))
                        candidates.append(Match(term, phrase, i, end))
        # Longest first, then leftmost; keep matches that do not overlap an earlier choice.
        chosen: list[Match] = []
        taken: set[int] = set()
        for match in sorted(candidates, key=lambda m: (-m.length, m.start)):
            span = set(range(match.start, match.end))
            if span & taken:
                continue
            chosen.append(match)
            taken |= span
        return sorted(chosen, key=lambda m: m.start)


def _allowed(tokens: list[str], start: int, end: int) -> bool:
    if end - start != 1 or tokens[start] not in _NEEDS_DETERMINER:
        return True
    return start > 0 and tokens[start - 1] in _NEEDS_DETERMINER[tokens[start]]
