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
teacher's probability of the target.

With a judge (:class:`~.verify.Verifier` whose scorer is a cheap guide, e.g. a proxy of an LLM teacher), the
guide does all the scoring above and the judge sees only the children the guide says flip, in the order
they would be chosen, batched across originals: an original is done when the judge agrees. When it does
not, the original's next guide-flipping children are judged, up to the verifier's ``judge_tries`` judged
candidates per original over the whole search (the last-resort ``best within max_edits`` candidate
included); an original with tries left and no judged flip keeps searching, its children (the rejected
ones too) ranked by the guide's probability of the target.

Related work: MiCE (Ross et al. 2021), Polyjuice (Wu et al. 2021), TextAttack's word-substitution searches.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterable, Sequence

from codistill.config import check_types
from codistill.counterfactuals.base import (
    NO_EDIT_FOUND,
    TOO_LONG,
    Attempt,
    CFRequest,
    CFResult,
    CounterfactualGenerator,
)
from codistill.counterfactuals.morphology import _article_for, _match_case, _split, antonym_forms, known_word
from codistill.counterfactuals.verify import is_flip
from codistill.counterfactuals.wordlists import (
    AUXILIARIES,
    CONTRACTIONS,
    EMOTICONS,
    FUNCTION_WORDS,
    NEGATIONS,
    QUANTIFIERS,
    STOPWORDS,
)
from codistill.counterfactuals.wordnet import DictLexicon, Lexicon, WordNetLexicon
from codistill.errors import ConfigError

EDIT_COST = {"antonym": 0, "substitute": 1, "lm": 1, "negation": 1, "delete": 2}


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
        max_words: originals longer than this many words are not searched (their reason is ``too_long``):
            the search scores one copy of the text per word and per candidate edit, so a long document would
            take hours and gigabytes; the teacher reads only its first ``max_length`` tokens anyway.
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
    max_words: int = 256

    def __post_init__(self) -> None:
        check_types(self, "generator")
        if self.max_words < 1:
            raise ConfigError(f"generator.max_words must be >= 1, got {self.max_words}")
        if self.max_edits < 1 or self.beam_width < 1 or self.top_positions < 0 or self.substitutes < 0:
            raise ConfigError("generator: max_edits and beam_width must be >= 1, top_positions and substitutes >= 0")
        if self.lm_substitutes < 0 or self.fluency_candidates < 1 or self.per_original < 1:
            raise ConfigError("generator: lm_substitutes must be >= 0, fluency_candidates and per_original >= 1")
        if "{label}" not in self.lm_prompt:
            raise ConfigError(f"generator.lm_prompt must contain '{{label}}', got {self.lm_prompt!r}")

    def build(self) -> "EditSearchGenerator":
        from codistill.counterfactuals.lm import CausalLM

        return EditSearchGenerator(self, DictLexicon.from_json(self.lexicon) if self.lexicon else None,
                                   CausalLM.load(self.lm) if self.lm else None)


class EditSearchGenerator(CounterfactualGenerator):
    """Teacher-guided beam search over word edits (see the module docstring).

    Args:
        cfg: the search's options (validated by :class:`EditSearchConfig`); its ``lexicon`` and ``lm`` name
            what :meth:`EditSearchConfig.build` loads, the objects themselves are the next two arguments.
        lexicon: antonym source (``None``: WordNet from :func:`~.wordnet.find_wordnet`).
        lm: a :class:`~.lm.CausalLM` (or anything with its ``propose_words`` and ``log_perplexity``) for
            in-context substitutions and the fluency choice; ``None``: neither.
    """

    name = "edits"

    def __init__(self, cfg: EditSearchConfig, lexicon: Lexicon | None = None, lm=None) -> None:
        self.cfg = cfg
        self.lexicon = lexicon if lexicon is not None else WordNetLexicon()
        self.lm = lm
        if lm is not None:
            self.name = "edits+lm"
        self._targets: tuple[int, int, list[list[str]]] | None = None

    def target_adjectives(self, verifier, num_labels: int) -> list[list[str]]:
        """Per label, the ``substitutes`` common adjectives the teacher, reading each word alone, gives the
        highest probability of that label (one batched teacher call, remembered for this verifier)."""
        if self._targets is not None and self._targets[:2] == (id(verifier), num_labels):
            return self._targets[2]
        pool = self.lexicon.common_adjectives() if self.cfg.substitutes else []
        if not pool:
            return [[] for _ in range(num_labels)]
        probs = verifier.probs(pool)
        found = [[pool[j] for j in probs[:, c].argsort(descending=True)[: self.cfg.substitutes].tolist()]
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
        """Search the originals of at most ``max_words`` words; longer ones get the reason ``too_long``."""
        requests = list(requests)
        short = [i for i, r in enumerate(requests) if len(r.text.split()) <= self.cfg.max_words]
        results: list[CFResult | None] = [None] * len(requests)
        for i, res in zip(short, self._search([requests[i] for i in short], verifier, label_names, progress)):
            results[i] = res
        long = [i for i in range(len(requests)) if results[i] is None]
        if long:
            before = verifier.judge_probs([requests[i].text for i in long])
            for j, i in enumerate(long):
                results[i] = CFResult(requests[i], self.name, [round(x, 6) for x in before[j].tolist()])
                results[i].attempts.append(Attempt(None, TOO_LONG, f"{len(requests[i].text.split())} words, more "
                                                                   f"than max_words ({self.cfg.max_words})"))
        return results

    def _search(self, requests: list[CFRequest], verifier, label_names: Sequence[str],
                progress: bool) -> list[CFResult]:
        from tqdm.auto import tqdm

        judge = verifier.has_judge
        before = verifier.probs([r.text for r in requests]) if requests else None
        shown = verifier.judge_probs([r.text for r in requests]) if requests and judge else before
        results = [CFResult(r, self.name, [round(x, 6) for x in shown[i].tolist()]) for i, r in enumerate(requests)]
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
        important = [set(sorted(imp, key=imp.get, reverse=True)[: self.cfg.top_positions]) for imp in importance]
        target_words = self.target_adjectives(verifier, len(label_names)) if requests else []
        proposals = [self._proposals(r, st.slots, important[qi], label_names)
                     for qi, (r, st) in enumerate(zip(requests, originals))]

        beams: dict[int, list[_State]] = {qi: [st] for qi, st in enumerate(originals)}
        best_seen: dict[int, tuple[float, _State, list[float]]] = {}
        judged: dict[int, set[str]] = {qi: set() for qi in range(len(requests))}  # texts the judge has seen
        for depth in tqdm(range(1, self.cfg.max_edits + 1), desc="edit search", disable=not progress, leave=False):
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
            flipping: dict[int, list[_State]] = {}
            for qi, scored in by_request.items():
                target = requests[qi].target
                flips = [(ch, p) for ch, p in scored if is_flip(p, target)]
                if flips:
                    flips.sort(key=lambda cp: (cp[0].cost, -cp[1][target]))
                    flipping[qi] = [ch for ch, _ in flips]
            if judge:
                self._judge(results, flipping, judged, verifier)
            else:
                self._record(results, self._choose(flipping), verifier)
            next_beams: dict[int, list[_State]] = {}
            for qi, scored in by_request.items():
                if (results[qi].flipped or len(judged[qi]) >= verifier.judge_tries) if judge else qi in flipping:
                    continue  # done (without a judge: at the first depth that flips), or nothing more may be judged
                target = requests[qi].target
                scored.sort(key=lambda cp: -cp[1][target])
                fresh = [cp for cp in scored if cp[0].text() not in judged[qi]] if judged[qi] else scored
                if fresh and (qi not in best_seen or fresh[0][1][target] > best_seen[qi][0]):
                    best_seen[qi] = (fresh[0][1][target], fresh[0][0], fresh[0][1])
                next_beams[qi] = [ch for ch, _ in scored[: self.cfg.beam_width]]
            beams = next_beams
            if not beams:
                break
        if judge:
            failed = [qi for qi, res in enumerate(results) if not res.flipped]
            last = [(qi, best_seen[qi][1]) for qi in failed if qi in best_seen
                    and len(judged[qi]) < verifier.judge_tries and best_seen[qi][1].text() not in judged[qi]]
        else:
            failed = [qi for qi, res in enumerate(results) if not res.attempts]
            last = [(qi, best_seen[qi][1]) for qi in failed if qi in best_seen]
        self._record(results, last, verifier, prefix=f"best within {self.cfg.max_edits} edits: ")
        for qi in failed:
            if not results[qi].attempts:
                results[qi].attempts.append(Attempt(None, NO_EDIT_FOUND, "no applicable edit"))
        return results

    def _proposals(self, request: CFRequest, slots: Sequence[str], important: set[int],
                   label_names: Sequence[str]) -> dict[int, list[str]]:
        """The LM's in-context substitutes at the important plain content words of one original."""
        if self.lm is None or not self.cfg.lm_substitutes:
            return {}
        positions = []
        for i in sorted(important):
            pre, core, _ = _split(slots[i])
            low = core.lower()
            if (core.isalpha() and not pre.endswith(("@", "#")) and low not in STOPWORDS and low not in AUXILIARIES
                    and low not in NEGATIONS and low not in FUNCTION_WORDS):
                positions.append(i)
        prompt = self.cfg.lm_prompt.format(label=label_names[request.target])
        contrast = self.cfg.lm_prompt.format(label=label_names[request.label])
        found = self.lm.propose_words(slots, positions, prompt, contrast, top=8 * self.cfg.lm_substitutes)
        # the prompt's own words ("positive", "text") are echoes of the prompt, not edits of the text
        echoes = {w.lower() for w in re.findall(r"[A-Za-z]+", prompt + " " + contrast + " " + " ".join(label_names))}
        keep = {}
        for i, words in found.items():
            ok = [w for w in words if w not in STOPWORDS and w not in AUXILIARIES and w not in NEGATIONS
                  and w not in FUNCTION_WORDS and w not in QUANTIFIERS and w not in echoes
                  and known_word(w, self.lexicon)]
            keep[i] = ok[: self.cfg.lm_substitutes]
        return keep

    def _order(self, flipping: dict[int, list[_State]], keep_rest: bool = False) -> dict[int, list[_State]]:
        """Per original, its flipping candidates in the order they are chosen: as found (fewest edits, edit
        kind, target probability); with an LM the first ``fluency_candidates`` least surprising first (one
        batched LM pass over every original's shortlist), the others left out, or after them with
        ``keep_rest``."""
        ordered = dict(flipping)
        if self.lm is not None:
            size = max(self.cfg.fluency_candidates, self.cfg.per_original)
            shortlist = {qi: states[:size] for qi, states in flipping.items()}
            texts = [st.text() for states in shortlist.values() for st in states]
            scores = iter(self.lm.log_perplexity(texts)) if texts else iter(())
            for qi, states in shortlist.items():
                lp = [next(scores) for _ in states]
                ordered[qi] = [states[j] for j in sorted(range(len(states)), key=lp.__getitem__)]
                if keep_rest:
                    ordered[qi] += flipping[qi][size:]
        return ordered

    @staticmethod
    def _pick(states: Sequence[_State], limit: int) -> list[_State]:
        """The first of ``states``, then up to ``limit - 1`` more that edit none of the positions the kept
        ones edit."""
        kept: list[_State] = []
        used: set[int] = set()
        for st in states:
            if kept and st.edited & used:
                continue
            kept.append(st)
            used |= st.edited
            if len(kept) == limit:
                break
        return kept

    def _choose(self, flipping: dict[int, list[_State]]) -> list[tuple[int, _State]]:
        """Per original, its first flipping candidate (with an LM: the least surprising of the first
        ``fluency_candidates``), then up to ``per_original - 1`` more that edit none of the positions the
        kept ones edit."""
        return [(qi, st) for qi, states in self._order(flipping).items()
                for st in self._pick(states, self.cfg.per_original)]

    def _judge(self, results: list[CFResult], flipping: dict[int, list[_State]], judged: dict[int, set[str]],
               verifier) -> None:
        """The guide's flipping candidates go to the judge in :meth:`_choose`'s order, in rounds (one batched
        call across originals each): an original leaves when the judge agrees, when its candidates run out
        or when ``judge_tries`` of its candidates have been judged; a text judged before is never sent again.
        ``judged`` (per original, the texts judged) is updated."""
        tries = verifier.judge_tries
        flipping = {qi: states for qi, states in flipping.items() if len(judged[qi]) < tries}
        queues = {qi: [st for st in states if st.text() not in judged[qi]]
                  for qi, states in self._order(flipping, keep_rest=True).items()}
        queues = {qi: states for qi, states in queues.items() if states}
        while queues:
            chosen = []
            for qi, states in queues.items():
                picked = self._pick(states, min(self.cfg.per_original, tries - len(judged[qi])))
                chosen += [(qi, st) for st in picked]
                judged[qi].update(st.text() for st in picked)
                queues[qi] = [st for st in states if st.text() not in judged[qi]]
            self._record(results, chosen, verifier)
            queues = {qi: states for qi, states in queues.items()
                      if states and not results[qi].flipped and len(judged[qi]) < tries}

    @staticmethod
    def _record(results: list[CFResult], chosen: list[tuple[int, _State]], verifier, prefix: str = "") -> None:
        """Have the shared verifier judge the chosen candidates (one batched call) and record the verdicts."""
        if not chosen:
            return
        verdicts = verifier.verify([st.text() for _, st in chosen], [results[qi].request.target for qi, _ in chosen],
                                   [prefix + "; ".join(st.ops) for _, st in chosen])
        for (qi, _), verdict in zip(chosen, verdicts):
            results[qi].attempts.append(verdict)
