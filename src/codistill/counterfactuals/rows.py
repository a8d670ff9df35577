"""The one reader and validator of counterfactual files (JSONL): what ``codistill counterfactuals`` writes,
and plain ``{"text", "label"}`` rows a user adds by hand.

A counterfactual row has ``text`` (the original), ``counterfactual``, ``target_label``, ``flipped`` and
``use`` (and ``pool_index``, the original's row in the training split, for CoD). ``flipped`` defaults to
false (a counterfactual counts only once the teacher has verified it) and ``use`` to ``flipped``. Every
problem is one line naming the file and line.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from codistill.config import CounterfactualUse
from codistill.counterfactuals.metrics import recorded_target_prob
from codistill.data import LabeledTexts, iter_json_lines
from codistill.errors import DataError


@dataclass
class CounterfactualRow:
    """One validated row. ``counterfactual`` is ``None`` for a plain row (``text`` is then the example)."""

    line: int
    text: str
    label: int | None
    counterfactual: str | None
    target: int | None
    use: bool
    pool_index: int | None
    more: tuple[str, ...] = ()  # further counterfactuals of the same original and target (CoD "multi")
    target_prob: float | None = None  # the teacher's probability of the target (probs_after), when recorded

    @property
    def example(self) -> tuple[str, int]:
        """The training example this row adds: the counterfactual with its target, or the plain row."""
        if self.counterfactual is not None:
            return self.counterfactual, self.target
        return self.text, self.label


def summary_path(out: str | Path) -> Path:
    """A counterfactual file's summary beside it: ``cf.jsonl`` -> ``cf.summary.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".summary.json")


def label_index(label: Any, label_names: Sequence[str], where: str) -> int:
    """A class index from an index or a class name; anything else is an error naming ``where``."""
    if isinstance(label, str) and label in label_names:
        return list(label_names).index(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(label_names):
        raise DataError(f"{where}: label {label!r} is not in the label set ({', '.join(label_names)})")
    return label


def _flag(row: dict, key: str, default: bool, where: str) -> bool:
    value = row.get(key, default)
    if not isinstance(value, bool):
        raise DataError(f"{where}: '{key}' must be true or false, got {value!r}")
    return value


def parse_row(row: dict[str, Any], label_names: Sequence[str], where: str) -> CounterfactualRow:
    """Validate one JSON object as a counterfactual row or a plain ``text,label`` row."""
    text = row.get("text")
    if ("counterfactual" not in row or text is not None) and (not isinstance(text, str) or not text.strip()):
        raise DataError(f"{where}: missing or empty 'text'")
    pool_index = row.get("pool_index")
    if pool_index is not None and (isinstance(pool_index, bool) or not isinstance(pool_index, int) or pool_index < 0):
        raise DataError(f"{where}: 'pool_index' must be a non-negative integer, got {pool_index!r}")
    if "counterfactual" not in row:  # a plain row added by hand
        if "label" not in row:
            raise DataError(f"{where}: a row needs 'label' (or 'counterfactual' and 'target_label')")
        return CounterfactualRow(where_line(where), text.strip(), label_index(row["label"], label_names, where),
                                 None, None, _flag(row, "use", True, where), pool_index)
    cf = row["counterfactual"]
    if cf is not None and (not isinstance(cf, str) or not cf.strip()):
        raise DataError(f"{where}: 'counterfactual' must be a non-empty string or null, got {cf!r}")
    if "target_label" not in row:
        raise DataError(f"{where}: missing 'target_label' (the class the counterfactual was made for)")
    target = label_index(row["target_label"], label_names, f"{where}: target_label")
    label = label_index(row["label"], label_names, where) if "label" in row else None
    flipped = _flag(row, "flipped", False, where)
    use = _flag(row, "use", flipped, where) and cf is not None
    more = row.get("more_counterfactuals") or []
    if not isinstance(more, list) or not all(isinstance(m, str) and m.strip() for m in more):
        raise DataError(f"{where}: 'more_counterfactuals' must be a list of non-empty strings, got {more!r}")
    return CounterfactualRow(where_line(where), text or "", label, cf.strip() if cf else None, target, use, pool_index,
                             tuple(m.strip() for m in more), recorded_target_prob(row, target, len(label_names)))


def where_line(where: str) -> int:
    return int(where.rsplit("line ", 1)[1]) if "line " in where else 0


def read_counterfactual_rows(path: str | Path, label_names: Sequence[str]) -> list[CounterfactualRow]:
    """Every row of a counterfactual file, validated; an empty file is an error."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = [parse_row(obj, label_names, f"{path}, line {line_no}") for line_no, obj in iter_json_lines(path, content)]
    if not rows:
        raise DataError(f"{path}: the file has no rows (an empty counterfactual file adds nothing)")
    return rows


def extra_examples(path: str | Path, label_names: Sequence[str]) -> tuple[LabeledTexts, dict[str, int]]:
    """Every usable row of ``path`` as training examples (rows with ``use`` false are counted, not added)."""
    rows = read_counterfactual_rows(path, label_names)
    used = [r.example for r in rows if r.use]
    return (LabeledTexts([t for t, _ in used], [y for _, y in used]),
            {"added": len(used), "skipped_not_flipped": len(rows) - len(used)})


def cod_examples(path: str | Path, sample, label_names: Sequence[str], every: bool = False,
                 use: CounterfactualUse | None = None) -> tuple[LabeledTexts, dict[str, int]]:
    """The counterfactuals of ``path`` that belong to the originals of ``sample`` (matched by their row in
    the pool and checked by text), in the sample's order, chosen and labelled by ``use``
    (:func:`use_counterfactuals`); with ``every``, each original's further counterfactuals
    (``more_counterfactuals``) follow its first. A file generated for a larger k of the same seed covers every
    smaller k, since samples are nested; a file for another seed or dataset is refused."""
    by_index: dict[int, CounterfactualRow] = {}
    for row in read_counterfactual_rows(path, label_names):
        if row.pool_index is None or row.target is None:
            raise DataError(f"{path}, line {row.line}: not a counterfactual row (needs pool_index, text, counterfactual "
                            "and target_label; write it with `codistill counterfactuals`)")
        by_index[row.pool_index] = row
    matched = []
    for idx, original in zip(sample.indices, sample.texts):
        if idx not in by_index:
            raise DataError(f"{path}: no counterfactual for training row {idx} of the k={sample.k}, seed={sample.seed} "
                            "sample (generated for a smaller k or another seed?)")
        row = by_index[idx]
        if row.text != original:
            raise DataError(f"{path}, line {row.line}: its original differs from training row {idx} (another dataset?)")
        matched.append(row)
    return use_counterfactuals(matched, use or CounterfactualUse(), len(label_names), every, path)


def use_counterfactuals(rows: Sequence[CounterfactualRow], use: CounterfactualUse, num_classes: int, every: bool,
                        path: str | Path) -> tuple[LabeledTexts, dict[str, int]]:
    """The one rule of which counterfactuals of a CoD run's originals (``rows``, in sample order) it trains on:
    rows not flipped (``use`` false) are dropped, then, with ``use.max_target_prob``, those the teacher gives
    the target a higher probability (far from its boundary; a row without ``probs_after`` is an error), then,
    with ``use.rebalance``, every target class keeps only its first m counterfactuals, m the fewest any class
    the originals target has left (0 when one has none). Returns the rows (:func:`counterfactual_split`) and
    the counts added and skipped at each step."""
    use.check_classes(num_classes)
    kept, skipped, far = [], 0, 0
    for row in rows:
        if not row.use or row.counterfactual is None:
            skipped += 1
            continue
        if use.max_target_prob is not None:
            if row.target_prob is None:
                raise DataError(f"{path}, line {row.line}: no usable 'probs_after' (the teacher's class probabilities "
                                "of the counterfactual), which cf.max_target_prob needs")
            if row.target_prob > use.max_target_prob:
                far += 1
                continue
        kept += [(text, row.target) for text in (row.counterfactual, *(row.more if every else ()))]
    dropped = 0
    if use.rebalance and kept:
        have = Counter(target for _, target in kept)
        quota = min(have[row.target] for row in rows)
        seen: Counter = Counter()
        balanced = []
        for text, target in kept:
            seen[target] += 1
            if seen[target] <= quota:
                balanced.append((text, target))
        kept, dropped = balanced, len(kept) - len(balanced)
    out = counterfactual_split([t for t, _ in kept], [y for _, y in kept], use)
    return out, {"added": len(out), "skipped_not_flipped": skipped, "skipped_far_from_boundary": far,
                 "skipped_rebalance": dropped}


def counterfactual_split(texts: list[str], labels: list[int], use: CounterfactualUse) -> LabeledTexts:
    """Counterfactuals as training rows, labelled with their targets: hard labels (the CE term trains on them)
    only with ``use.hard_labels``."""
    return LabeledTexts(texts, labels, None if use.hard_labels else [False] * len(texts))
