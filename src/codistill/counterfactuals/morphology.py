"""English surface forms for word edits: splitting punctuation off a word, keeping capitalisation,
inflecting a base form (-s/-ed/-ing/-er/-est/-ly), recognising inflected dictionary words, antonyms in the
same inflection, and ``a``/``an`` agreement."""

from __future__ import annotations

import re

from codistill.counterfactuals.wordnet import Lexicon

# suffix -> (part of speech of the base form, possible endings of the base form); tried in order
_SUFFIXES = [("iest", "a", ["y"]), ("ier", "a", ["y"]), ("ied", "v", ["y"]), ("ily", "a", ["y"]),
             ("bly", "a", ["ble"]), ("ing", "v", ["", "e"]), ("est", "a", ["", "e"]), ("ed", "v", ["", "e"]),
             ("er", "a", ["", "e"]), ("es", "v", ["", "e"]), ("ly", "a", [""]), ("s", "v", [""])]

_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)


def _split(word: str) -> tuple[str, str, str]:
    m = _CORE.match(word)
    return m.group(1), m.group(2), m.group(3)


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
