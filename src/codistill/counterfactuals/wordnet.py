"""Antonym lexicons: the :class:`Lexicon` protocol the edit search reads, a hand-made :class:`DictLexicon`
and :class:`WordNetLexicon`, a parser of WordNet 3.0's database files."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from codistill.errors import ConfigError


class Lexicon(Protocol):
    def antonyms(self, word: str, pos: str | None = None) -> list[str]:
        """Antonyms of a lower-case base form; ``pos`` one of ``a`` (adjective), ``r`` (adverb), ``v``
        (verb) or ``None`` for any (may be empty)."""

    def is_adjective(self, word: str) -> bool:
        """Whether a lower-case word can be an adjective (a place where a substitute adjective fits)."""

    def common_adjectives(self) -> list[str]:
        """Frequent single-word adjectives: the pool that substitutes are drawn from."""

    def is_lemma(self, word: str) -> bool:
        """Whether a lower-case word is a dictionary word (base form): proposals that are not (a language
        model's word fragments, ``omin``) are dropped."""


@dataclass
class DictLexicon:
    """Antonyms from a mapping (made symmetric, any part of speech): for tests and user-supplied lists
    (``--lexicon FILE.json``)."""

    pairs: dict[str, list[str]]
    _table: dict[str, list[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        for word, ants in self.pairs.items():
            for ant in ([ants] if isinstance(ants, str) else ants):
                self._table.setdefault(word.lower(), []).append(ant.lower())
                self._table.setdefault(ant.lower(), []).append(word.lower())

    def antonyms(self, word: str, pos: str | None = None) -> list[str]:
        return list(dict.fromkeys(self._table.get(word, [])))

    def is_adjective(self, word: str) -> bool:
        return word in self._table

    def common_adjectives(self) -> list[str]:
        return sorted(self._table)

    def is_lemma(self, word: str) -> bool:
        return True  # a hand-made list names antonyms, not a vocabulary

    @classmethod
    def from_json(cls, path: str | Path) -> "DictLexicon":
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"--lexicon {path}: cannot read a JSON object of word -> antonyms ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--lexicon {path}: expected a JSON object of word -> [antonyms]")
        return cls(data)


WORDNET_DIRS = ("/usr/share/wordnet", "/usr/local/share/wordnet", "~/nltk_data/corpora/wordnet",
                "/usr/share/nltk_data/corpora/wordnet")
_POS_FILES = {"a": "adj", "r": "adv", "v": "verb"}


class WordNetLexicon:
    """Antonyms of adjectives, adverbs and verbs read from WordNet 3.0's database files (``index.adj``,
    ``data.adj``, ...), e.g. Debian's ``wordnet-base`` package. For each word its senses are visited in
    WordNet's frequency order; a sense contributes its direct antonyms (``!`` pointers) and, for a satellite
    adjective, the antonyms of its head (superb -> good -> bad). Single words only. Common adjectives are
    the polar ones (a direct antonym: good/bad, interesting/uninteresting) with at least one sense tagged
    in WordNet's sense-tagged corpus. A past participle
    (``paid``, ``raised``: in ``verb.exc`` or a verb + ``-ed``) does not count as an adjective position."""

    def __init__(self, folder: str | Path | None = None, max_per_word: int = 3) -> None:
        self.folder = Path(folder) if folder else find_wordnet()
        self.max_per_word = max_per_word
        self._adjectives: set[str] = set()
        self._common: list[str] = []
        self._verbs: set[str] = set()
        self._polar: set[str] = set()  # adjectives with a direct antonym (good/bad, interesting/boring...)
        self._tagged: dict[tuple[str, str], int] = {}  # (pos, word) -> senses tagged in the corpus
        self._lemmas: set[str] = set()  # single-word lemmas of every part of speech
        self._tables = {pos: self._load(pos, name) for pos, name in _POS_FILES.items()}
        nouns = self.folder / "index.noun"
        for line in nouns.read_text(encoding="latin-1").splitlines() if nouns.is_file() else []:
            fields = line.split()
            if line.startswith(" "):
                continue
            if "_" not in fields[0]:
                self._lemmas.add(fields[0])
            if fields[0] in self._adjectives:
                self._tagged[("n", fields[0])] = int(fields[-int(fields[2]) - 1])
        exc = self.folder / "verb.exc"
        lines = exc.read_text(encoding="latin-1").splitlines() if exc.is_file() else []
        self._irregular = {line.split()[0] for line in lines if line.strip()}

    def is_adjective(self, word: str) -> bool:
        return (word in self._adjectives and not self._is_past_participle(word)
                and self._tagged.get(("a", word), 0) >= max(self._tagged.get(("n", word), 0),
                                                           self._tagged.get(("v", word), 0)))

    def is_lemma(self, word: str) -> bool:
        return word in self._lemmas

    def common_adjectives(self) -> list[str]:
        # polar ones only (a direct antonym), so that topical adjectives a teacher happens to like
        # ("scholastic", "pedagogical") are never proposed
        return [w for w in self._common if w in self._polar and not self._is_past_participle(w)]

    def _is_past_participle(self, word: str) -> bool:
        if word in self._irregular:
            return True
        if not word.endswith("ed") or len(word) < 5:
            return False
        stem = word[:-2]
        return (stem in self._verbs or stem + "e" in self._verbs or word[:-1] in self._verbs
                or (len(stem) > 2 and stem[-1] == stem[-2] and stem[:-1] in self._verbs)
                or (stem.endswith("i") and stem[:-1] + "y" in self._verbs))

    def antonyms(self, word: str, pos: str | None = None) -> list[str]:
        if pos is not None:
            return self._tables[pos].get(word, [])
        merged: list[str] = []
        for table in self._tables.values():
            merged.extend(a for a in table.get(word, []) if a not in merged)
        return merged

    def _load(self, pos: str, name: str) -> dict[str, list[str]]:
        # synset offset -> (type, lemmas, antonym pointers (source word no., target offset, target word no.),
        #                   head offsets of a satellite)
        synsets: dict[int, tuple[str, list[str], list[tuple[int, int, int]], list[int]]] = {}
        with open(self.folder / f"data.{name}", encoding="latin-1") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                fields = line.split(" | ")[0].split()
                n_words = int(fields[3], 16)
                lemmas = [re.sub(r"\(.*\)$", "", w).lower() for w in fields[4:4 + 2 * n_words:2]]
                at = 4 + 2 * n_words
                antonyms, heads = [], []
                for j in range(int(fields[at])):
                    sym, off, _, st = fields[at + 1 + 4 * j: at + 5 + 4 * j]
                    if sym == "!":
                        antonyms.append((int(st[:2], 16), int(off), int(st[2:], 16)))
                    elif sym == "&" and fields[2] == "s":
                        heads.append(int(off))
                synsets[int(fields[0])] = (fields[2], lemmas, antonyms, heads)

        def direct(offset: int, lemma: str | None) -> list[str]:
            _, lemmas, antonyms, _ = synsets[offset]
            out = []
            for src, target, tgt in antonyms:
                if target in synsets and (lemma is None or src == 0 or lemmas[src - 1] == lemma):
                    t_lemmas = synsets[target][1]
                    out.append(t_lemmas[tgt - 1] if tgt else t_lemmas[0])
            return out

        table: dict[str, list[str]] = {}
        with open(self.folder / f"index.{name}", encoding="latin-1") as fh:
            for line in fh:
                if line.startswith(" "):
                    continue
                fields = line.split()
                lemma, n_synsets = fields[0].lower(), int(fields[2])
                if "_" in lemma:
                    continue
                self._lemmas.add(lemma)
                self._tagged[(pos, lemma)] = int(fields[-n_synsets - 1])
                if pos == "v":
                    self._verbs.add(lemma)
                if pos == "a":
                    self._adjectives.add(lemma)
                    if lemma.isalpha() and int(fields[-n_synsets - 1]) > 0:
                        self._common.append(lemma)
                found: list[str] = []
                for offset in (int(o) for o in fields[-n_synsets:]):
                    if offset not in synsets:
                        continue
                    ants = direct(offset, lemma)
                    if pos == "a" and any("_" not in a and a != lemma for a in ants):
                        self._polar.add(lemma)
                    for head in synsets[offset][3]:
                        if head in synsets:
                            ants += direct(head, None)
                    found.extend(a for a in ants if "_" not in a and a != lemma and a not in found)
                if found:
                    table[lemma] = found[: self.max_per_word]
        return table


def find_wordnet() -> Path:
    """The first folder holding WordNet's ``data.adj`` (``$CODISTILL_WORDNET`` first)."""
    candidates = [os.environ.get("CODISTILL_WORDNET", "")] + list(WORDNET_DIRS)
    for c in candidates:
        if c and (Path(c).expanduser() / "data.adj").is_file():
            return Path(c).expanduser()
    raise ConfigError(
        "WordNet files not found (looked in " + ", ".join(WORDNET_DIRS) + "): install Debian's wordnet-base "
        "(apt-get install wordnet-base), set CODISTILL_WORDNET, or pass --lexicon FILE.json"
    )
