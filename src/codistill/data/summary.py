"""Summaries of a dataset: sizes, class balance and text-length percentiles per split."""

from __future__ import annotations

import math
from typing import Any, Sequence

from codistill.data.types import TextDataset


def _percentile(sorted_values: Sequence[int], q: float) -> float:
    if not sorted_values:
        return float("nan")
    pos = (len(sorted_values) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def describe(dataset: TextDataset) -> dict[str, Any]:
    """Sizes, class balance and text-length percentiles (characters and words) per split, as plain data."""
    out: dict[str, Any] = {
        "name": dataset.name,
        "source": dataset.source,
        "label_names": dataset.label_names,
        "notes": list(dataset.notes),
        "splits": {},
    }
    for split, data in dataset.splits.items():
        chars = sorted(len(t) for t in data.texts)
        words = sorted(len(t.split()) for t in data.texts)
        counts = data.class_counts(dataset.num_classes)
        out["splits"][split] = {
            "rows": len(data),
            "class_counts": dict(zip(dataset.label_names, counts)),
            "chars": {f"p{int(q * 100)}": _percentile(chars, q) for q in (0.05, 0.5, 0.95)} | {"max": max(chars, default=0)},
            "words": {f"p{int(q * 100)}": _percentile(words, q) for q in (0.05, 0.5, 0.95)} | {"max": max(words, default=0)},
        }
    return out
