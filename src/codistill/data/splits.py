"""Split names and stratified, seeded splitting: carving missing validation/test splits from train and
taking class-balanced subsets."""

from __future__ import annotations

import random
from typing import Sequence

from codistill.config import DataConfig
from codistill.data.types import LabeledTexts, TextDataset
from codistill.errors import DataError

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}


def _stratified_permutations(labels: Sequence[int], seed: int | str) -> dict[int, list[int]]:
    """For each class, its row indices in a seeded random order (Python's ``random``, stable across versions)."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    for y, idx in by_class.items():
        random.Random(f"{seed}:{y}").shuffle(idx)
    return dict(sorted(by_class.items()))


def stratified_subset(data: LabeledTexts, size: int, seed: int | str) -> LabeledTexts:
    """About ``size`` rows keeping the class proportions (at least one per class), seeded, in pool order."""
    perms = _stratified_permutations(data.labels, seed)
    keep: list[int] = []
    for idx in perms.values():
        keep.extend(idx[: max(1, round(size * len(idx) / len(data)))])
    return data.subset(sorted(keep))


def complete_splits(dataset: TextDataset, cfg: DataConfig) -> TextDataset:
    """Carve each missing validation/test split out of train: stratified, seeded, ``holdout_fraction`` each.

    The carving depends only on the training rows and ``cfg.split_seed``, so the same file always gives
    the same splits. A dataset without a train split is returned as it is. Checks every split has at least
    two classes (a classifier needs them).
    """
    train = dataset.splits.get("train")
    missing = [s for s in ("validation", "test") if s not in dataset.splits]
    if train is not None and missing:
        perms = _stratified_permutations(train.labels, f"split-{cfg.split_seed}")
        taken: dict[str, list[int]] = {s: [] for s in missing}
        keep: list[int] = []
        for y, idx in perms.items():
            n_out = int(round(len(idx) * cfg.holdout_fraction))
            if len(idx) - n_out * len(missing) < 1:
                n_out = 0
            for j, s in enumerate(missing):
                taken[s].extend(idx[j * n_out:(j + 1) * n_out])
            keep.extend(idx[n_out * len(missing):])
        for s in missing:
            dataset.splits[s] = train.subset(sorted(taken[s]))
            dataset.notes.append(
                f"'{s}' split carved from train: {len(taken[s])} rows ({cfg.holdout_fraction:.0%} per class, "
                f"seed {cfg.split_seed})"
            )
        dataset.splits["train"] = train.subset(sorted(keep))
        dataset.splits = {s: dataset.splits[s] for s in SPLITS if s in dataset.splits}
    for split, data in dataset.splits.items():
        present = sorted(set(data.labels))
        if len(present) < 2 and split == "train":
            only = dataset.label_names[present[0]] if present else "none"
            raise DataError(
                f"dataset '{dataset.name}': split 'train' has only one class ('{only}'); "
                "a classifier needs at least two"
            )
        absent = [dataset.label_names[c] for c in range(len(dataset.label_names)) if c not in set(present)]
        if split != "train" and len(data) and absent:
            dataset.notes.append(f"'{split}' has no rows of class {', '.join(repr(a) for a in absent[:5])}"
                                 f"{' and more' if len(absent) > 5 else ''}: macro-F1 and MCC on it say little")
    if len(dataset.label_names) < 2:
        raise DataError(f"dataset '{dataset.name}' has only one class ({dataset.label_names}); need at least two")
    return dataset


def carve_train(dataset: TextDataset, split: str, cfg: DataConfig) -> TextDataset:
    """A train split for a dataset without one, carved from ``split``: per class, a seeded ``holdout_fraction``
    (at least one row) stays in ``split`` and the rest becomes train, so the two are disjoint."""
    rows = dataset.splits.get(split)
    if rows is None or not len(rows):
        raise DataError(f"data.train_from: dataset '{dataset.name}' has no '{split}' split to draw a train split "
                        f"from (it has: {', '.join(dataset.splits) or 'none'})")
    kept, train = [], []
    for idx in _stratified_permutations(rows.labels, f"train-from-{cfg.split_seed}").values():
        n_keep = max(1, round(len(idx) * cfg.holdout_fraction))
        kept.extend(idx[:n_keep])
        train.extend(idx[n_keep:])
    dataset.splits[split] = rows.subset(sorted(kept))
    dataset.splits["train"] = rows.subset(sorted(train))
    dataset.splits = {s: dataset.splits[s] for s in SPLITS if s in dataset.splits}
    dataset.notes.append(f"'train' split drawn from '{split}' (the dataset has none): {len(train)} rows; '{split}' "
                         f"keeps the other {len(kept)} ({cfg.holdout_fraction:.0%} per class, seed {cfg.split_seed})")
    return dataset
