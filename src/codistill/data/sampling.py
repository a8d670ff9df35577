"""Balanced, seeded, nested k-shot sampling."""

from __future__ import annotations

from typing import Sequence

from codistill.data.splits import _stratified_permutations
from codistill.data.types import FewShotSample, LabeledTexts, TextDataset
from codistill.errors import DataError


def sample_k_shot(data: LabeledTexts, k: int, seed: int, num_classes: int | None = None,
                  label_names: Sequence[str] | None = None, split: str = "train") -> FewShotSample:
    """Draw a balanced, seeded k-shot sample: ``k / C`` examples of each class.

    Samples of one seed are nested: the sample for ``k`` is the first ``k`` entries of the sample for any
    larger ``k'`` (each class's rows are taken in one fixed seeded order, and the classes are interleaved
    round-robin), so a CoD run on ``k/2`` originals pairs exactly with a baseline on ``k``.
    """
    num_classes = num_classes or (max(data.labels) + 1 if data.labels else 0)
    names = list(label_names) if label_names else [str(c) for c in range(num_classes)]
    if isinstance(k, bool) or not isinstance(k, int) or k <= 0:
        raise DataError(f"k must be a positive integer, got {k!r}")
    if k % num_classes:
        raise DataError(f"k={k} is not divisible by the number of classes ({num_classes}); use a multiple of it")
    per_class = k // num_classes
    if k > len(data):
        raise DataError(f"k={k} is larger than the '{split}' split ({len(data)} rows)")
    perms = _stratified_permutations(data.labels, f"kshot-{seed}")
    for c in range(num_classes):
        have = len(perms.get(c, []))
        if have < per_class:
            raise DataError(
                f"class '{names[c]}' has only {have} examples in the '{split}' split; "
                f"k={k} needs {per_class} per class"
            )
    indices = [perms[c][i] for i in range(per_class) for c in range(num_classes)]
    return FewShotSample(
        texts=[data.texts[i] for i in indices],
        labels=[data.labels[i] for i in indices],
        indices=indices,
        k=k,
        seed=seed,
    )


def sample_from(dataset: TextDataset, k: int, seed: int, split: str = "train") -> FewShotSample:
    """:func:`sample_k_shot` on a split of ``dataset`` (default ``train``)."""
    return sample_k_shot(dataset.split(split), k, seed, dataset.num_classes, dataset.label_names, split)
