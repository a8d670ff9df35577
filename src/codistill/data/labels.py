"""Resolving raw label values to class indices: building a dataset from the raw rows of its splits, and
resolving the labels of texts read for prediction against a model's classes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

from codistill.config import DataConfig
from codistill.data.readers import _RawRows, read_rows
from codistill.data.splits import complete_splits
from codistill.data.types import LabeledTexts, TextDataset, TextRows
from codistill.errors import DataError

_INT_RE = re.compile(r"^[+-]?\d+$")


def _normalize_label(value: Any, where: str) -> int | str:
    if isinstance(value, bool) or value is None or isinstance(value, (list, dict)):
        raise DataError(f"{where}: label {value!r} is not a class name or an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if value.is_integer():
            return int(value)
        raise DataError(f"{where}: label {value!r} is not a class name or an integer")
    text = str(value).strip()
    if not text:
        raise DataError(f"{where}: empty label")
    if _INT_RE.match(text):
        return int(text)
    return text


def _label_resolver(train_labels: Sequence[int | str], cfg: DataConfig) -> tuple[list[str], dict[Any, int]]:
    """Decide the label names and the raw value -> index mapping."""
    if cfg.label_map:
        names = list(cfg.label_names) if cfg.label_names else sorted(set(cfg.label_map.values()))
        unknown = sorted(set(cfg.label_map.values()) - set(names))
        if unknown:
            raise DataError(f"label_map maps to {unknown}, which are not in label_names {names}")
        mapping: dict[Any, int] = {}
        for raw, name in cfg.label_map.items():
            mapping[_normalize_label(raw, "label_map")] = names.index(name)
        return names, mapping
    if cfg.label_names:
        names = list(cfg.label_names)
        mapping = {name: i for i, name in enumerate(names)}
        mapping.update({i: i for i in range(len(names))})
        return names, mapping
    kinds = {type(v) for v in train_labels}
    if len(kinds) > 1:
        raise DataError("labels mix integers and names; pass --labels NAME,NAME,... to fix the label set")
    values = sorted(set(train_labels))
    return [str(v) for v in values], {v: i for i, v in enumerate(values)}


def _resolve(rows: _RawRows, names: list[str], mapping: dict[Any, int], drop: set[Any],
             split: str) -> LabeledTexts:
    texts: list[str] = []
    labels: list[int] = []
    for text, raw, line in zip(rows.texts, rows.raw_labels, rows.lines):
        where = f"{rows.path}, line {line}" if line else f"{rows.path}, row {len(labels)}"
        value = _normalize_label(raw, where)
        if value in drop:
            continue
        if value not in mapping:
            raise DataError(f"{where}: label {raw!r} is not in the label set ({', '.join(names)})")
        if not text.strip():
            raise DataError(f"{where}: empty text")
        texts.append(text.strip())
        labels.append(mapping[value])
    if not texts:
        raise DataError(f"{rows.path}: split '{split}' has no rows")
    return LabeledTexts(texts, labels)


def _build_dataset(name: str, source: str, raw_splits: dict[str, _RawRows], cfg: DataConfig,
                   notes: list[str]) -> TextDataset:
    drop = {_normalize_label(v, "drop_labels") for v in cfg.drop_labels}
    anchor = raw_splits.get("train") or next(iter(raw_splits.values()))
    anchor_values = []
    for raw, line in zip(anchor.raw_labels, anchor.lines):
        value = _normalize_label(raw, f"{anchor.path}, line {line}")
        if value not in drop:
            anchor_values.append(value)
    names, mapping = _label_resolver(anchor_values, cfg)
    splits = {split: _resolve(rows, names, mapping, drop, split) for split, rows in raw_splits.items()}
    dataset = TextDataset(name=name, label_names=names, splits=splits, source=source, notes=notes)
    return complete_splits(dataset, cfg)


def read_texts(path: str | Path, label_names: Sequence[str] | None, text_column: str | None = None,
               label_column: str | None = None, encoding: str = "utf-8") -> TextRows:
    """Read a CSV/TSV/JSONL file of texts to classify. The text column is named or found as for datasets;
    a label column is optional (named, or one of the usual names) and its values are resolved against
    ``label_names`` (a model's classes): a class name or an index. ``label_names=None`` reads texts only."""
    cfg = DataConfig(source=str(path), text_column=text_column, label_column=label_column, encoding=encoding)
    rows = read_rows(path, cfg, label_required=False)
    if not rows.texts:
        raise DataError(f"{path}: no rows to predict")
    if rows.raw_labels is None or label_names is None:
        for text, line in zip(rows.texts, rows.lines):
            if not text.strip():
                raise DataError(f"{path}, line {line}: empty text")
        return TextRows(str(path), [t.strip() for t in rows.texts], None, rows.lines)
    names = [str(n) for n in label_names]
    mapping: dict[Any, int] = {_normalize_label(n, f"{path}: class name"): i for i, n in enumerate(names)}
    if not any(isinstance(key, int) for key in mapping):  # names are words: integers are class indices
        mapping.update({i: i for i in range(len(names))})
    resolved = _resolve(rows, names, mapping, set(), "predict")
    return TextRows(str(path), resolved.texts, resolved.labels, rows.lines)
