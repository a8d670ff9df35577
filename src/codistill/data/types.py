"""The data's types: one labelled split, a dataset of named splits, a k-shot sample, and texts read for
prediction."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

from codistill.errors import DataError


@dataclass
class LabeledTexts:
    """One split: parallel lists of texts and class indices, and optionally, per row, whether its label is a
    hard label the CE term trains on (``hard``; ``None``: every row's is; a CoD run without hard labels marks
    its counterfactuals False)."""

    texts: list[str]
    labels: list[int]
    hard: list[bool] | None = None

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")
        if self.hard is not None and len(self.hard) != len(self.texts):
            raise ValueError(f"{len(self.texts)} texts but {len(self.hard)} hard-label flags")

    def __len__(self) -> int:
        return len(self.texts)

    def __add__(self, other: LabeledTexts) -> LabeledTexts:
        """The rows of both, in order (their ``hard`` flags too, ``None`` only when both are)."""
        hard = None if self.hard is None and other.hard is None else self.hard_flags() + other.hard_flags()
        return LabeledTexts(self.texts + other.texts, self.labels + other.labels, hard)

    def hard_flags(self) -> list[bool]:
        """Per row, whether the CE term trains on its label."""
        return list(self.hard) if self.hard is not None else [True] * len(self.texts)

    def subset(self, indices: Sequence[int]) -> LabeledTexts:
        hard = [self.hard[i] for i in indices] if self.hard is not None else None
        return LabeledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices], hard)

    def class_counts(self, num_classes: int) -> list[int]:
        counts = Counter(self.labels)
        return [counts.get(c, 0) for c in range(num_classes)]


@dataclass
class TextDataset:
    """A labelled dataset: named splits sharing one label set.

    Attributes:
        name: short name used in reports (folder name, registry name, ``tweets``).
        label_names: class names in index order.
        splits: ``train`` / ``validation`` / ``test`` (any subset of them) -> data.
        source: where it was read from (path or Hub name).
        notes: what was done to it on loading (splits carved, rows dropped), for reports.
    """

    name: str
    label_names: list[str]
    splits: dict[str, LabeledTexts]
    source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def __getitem__(self, split: str) -> LabeledTexts:
        return self.split(split)

    def split(self, split: str) -> LabeledTexts:
        """The named split, or a clear error listing the splits there are, or saying it is empty (a split
        carved from too few rows per class): nothing is trained or evaluated on an empty split."""
        if split not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise DataError(f"dataset '{self.name}' has no '{split}' split (it has: {have})")
        if not len(self.splits[split]):
            raise DataError(f"dataset '{self.name}': the '{split}' split is empty (too few rows per class to carve "
                            f"it?); give a {split} file")
        return self.splits[split]


@dataclass
class FewShotSample:
    """A balanced k-shot sample: ``k/C`` examples per class, with their row indices in the pool split."""

    texts: list[str]
    labels: list[int]
    indices: list[int]
    k: int
    seed: int

    def as_split(self) -> LabeledTexts:
        return LabeledTexts(list(self.texts), list(self.labels))


@dataclass
class TextRows:
    """Texts read for prediction, with class indices when the file has a label column (else ``None``) and
    the line of each row (for messages)."""

    path: str
    texts: list[str]
    labels: list[int] | None
    lines: list[int]

    def __len__(self) -> int:
        return len(self.texts)
