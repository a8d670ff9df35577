"""Offline counterfactuals: a teacher-guided beam search over word-level edits (no LLM).

Edits, in the order a reader most readily accepts them:
  1. antonym substitution (WordNet, keeping the word's inflection and capitalisation: loved -> hated),
  2. swapping an adjective for one of the adjectives the teacher itself most associates with the target
     label (``a tense thriller`` -> ``a dull thriller``): the lexicon's common polar adjectives are scored
     once, each word alone, and the ``substitutes`` best per label are tried at the important adjectives
     (never inside @mentions, #hashtags, numbers or links),
  3. negation: insert ``not`` after an auxiliary (``is`` -> ``is not``) or remove one (``not``, ``never``,
     ``n't``, ``isn't`` -> ``is``); never next to another negation and at most one per candidate,
  4. deleting one of the words whose removal most lowers the teacher's probability of the current label
     (at most one deletion per candidate).
With a small causal LM (``lm``, e.g. SmolLM2-135M-Instruct), two more things happen:
  5. in-context substitution: at the important content words (nouns and verbs too, not only adjectives)
     the LM proposes the words that fit the left context after a prompt naming the target label, ranked
     contrastively against the current label (:meth:`~.lm.CausalLM.propose_words`); only dictionary words,
  6. fluency decides: among the flipping candidates of the first depth that flips, the ``fluency_candidates``
     best by edit kind and target probability are read by the LM and the one with the lowest perplexity
     relative to the original wins.
Emoticons swap polarity (``:)`` <-> ``:(``, ``<3`` <-> ``</3``) as antonyms do.
Function words (articles, prepositions, pronouns) are neither substituted nor deleted; substitutions and
deletions only touch the ``top_positions`` words whose removal most lowers the current label.

The search expands every beam state by one more edit at a word not yet edited, scores all children of all
originals in one batched teacher call per depth, and stops for an original at the first depth where a
child flips the teacher: the result has the fewest edits found, ties broken by edit kind, then by the
teacher's probability of the target. Related work: MiCE (Ross et al. 2021), Polyjuice (Wu et al. 2021),
TextAttack's word-substitution searches.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol, Sequence

from codistill.counterfactuals.base import (
    NO_EDIT_FOUND,
    Attempt,
    CFRequest,
    CFResult,
    CounterfactualGenerator,
)
from codistill.counterfactuals.verify import is_flip
from codistill.errors import ConfigError

NEGATIONS = {"not", "never", "no", "n't", "nothing", "none", "nobody", "neither", "nor", "cannot"}
AUXILIARIES = {"is", "was", "are", "were", "am", "be", "been", "do", "does", "did", "has", "have", "had", "can",
               "could", "will", "would", "should", "must", "may", "might", "'s", "'re", "'m"}
# Function words: never replaced by an "antonym" (WordNet has under -> dominant) nor deleted.
STOPWORDS = {"a", "an", "the", "of", "to", "in", "on", "at", "by", "for", "with", "from", "into", "onto", "over",
             "under", "about", "above", "below", "up", "down", "out", "off", "through", "and", "or", "but", "if",
             "as", "than", "then", "so", "that", "this", "these", "those", "it", "its", "i", "me", "my", "we", "us",
             "our", "you", "your", "he", "him", "his", "she", "her", "they", "them", "their", "who", "whom",
             "which", "what", "when", "where", "why", "how", "other", "some", "any", "all", "each", "own", "same",
             "such", "there", "here", "just", "also", "too", "very", "'s", "'re", "'m", "'ve", "'ll", "'d"}
# Degree and quantity words that WordNet lists as adjectives but that a substitute adjective cannot replace.
QUANTIFIERS = {"more", "most", "less", "least", "much", "many", "few", "fewer", "enough", "only", "just", "like",
               "unlike", "same", "own", "other", "such", "certain", "several", "whole", "entire", "single",
               "first", "last", "next"}
CONTRACTIONS = {"can't": "can", "won't": "will", "shan't": "shall", "ain't": "is", "cannot": "can"}
EDIT_COST = {"antonym": 0, "substitute": 1, "lm": 1, "negation": 1, "delete": 2}
# emoticons and emoji swapped for their opposite (both directions)
EMOTICONS = {":)": ":(", ":-)": ":-(", ":d": ":(", "=)": "=(", ";)": ":(", "<3": "</3", ":]": ":[",
             "\U0001F60A": "\U0001F61E", "\U0001F600": "\U0001F620", "\U0001F60D": "\U0001F612",
             "\U0001F642": "\U0001F641", "\U0001F44D": "\U0001F44E", "\u2764\ufe0f": "\U0001F494",
             "\u2764": "\U0001F494"}
EMOTICONS.update({b: a for a, b in list(EMOTICONS.items()) if b not in EMOTICONS})
# words a language model proposes that carry no content of their own (besides STOPWORDS and AUXILIARIES)
FUNCTION_WORDS = {"because", "while", "although", "though", "since", "until", "unless", "whether", "would",
                  "should", "could", "will", "can", "might", "must", "shall", "doesn", "didn", "isn", "wasn",
                  "don", "aren", "weren", "hasn", "haven", "won", "wouldn", "couldn", "shouldn", "one", "ones",
                  "something", "anything", "everything", "someone", "anyone", "everyone", "itself", "himself",
                  "herself", "themselves", "yourself", "myself", "ourselves", "both", "either", "another"}

# suffix -> (part of speech of the base form, possible endings of the base form); tried in order
_SUFFIXES = [("iest", "a", ["y"]), ("ier", "a", ["y"]), ("ied", "v", ["y"]), ("ily", "a", ["y"]),
             ("bly", "a", ["ble"]), ("ing", "v", ["", "e"]), ("est", "a", ["", "e"]), ("ed", "v", ["", "e"]),
             ("er", "a", ["", "e"]), ("es", "v", ["", "e"]), ("ly", "a", [""]), ("s", "v", [""])]


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


def _match_case(template: str, word: str) -> str:
    if template.isupper() and len(template) > 1:
        return word.upper()
    if template[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def _inflect(base: str, suffix: str) -> str:
    """Put ``suffix`` (as removed from the original word) on another base form, with simple spelling rules."""
    vowels = "aeiou"
    if suffix in ("ing",):
        return (base[:-1] if base.endswith("e") and not base.endswith("ee") else base) + "ing"
    if suffix in ("ed", "ied"):
        if base.endswith("e"):
            return base + "d"
        if base.endswith("y") and len(base) > 1 and base[-2] not in vowels:
            return base[:-1] + "ied"
        return base + "ed"
    if suffix in ("er", "ier", "est", "iest"):
        tail = "er" if suffix in ("er", "ier") else "est"
        if base.endswith("e"):
            return base + tail[1:]
        if base.endswith("y") and len(base) > 1 and base[-2] not in vowels:
            return base[:-1] + "i" + tail
        return base + tail
    if suffix in ("s", "es"):
        if base.endswith(("s", "x", "z", "ch", "sh")):
            return base + "es"
        if base.endswith("y") and len(base) > 1 and base[-2] not in vowels:
            return base[:-1] + "ies"
        return base + "s"
    if suffix in ("ly", "ily", "bly"):
        if base.endswith("ble"):
            return base[:-1] + "y"
        if base.endswith("y"):
            return base[:-1] + "ily"
        return base + "ly"
    return base


def known_word(word: str, lexicon: Lexicon) -> bool:
    """Whether lower-case ``word`` is a dictionary word or an inflection of one (``hated`` -> ``hate``)."""
    if lexicon.is_lemma(word):
        return True
    for suffix, _, endings in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 2:
            stem = word[: -len(suffix)]
            if any(lexicon.is_lemma(stem + e) for e in endings) or (
                    len(stem) > 2 and stem[-1] == stem[-2] and lexicon.is_lemma(stem[:-1])):
                return True
    return False


def antonym_forms(word: str, lexicon: Lexicon) -> list[str]:
    """Antonyms of ``word`` in the same inflection and capitalisation (loved -> hated, Boring -> Interesting):
    the word itself first, then its base forms by suffix rules (-s/-ed/-ing on verbs, -er/-est/-ly on
    adjectives)."""
    low = word.lower()
    found = lexicon.antonyms(low)
    if found:
        return [_match_case(word, a) for a in found]
    for suffix, pos, endings in _SUFFIXES:
        if low.endswith(suffix) and len(low) - len(suffix) >= 2:
            stem = low[: -len(suffix)]
            for ending in endings:
                for base in (stem + ending, stem[:-1] if len(stem) > 2 and stem[-1] == stem[-2] else None):
                    ants = lexicon.antonyms(base, pos) if base else []
                    if ants:
                        return [_match_case(word, _inflect(a, suffix)) for a in ants]
    return []


# -- the search ---------------------------------------------------------------------------------------

_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


@dataclass(frozen=True)
class _State:
    slots: tuple[str, ...]            # one slot per original word: the word, its replacement, or "" if deleted
    edited: frozenset[int]
    ops: tuple[str, ...]
    cost: int
    negations: int
    deletions: int = 0

    def text(self) -> str:
        slots = list(self.slots)
        # an article right before an edited (or deleted) slot agrees with the word now after it
        # ("a great" -> "an awful"); only the few edited positions are looked at, since the search calls
        # this for every candidate
        for j in self.edited:
            i = next((b for b in range(j - 1, -1, -1) if slots[b]), None)
            if i is not None and _split(slots[i])[1].lower() in ("a", "an"):
                nxt = next((n for n in range(i + 1, len(slots)) if slots[n]), None)
                if nxt is not None:
                    slots[i] = _article_for(slots[i], slots[nxt])
        return " ".join(s for s in slots if s)


_VOWEL_SOUND_EXCEPTIONS = ("hour", "honest", "honor", "honour", "heir")
_CONSONANT_SOUND_EXCEPTIONS = ("one", "once", "unique", "unit", "univers", "uniform", "unison", "use", "usu", "uti",
                               "utop", "eu", "ewe")


def _article_for(article_slot: str, next_word: str) -> str:
    """``a``/``an`` (case and punctuation kept) by the sound of ``next_word``'s first letters (a spelling
    heuristic: "an awful", "a useful", "an hour")."""
    pre, core, post = _split(article_slot)
    word = _split(next_word)[1].lower()
    if not word or not word[0].isalpha():
        return article_slot
    vowel = word[0] in "aeiou"
    if word.startswith(_VOWEL_SOUND_EXCEPTIONS):
        vowel = True
    elif word.startswith(_CONSONANT_SOUND_EXCEPTIONS):
        vowel = False
    return pre + _match_case(core, "an" if vowel else "a") + post


def _split(word: str) -> tuple[str, str, str]:
    m = _CORE.match(word)
    return m.group(1), m.group(2), m.group(3)


def _is_negation(slot: str) -> bool:
    core = _split(slot)[1].lower()
    return core in NEGATIONS or core.endswith("n't") or slot.lower().split()[-1:] == ["not"]


@dataclass
class EditSearchConfig:
    """Options of the offline edit search (see :class:`EditSearchGenerator`).

    Attributes:
        max_edits: word edits per candidate at most (the search depth).
        beam_width: states kept per original between depths.
        top_positions: words considered for deletion and substitution (the most important ones).
        substitutes: teacher-chosen polar adjectives per label tried as swaps (``0``: none).
        lexicon: a JSON file of word -> antonyms (``None``: WordNet's files).
        lm: a causal LM (folder, Hub name, or ``smollm2``, fetched on first use) that proposes in-context
            substitutions and picks the most fluent flip (``None``: the plain search).
        lm_substitutes: words the LM proposes per important position.
        lm_prompt: the prompt the LM reads before the text; ``{label}`` is the target label's name (and the
            current label's in the contrast prompt).
        fluency_candidates: flipping candidates per original whose fluency the LM compares.
        per_original: counterfactuals kept per original (at the first depth that flips, each at positions
            no other kept one edits); the first is the row's ``counterfactual``, the others its
            ``more_counterfactuals`` (CoD ``multi`` trains on all).
    """

    max_edits: int = 3
    beam_width: int = 4
    top_positions: int = 8
    substitutes: int = 8
    lexicon: str | None = None
    lm: str | None = None
    lm_substitutes: int = 6
    lm_prompt: str = "Here is a very {label} text:\n"
    fluency_candidates: int = 8
    per_original: int = 1

    def __post_init__(self) -> None:
        from codistill.config import check_types

        check_types(self, "generator")
        if self.max_edits < 1 or self.beam_width < 1 or self.top_positions < 0 or self.substitutes < 0:
            raise ConfigError("generator: max_edits and beam_width must be >= 1, top_positions and substitutes >= 0")
        if self.lm_substitutes < 0 or self.fluency_candidates < 1 or self.per_original < 1:
            raise ConfigError("generator: lm_substitutes must be >= 0, fluency_candidates and per_original >= 1")
        if "{label}" not in self.lm_prompt:
            raise ConfigError(f"generator.lm_prompt must contain '{{label}}', got {self.lm_prompt!r}")

    def build(self) -> "EditSearchGenerator":
        from codistill.counterfactuals.lm import CausalLM

        lexicon = DictLexicon.from_json(self.lexicon) if self.lexicon else None
        return EditSearchGenerator(lexicon, max_edits=self.max_edits, beam_width=self.beam_width,
                                   top_positions=self.top_positions, substitutes=self.substitutes,
                                   lm=CausalLM.load(self.lm) if self.lm else None,
                                   lm_substitutes=self.lm_substitutes, lm_prompt=self.lm_prompt,
                                   fluency_candidates=self.fluency_candidates, per_original=self.per_original)


class EditSearchGenerator(CounterfactualGenerator):
    """Teacher-guided beam search over word edits (see the module docstring).

    Args:
        lexicon: antonym source (``None``: WordNet from :func:`find_wordnet`).
        max_edits: budget of edits per counterfactual.
        beam_width: states kept per original between depths.
        top_positions: words considered for deletion and substitution (the most important ones by
            leave-one-out).
        substitutes: adjectives per target label tried as replacements (``0`` disables substitution).
        lm: a :class:`~.lm.CausalLM` (or anything with its ``propose_words`` and ``log_perplexity``) for
            in-context substitutions and the fluency choice; ``None``: neither.
        lm_substitutes, lm_prompt, fluency_candidates, per_original: see :class:`EditSearchConfig`.
    """

    name = "edits"

    def __init__(self, lexicon: Lexicon | None = None, max_edits: int = 3, beam_width: int = 4,
                 top_positions: int = 8, substitutes: int = 8, lm=None, lm_substitutes: int = 6,
                 lm_prompt: str = "Here is a very {label} text:\n", fluency_candidates: int = 8,
                 per_original: int = 1) -> None:
        if max_edits < 1 or beam_width < 1 or top_positions < 0 or substitutes < 0:
            raise ConfigError("max_edits and beam_width must be >= 1, top_positions and substitutes >= 0")
        self.lexicon = lexicon if lexicon is not None else WordNetLexicon()
        self.max_edits = max_edits
        self.beam_width = beam_width
        self.top_positions = top_positions
        self.substitutes = substitutes
        self.lm = lm
        self.lm_substitutes = lm_substitutes
        self.lm_prompt = lm_prompt
        self.fluency_candidates = fluency_candidates
        self.per_original = per_original
        if lm is not None:
            self.name = "edits+lm"
        self._targets: tuple[int, int, list[list[str]]] | None = None

    def target_adjectives(self, verifier, num_labels: int) -> list[list[str]]:
        """Per label, the ``substitutes`` common adjectives the teacher, reading each word alone, gives the
        highest probability of that label (one batched teacher call, remembered for this verifier)."""
        if self._targets is not None and self._targets[:2] == (id(verifier), num_labels):
            return self._targets[2]
        pool = self.lexicon.common_adjectives() if self.substitutes else []
        if not pool:
            return [[] for _ in range(num_labels)]
        probs = verifier.probs(pool)
        found = [[pool[j] for j in probs[:, c].argsort(descending=True)[: self.substitutes].tolist()]
                 for c in range(num_labels)]
        self._targets = (id(verifier), num_labels, found)
        return found

    # one edit at position i of state s
    def _children(self, s: _State, i: int, important: bool, substitutes: Sequence[str] = (),
                  proposals: Sequence[str] = ()) -> Iterable[_State]:
        word = s.slots[i]
        pre, core, post = _split(word)
        if word.lower() in EMOTICONS:
            slots = list(s.slots)
            slots[i] = _match_case(word, EMOTICONS[word.lower()])
            yield _State(tuple(slots), s.edited | {i}, s.ops + (f"{word}->{slots[i]}",),
                         s.cost + EDIT_COST["antonym"], s.negations, s.deletions)
            return
        if not core:
            return
        low = core.lower()

        def child(new: str, op: str, kind: str, negation: int = 0) -> _State:
            slots = list(s.slots)
            slots[i] = new
            return _State(tuple(slots), s.edited | {i}, s.ops + (op,), s.cost + EDIT_COST[kind], s.negations + negation,
                          s.deletions + (kind == "delete"))

        plain = core.replace("-", "").replace("'", "").isalpha() and not pre.endswith(("@", "#"))
        if low not in STOPWORDS and plain:  # no swaps inside @mentions, #hashtags, numbers or links
            antonyms = antonym_forms(core, self.lexicon)
            for ant in antonyms:
                yield child(pre + ant + post, f"{core}->{ant}", "antonym")
            if important and low not in NEGATIONS and low not in QUANTIFIERS and self.lexicon.is_adjective(low):
                for sub in substitutes:
                    sub = _match_case(core, sub)
                    if sub.lower() != low and sub not in antonyms:
                        yield child(pre + sub + post, f"{core}->{sub}", "substitute")
            for sub in proposals:
                sub = _match_case(core, sub)
                if sub.lower() != low and sub not in antonyms:
                    yield child(pre + sub + post, f"{core}->{sub} (lm)", "lm")
        neighbours = [s.slots[j] for j in (i - 1, i + 1) if 0 <= j < len(s.slots) and s.slots[j]]
        if s.negations == 0:
            if low in AUXILIARIES and not any(_is_negation(n) for n in neighbours):
                yield child(f"{pre}{core} not{post}", f"+not after {core}", "negation", 1)
            if low in ("not", "never", "n't", "cannot") or low in CONTRACTIONS:
                repl = CONTRACTIONS.get(low, "")
                yield child(pre + _match_case(core, repl) + post if repl else "", f"-{core}", "negation", 1)
            elif low.endswith("n't") and len(low) > 3:
                yield child(pre + core[:-3] + post, f"{core}->{core[:-3]}", "negation", 1)
        if important and s.deletions == 0 and low not in NEGATIONS and low not in STOPWORDS:
            yield child("", f"-{core}", "delete")

    def generate(self, requests: Sequence[CFRequest], verifier, label_names: Sequence[str],
                 progress: bool = True) -> list[CFResult]:
        from tqdm.auto import tqdm

        requests = list(requests)
        before = verifier.probs([r.text for r in requests]) if requests else None
        results = [CFResult(r, self.name, [round(x, 6) for x in before[i].tolist()]) for i, r in enumerate(requests)]
        originals = [_State(tuple(r.text.split()), frozenset(), (), 0, 0) for r in requests]
        # importance of each word: how much deleting it lowers the probability of the current label
        loo_texts, owners = [], []
        for qi, st in enumerate(originals):
            for i in range(len(st.slots)):
                loo_texts.append(" ".join(w for j, w in enumerate(st.slots) if j != i))
                owners.append((qi, i))
        loo = verifier.probs(loo_texts) if loo_texts else None
        importance: list[dict[int, float]] = [{} for _ in requests]
        for row, (qi, i) in enumerate(owners):
            label = requests[qi].label
            importance[qi][i] = float(before[qi][label] - loo[row][label])
        important = [set(sorted(imp, key=imp.get, reverse=True)[: self.top_positions]) for imp in importance]
        target_words = self.target_adjectives(verifier, len(label_names)) if requests else []
        proposals = [self._proposals(r, st.slots, important[qi], label_names)
                     for qi, (r, st) in enumerate(zip(requests, originals))]

        beams: dict[int, list[_State]] = {qi: [st] for qi, st in enumerate(originals)}
        best_seen: dict[int, tuple[float, _State, list[float]]] = {}
        for depth in tqdm(range(1, self.max_edits + 1), desc="edit search", disable=not progress, leave=False):
            children: list[tuple[int, _State]] = []
            for qi, states in beams.items():
                seen: set[str] = set()
                for st in states:
                    for i in range(len(st.slots)):
                        if i in st.edited:
                            continue
                        for ch in self._children(st, i, i in important[qi], target_words[requests[qi].target],
                                                 proposals[qi].get(i, ())):
                            t = ch.text()
                            if t and t not in seen and t != requests[qi].text:
                                seen.add(t)
                                children.append((qi, ch))
            if not children:
                break
            probs = verifier.probs([ch.text() for _, ch in children])
            by_request: dict[int, list[tuple[_State, list[float]]]] = {}
            for (qi, ch), p in zip(children, probs.tolist()):
                by_request.setdefault(qi, []).append((ch, p))
            next_beams: dict[int, list[_State]] = {}
            flipping: dict[int, list[_State]] = {}
            for qi, scored in by_request.items():
                target = requests[qi].target
                flips = [(ch, p) for ch, p in scored if is_flip(p, target)]
                if flips:
                    flips.sort(key=lambda cp: (cp[0].cost, -cp[1][target]))
                    flipping[qi] = [ch for ch, _ in flips]
                    continue
                scored.sort(key=lambda cp: -cp[1][target])
                top_p, top_state = scored[0][1][target], scored[0][0]
                if qi not in best_seen or top_p > best_seen[qi][0]:
                    best_seen[qi] = (top_p, top_state, scored[0][1])
                next_beams[qi] = [ch for ch, _ in scored[: self.beam_width]]
            self._record(results, self._choose(flipping), verifier)
            beams = next_beams
            if not beams:
                break
        failed = [qi for qi, res in enumerate(results) if not res.attempts]
        self._record(results, [(qi, best_seen[qi][1]) for qi in failed if qi in best_seen], verifier,
                     prefix=f"best within {self.max_edits} edits: ")
        for qi in failed:
            if not results[qi].attempts:
                results[qi].attempts.append(Attempt(None, NO_EDIT_FOUND, "no applicable edit"))
        return results

    def _proposals(self, request: CFRequest, slots: Sequence[str], important: set[int],
                   label_names: Sequence[str]) -> dict[int, list[str]]:
        """The LM's in-context substitutes at the important plain content words of one original."""
        if self.lm is None or not self.lm_substitutes:
            return {}
        positions = []
        for i in sorted(important):
            pre, core, _ = _split(slots[i])
            low = core.lower()
            if (core.isalpha() and not pre.endswith(("@", "#")) and low not in STOPWORDS and low not in AUXILIARIES
                    and low not in NEGATIONS and low not in FUNCTION_WORDS):
                positions.append(i)
        prompt = self.lm_prompt.format(label=label_names[request.target])
        contrast = self.lm_prompt.format(label=label_names[request.label])
        found = self.lm.propose_words(slots, positions, prompt, contrast, top=8 * self.lm_substitutes)
        # the prompt's own words ("positive", "text") are echoes of the prompt, not edits of the text
        echoes = {w.lower() for w in re.findall(r"[A-Za-z]+", prompt + " " + contrast + " " + " ".join(label_names))}
        keep = {}
        for i, words in found.items():
            ok = [w for w in words if w not in STOPWORDS and w not in AUXILIARIES and w not in NEGATIONS
                  and w not in FUNCTION_WORDS and w not in QUANTIFIERS and w not in echoes
                  and known_word(w, self.lexicon)]
            keep[i] = ok[: self.lm_substitutes]
        return keep

    def _choose(self, flipping: dict[int, list[_State]]) -> list[tuple[int, _State]]:
        """Per original, its first flipping candidate (with an LM: the least surprising of the first
        ``fluency_candidates``), then up to ``per_original - 1`` more that edit none of the positions the
        kept ones edit. One batched LM pass over every original's shortlist."""
        ordered = dict(flipping)
        if self.lm is not None:
            shortlist = {qi: states[: max(self.fluency_candidates, self.per_original)] for qi, states in flipping.items()}
            texts = [st.text() for states in shortlist.values() for st in states]
            scores = iter(self.lm.log_perplexity(texts)) if texts else iter(())
            for qi, states in shortlist.items():
                lp = [next(scores) for _ in states]
                ordered[qi] = [states[j] for j in sorted(range(len(states)), key=lp.__getitem__)]
        chosen = []
        for qi, states in ordered.items():
            used: set[int] = set()
            kept = 0
            for st in states:
                if kept and st.edited & used:
                    continue
                chosen.append((qi, st))
                used |= st.edited
                kept += 1
                if kept == self.per_original:
                    break
        return chosen

    @staticmethod
    def _record(results: list[CFResult], chosen: list[tuple[int, _State]], verifier, prefix: str = "") -> None:
        """Have the shared verifier judge the chosen candidates (one batched call) and record the verdicts."""
        if not chosen:
            return
        verdicts = verifier.verify([st.text() for _, st in chosen], [results[qi].request.target for qi, _ in chosen],
                                   [prefix + "; ".join(st.ops) for _, st in chosen])
        for (qi, _), verdict in zip(chosen, verdicts):
            results[qi].attempts.append(verdict)
