"""Dataclasses for every option, validated at construction and documented per field."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from codistill.errors import ConfigError


@dataclass
class DataConfig:
    """Where a labelled text dataset comes from and how to read it.

    Attributes:
        source: ``tweets`` (the embedded default), a registered name (``sst2``, ``cola``, ``imdb``,
            ``yelp_polarity``, ``amazon_polarity``, ``sentiment140``; loaded from the Hugging Face Hub),
            a folder with ``train``/``validation``/``test`` files, a single ``.csv``/``.tsv``/``.jsonl``
            file, or any other Hub dataset name (``owner/name``).
        text_column: column holding the text; several columns may be given (joined by a space). ``None``
            picks the first of ``text, sentence, review, content, tweet, document`` that exists.
        label_column: column holding the label. ``None`` picks the first of
            ``label, labels, sentiment, class, target, category`` that exists.
        label_names: names of the classes in index order. File labels may then be either these names or
            integer indices. ``None`` infers the label set from the training split (sorted).
        label_map: raw label value -> class name (e.g. ``{"0": "negative", "4": "positive"}``); raw values
            not in the map are an error unless listed in ``drop_labels``.
        drop_labels: raw label values whose rows are dropped before anything else (e.g. a neutral class).
        encoding: text encoding of local files. Bytes that do not decode are an error naming the line.
        split_seed: seed of the deterministic, stratified carving of missing validation/test splits.
        holdout_fraction: share of the training pool carved out for each missing validation/test split.
    """

    source: str = "tweets"
    text_column: str | list[str] | None = None
    label_column: str | None = None
    label_names: list[str] | None = None
    label_map: dict[str, str] | None = None
    drop_labels: list[str] = field(default_factory=list)
    encoding: str = "utf-8"
    split_seed: int = 0
    holdout_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not str(self.source).strip():
            raise ConfigError("data source is empty: pass a folder, a file, a registered name or 'tweets'")
        if isinstance(self.text_column, str):
            self.text_column = [c.strip() for c in self.text_column.split(",") if c.strip()] or None
        if not 0.0 < self.holdout_fraction < 0.5:
            raise ConfigError(f"holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        if self.label_names is not None:
            names = [str(n) for n in self.label_names]
            if len(names) < 2:
                raise ConfigError(f"label_names needs at least two classes, got {names}")
            if len(set(names)) != len(names):
                raise ConfigError(f"label_names has duplicates: {names}")
            self.label_names = names
        if self.label_map is not None:
            self.label_map = {str(k).strip(): str(v) for k, v in self.label_map.items()}
        self.drop_labels = [str(v).strip() for v in self.drop_labels]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
