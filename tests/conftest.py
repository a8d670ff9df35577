"""Shared fixtures: tiny synthetic datasets written to temporary folders (CSV, TSV, JSONL)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

# Tests never touch the network: Hub code paths are exercised with in-memory stand-ins.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

POSITIVE_WORDS = ["great", "lovely", "superb", "fine", "excellent", "wonderful"]
NEGATIVE_WORDS = ["awful", "boring", "dreadful", "poor", "terrible", "dull"]


def synthetic_rows(n: int, seed: int = 0, classes: tuple[str, ...] = ("negative", "positive")) -> list[dict]:
    """``n`` rows cycling through ``classes``; each text carries a class-specific word, so it is learnable."""
    import random

    rng = random.Random(seed)
    vocab = {0: NEGATIVE_WORDS, 1: POSITIVE_WORDS}
    rows = []
    for i in range(n):
        label = i % len(classes)
        words = vocab.get(label, [f"class{label}word"])
        text = f"the film was {rng.choice(words)} and the plot {rng.choice(words)} number {i}"
        rows.append({"text": text, "label": label})
    return rows


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def csv_folder(tmp_path: Path) -> Path:
    """A folder with train (60 rows), validation (10) and test (20) CSV files, labels 0/1."""
    folder = tmp_path / "toy"
    write_csv(folder / "train.csv", synthetic_rows(60, seed=1))
    write_csv(folder / "validation.csv", synthetic_rows(10, seed=2))
    write_csv(folder / "test.csv", synthetic_rows(20, seed=3))
    return folder


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    """One JSONL file of 100 rows with string labels, to be split by the loader."""
    rows = [{"body": r["text"], "stars": ["negative", "positive"][r["label"]]} for r in synthetic_rows(100)]
    return write_jsonl(tmp_path / "reviews.jsonl", rows)
