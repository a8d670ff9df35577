"""Quality of a counterfactual set: flip rate, teacher confidence in the target, edit size, length."""

from __future__ import annotations

import re
import statistics
from typing import Any, Sequence

_WORD = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]")


def words(text: str | None) -> list[str]:
    """Lower-cased word and punctuation tokens (the unit of edit distances)."""
    return _WORD.findall(text.lower()) if text else []


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
    """
    n = len(rows)
    with_cf = [r for r in rows if r.get("counterfactual")]
    flipped = [r for r in rows if r.get("flipped")]
    edits = [r["edited_words"] for r in with_cf if r.get("edited_words") is not None]
    rel = [r["edited_words"] / max(1, len(words(r["text"]))) for r in with_cf if r.get("edited_words") is not None]
    length = [len(words(r["counterfactual"])) / max(1, len(words(r["text"]))) for r in with_cf]
    target_p = [r["probs_after"][r["target_label"]] for r in with_cf if r.get("probs_after")]
    texts = [" ".join(words(r["counterfactual"])) for r in with_cf]
    unchanged = sum(" ".join(words(r["text"])) == t for r, t in zip(with_cf, texts))
    duplicates = len(texts) - len(set(texts))
    reasons: dict[str, int] = {}
    for r in rows:
        for c in r.get("candidates", []):
            reasons[c["reason"]] = reasons.get(c["reason"], 0) + 1
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
    }
