"""Quality of a counterfactual set: flip rate, teacher confidence in the target, edit size and kind,
diversity, length, and (when :mod:`.quality` scored the rows) fluency and validity by a judge."""

from __future__ import annotations

import difflib
import re
import statistics
from typing import Any, Sequence

# links, @mentions, #hashtags and emoticons are one token each; then words (with inner apostrophes) and
# single punctuation marks
_WORD = re.compile(r"https?://\S+|www\.\S+|[@#]\w+|[:;=][-']?[()\[\]dp/|]|</?3|\w+(?:['’]\w+)*|[^\w\s]")
_TAG = re.compile(r"^(?:[@#]\w+|https?://\S+|www\.\S+)$")
NEGATION_WORDS = {"not", "no", "never", "n't", "nothing", "none", "nobody", "neither", "nor", "cannot"}
EXAMPLES = 10


def words(text: str | None) -> list[str]:
    """Lower-cased tokens (the unit of edit distances): a link, mention, hashtag or emoticon is one."""
    return _WORD.findall(text.lower()) if text else []


def recorded_target_prob(row: dict[str, Any], target: int, num_classes: int | None = None) -> float | None:
    """The teacher's probability of class ``target`` recorded in a raw row's ``probs_after`` (``None`` when the
    row has none, or when it is not a list of numbers, of ``num_classes`` of them when given)."""
    probs = row.get("probs_after")
    if not isinstance(probs, list) or not all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in probs):
        return None
    if (num_classes is not None and len(probs) != num_classes) or not 0 <= target < len(probs):
        return None
    return float(probs[target])


def _negation(tokens: Sequence[str]) -> bool:
    return any(t in NEGATION_WORDS or t.endswith("n't") for t in tokens)


def edit_ops(original: str, counterfactual: str) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """The word edits turning ``original`` into ``counterfactual``: ``(kind, removed, added)`` per changed
    span. Kinds: ``tag_deletion`` (only links, mentions or hashtags removed), ``negation`` (a negation added
    or removed), ``substitution``, ``deletion``, ``insertion``."""
    a, b = words(original), words(counterfactual)
    ops = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        removed, added = tuple(a[i1:i2]), tuple(b[j1:j2])
        if not added and removed and all(_TAG.match(t) for t in removed):
            kind = "tag_deletion"
        elif _negation(removed) != _negation(added):
            kind = "negation"
        else:
            kind = {"replace": "substitution", "delete": "deletion", "insert": "insertion"}[tag]
        ops.append((kind, removed, added))
    return ops


def edit_kind(original: str, counterfactual: str) -> str:
    """One kind per counterfactual: its edits' kind when they share one, else ``mixed`` (``none``: no edit)."""
    return _kind_of(edit_ops(original, counterfactual))


def _kind_of(ops: Sequence[tuple[str, tuple[str, ...], tuple[str, ...]]]) -> str:
    kinds = {k for k, _, _ in ops}
    return kinds.pop() if len(kinds) == 1 else ("none" if not kinds else "mixed")


def word_edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between the word sequences of ``a`` and ``b`` (insert, delete, substitute = 1)."""
    x, y = words(a), words(b)
    prev = list(range(len(y) + 1))
    for i, wx in enumerate(x, start=1):
        cur = [i] + [0] * len(y)
        for j, wy in enumerate(y, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wx != wy))
        prev = cur
    return prev[-1]


def _mean(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def quality_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Summary of counterfactual rows (as written by ``CFResult.to_row``).

    flip_rate: share of originals with a counterfactual the teacher classifies as the target.
    mean_target_prob: mean teacher probability of the target on the chosen candidates.
    edited_words_mean / _median, relative_edit_mean (edited words / words of the original),
    length_ratio_mean (candidate words / original words): over originals that have a candidate.
    unchanged_share: candidates equal to their original; duplicate_share: candidates that repeat another
    candidate of the set. rejected: count of candidates per rejection reason (all attempts).

    more_counterfactuals: further flips kept beside the originals' first (``per_original`` > 1). Over the
    first flipped counterfactuals: edit_kinds (count per :func:`edit_kind`); distinct_edits and
    distinct_edit_share (distinct ``removed -> added`` edits / all edits: 1.0 when no edit repeats);
    fluency_ratio_median and fluency_share_le_1_5 (perplexity ratio to the original, from rows scored by
    :mod:`.quality`); validity (share whose target the judge also predicts) and judge_accuracy_originals
    (the judge's accuracy on the originals, to read validity against); examples: the first ten pairs.
    Model-based figures are ``None`` when the rows were not scored.
    """
    n = len(rows)
    with_cf = [r for r in rows if r.get("counterfactual")]
    flipped = [r for r in rows if r.get("flipped")]
    edits = [r["edited_words"] for r in with_cf if r.get("edited_words") is not None]
    rel = [r["edited_words"] / max(1, len(words(r["text"]))) for r in with_cf if r.get("edited_words") is not None]
    length = [len(words(r["counterfactual"])) / max(1, len(words(r["text"]))) for r in with_cf]
    target_p = [p for r in with_cf if (p := recorded_target_prob(r, r["target_label"])) is not None]
    texts = [" ".join(words(r["counterfactual"])) for r in with_cf]
    unchanged = sum(" ".join(words(r["text"])) == t for r, t in zip(with_cf, texts))
    duplicates = len(texts) - len(set(texts))
    reasons: dict[str, int] = {}
    for r in rows:
        for c in r.get("candidates", []):
            reasons[c["reason"]] = reasons.get(c["reason"], 0) + 1
    good = [r for r in flipped if r.get("counterfactual")]
    kinds: dict[str, int] = {}
    all_ops = []
    for r in good:
        ops = edit_ops(r["text"], r["counterfactual"])  # one alignment per row, for its kind and its edits
        kind = _kind_of(ops)
        kinds[kind] = kinds.get(kind, 0) + 1
        all_ops += [f"{' '.join(rm)} -> {' '.join(ad)}" for _, rm, ad in ops]
    ratios = [r["fluency_ratio"] for r in good if r.get("fluency_ratio") is not None]
    judged = [r for r in good if r.get("judge_label") is not None]
    judged_originals = [r for r in rows if r.get("judge_original_label") is not None]
    return {
        "originals": n,
        "flipped": len(flipped),
        "flip_rate": len(flipped) / n if n else None,
        "mean_target_prob": _mean(target_p),
        "edited_words_mean": _mean(edits),
        "edited_words_median": statistics.median(edits) if edits else None,
        "relative_edit_mean": _mean(rel),
        "length_ratio_mean": _mean(length),
        "unchanged_share": unchanged / len(with_cf) if with_cf else None,
        "duplicate_share": duplicates / len(with_cf) if with_cf else None,
        "attempts_mean": _mean([r.get("attempts", 0) for r in rows]),
        "candidates_by_reason": dict(sorted(reasons.items())),
        "more_counterfactuals": sum(len(r.get("more_counterfactuals") or []) for r in good),
        "edit_kinds": dict(sorted(kinds.items())),
        "distinct_edits": len(set(all_ops)),
        "distinct_edit_share": len(set(all_ops)) / len(all_ops) if all_ops else None,
        "fluency_ratio_median": statistics.median(ratios) if ratios else None,
        "fluency_share_le_1_5": sum(x <= 1.5 for x in ratios) / len(ratios) if ratios else None,
        "validity": sum(r["judge_label"] == r["target_label"] for r in judged) / len(judged) if judged else None,
        "judge_accuracy_originals": (sum(r["judge_original_label"] == r["label"] for r in judged_originals)
                                     / len(judged_originals) if judged_originals else None),
        "examples": [{"text": r["text"], "counterfactual": r["counterfactual"],
                      "label": r.get("label_name", r.get("label")), "target": r.get("target_name", r["target_label"]),
                      "target_prob": recorded_target_prob(r, r["target_label"]),
                      "fluency_ratio": r.get("fluency_ratio"), "judge_agrees": (
                          r["judge_label"] == r["target_label"] if r.get("judge_label") is not None else None)}
                     for r in good[:EXAMPLES]],
    }
