"""Writing labelled rows (CSV, TSV or JSONL) and fingerprinting texts, so saved results can be matched to
their split."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Sequence

from codistill.data.types import LabeledTexts
from codistill.errors import DataError


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
