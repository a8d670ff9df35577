"""Reading local CSV, TSV and JSONL files into texts and raw label values: decoding, finding the text and
label columns, and reading rows with the file and line of every error."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from codistill.config import DataConfig
from codistill.errors import DataError

EXTENSIONS = (".csv", ".tsv", ".jsonl")
TEXT_COLUMN_CANDIDATES = ("text", "sentence", "review", "content", "tweet", "document")
LABEL_COLUMN_CANDIDATES = ("label", "labels", "sentiment", "class", "target", "category")


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
        repeated = sorted({h for h in header if h and header.count(h) > 1})
        if repeated:
            raise DataError(f"{path}: column '{repeated[0]}' appears more than once in the header; rename one")
        text_cols = _text_columns(header, cfg, str(path))
        label_col = _label_column(header, cfg, str(path), label_required)
        text_idx = [header.index(c) for c in text_cols]
        label_idx = header.index(label_col) if label_col is not None else None
        rows = _RawRows(str(path), [], [] if label_col is not None else None, [])
        records = [(reader.line_num, row) for row in reader]  # line_num: the physical line where the row ends
        while records and not any(f.strip() for f in records[-1][1]):
            records.pop()  # blank lines at the end of the file
        for line, row in records:
            if len(header) == 1 and len(row) <= 1:
                row = row or [""]  # one column: a blank line inside the file is an empty text, not nothing
            elif not row or (len(row) == 1 and not row[0].strip()):
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
