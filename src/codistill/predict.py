"""Batch prediction with any model folder codistill writes: a PyTorch ``save_pretrained`` folder or an ONNX
export (:mod:`codistill.export`), behind one :class:`Predictor`.

The folder decides the backend: ``model.onnx`` -> onnxruntime, otherwise ``transformers``. Both share the
tokenizer saved in the folder, the label names of its ``config.json`` and the length-sorted batching of
:func:`codistill.evaluate.batched_logits`, so their outputs are comparable row by row.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

import codistill.heads  # noqa: F401  (registers the mean head's model type: an export of such a student reads back)
from codistill.config import TrainConfig
from codistill.data import TextRows, iter_json_lines, read_texts
from codistill.errors import ConfigError, DataError
from codistill.evaluate import agreement, batched_logits, classification_metrics
from codistill.fileio import atomic_write_json, atomic_write_text, check_output

ONNX_FILE = "model.onnx"
EXPORT_MANIFEST = "codistill_export.json"
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def require_onnxruntime():
    """onnxruntime, or a one-line error saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError("ONNX models need onnxruntime: pip install 'codistill[onnx]'") from None
    return onnxruntime


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session over ``path`` with all graph optimizations; ``threads`` caps intra-op
    threads (``None``: onnxruntime's default, one per core)."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class Predictor:
    """A classifier ready to predict: ``forward`` maps a batch of texts to logits.

    Attributes:
        source: the folder it was loaded from.
        backend: ``pytorch`` or ``onnx``.
        precision: ``fp32`` or ``int8`` (from the export manifest), or the PyTorch dtype's name.
        label_names: class names in index order (``config.json``'s ``id2label``).
        max_length: texts are truncated to this many tokens.
    """

    source: str
    backend: str
    precision: str
    label_names: list[str]
    forward: Callable[[list[str]], Any]
    max_length: int = TrainConfig.max_length

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    def logits(self, texts: Sequence[str], batch_size: int = TrainConfig.eval_batch_size, progress: bool = False) -> torch.Tensor:
        return batched_logits(list(texts), self.forward, self.num_classes, batch_size, progress,
                              desc=f"predict ({self.backend})")

    def probabilities(self, texts: Sequence[str], batch_size: int = TrainConfig.eval_batch_size, progress: bool = False) -> np.ndarray:
        return self.logits(texts, batch_size, progress).softmax(-1).numpy()


def _label_names(config) -> list[str]:
    """Class names in index order; a multi-label model (sigmoid per class) is refused, since every figure here
    assumes one class per text (softmax)."""
    if getattr(config, "problem_type", None) == "multi_label_classification":
        raise ConfigError("multi-label models (problem_type 'multi_label_classification') are not supported: "
                          "predict gives one class per text")
    from codistill.models import label_names

    return label_names(config)


def is_onnx_folder(folder: str | Path) -> bool:
    return (Path(folder) / ONNX_FILE).is_file()


def _onnx_predictor(folder: Path, max_length: int, threads: int | None) -> Predictor:
    from transformers import AutoConfig, AutoTokenizer

    session = onnx_session(folder / ONNX_FILE, threads)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model '{folder}': the ONNX folder lacks its tokenizer or config.json ({str(exc).splitlines()[0][:200]})") from None
    names = [i.name for i in session.get_inputs()]
    unknown = [n for n in names if n not in ONNX_INPUTS]
    if unknown:
        raise ConfigError(f"model '{folder}': {ONNX_FILE} takes inputs codistill does not feed ({', '.join(unknown)})")
    manifest = folder / EXPORT_MANIFEST
    precision = json.loads(manifest.read_text()).get("precision", "fp32") if manifest.is_file() else "fp32"

    def forward(batch: list[str]) -> np.ndarray:
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="np")
        feed = {}
        for name in names:
            value = enc.get(name)
            feed[name] = (np.zeros_like(enc["input_ids"]) if value is None else value).astype(np.int64)
        return session.run(["logits"], feed)[0]

    return Predictor(str(folder), "onnx", precision, _label_names(config), forward, max_length)


def torch_predictor(clf, max_length: int = TrainConfig.max_length) -> Predictor:
    """A PyTorch :class:`Predictor` over a loaded :class:`~codistill.models.Classifier` (put in eval mode)."""
    model = clf.model.eval()
    device = next(model.parameters()).device

    @torch.no_grad()
    def forward(batch: list[str]) -> torch.Tensor:
        enc = clf.tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        return model(**enc).logits

    precision = str(next(model.parameters()).dtype).replace("torch.", "").replace("float32", "fp32")
    return Predictor(clf.source, "pytorch", precision, _label_names(model.config), forward, max_length)


def load_predictor(folder: str | Path, max_length: int = TrainConfig.max_length, threads: int | None = None) -> Predictor:
    """A :class:`Predictor` for a model folder: ONNX when it holds ``model.onnx``, else PyTorch
    (``transformers``; a Hub name works too)."""
    path = Path(folder).expanduser()
    if path.is_dir() and is_onnx_folder(path):
        return _onnx_predictor(path, max_length, threads)
    from codistill.models import load_classifier

    if threads:
        torch.set_num_threads(threads)
    return torch_predictor(load_classifier(str(folder), what="model"), max_length)


# -- predicting a file ------------------------------------------------------------------------------------


def read_reference(path: str | Path, rows: TextRows, label_names: Sequence[str], max_length: int = TrainConfig.max_length,
                   batch_size: int = TrainConfig.eval_batch_size, threads: int | None = None, progress: bool = False) -> list[int]:
    """Another model's predicted class for each row: from a predictions JSONL written by :func:`predict_file`
    on the same file (``label_id`` per line, in order), or by running a model folder now."""
    path = Path(path)
    if path.is_dir():
        other = load_predictor(path, max_length, threads)
        if other.label_names != list(label_names):
            raise ConfigError(f"--reference {path}: its labels ({', '.join(other.label_names)}) differ from the "
                              f"model's ({', '.join(label_names)})")
        return other.logits(rows.texts, batch_size, progress).argmax(-1).tolist()
    if not path.is_file():
        raise DataError(f"--reference {path}: no such file or model folder")
    pred: list[int] = []
    for line, obj in iter_json_lines(path, path.read_text(encoding="utf-8")):
        value = obj.get("label_id")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(label_names):
            raise DataError(f"{path}, line {line}: 'label_id' must be a class index 0..{len(label_names) - 1}")
        if "text" in obj and len(pred) < len(rows) and obj["text"] != rows.texts[len(pred)]:
            raise DataError(f"{path}, line {line}: its text differs from row {len(pred) + 1} of {rows.path} "
                            "(predictions of another file?)")
        pred.append(value)
    if len(pred) != len(rows):
        raise DataError(f"{path}: {len(pred)} predictions for the {len(rows)} rows of {rows.path}")
    return pred


def summary_file(out: str | Path) -> Path:
    """``preds.jsonl`` -> ``preds.summary.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".summary.json")


def predict_file(model: str | Path, data: str | Path, out: str | Path, *, text_column: str | None = None,
                 label_column: str | None = None, encoding: str = "utf-8", batch_size: int = TrainConfig.eval_batch_size,
                 max_length: int = TrainConfig.max_length, threads: int | None = None, reference: str | Path | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Predict every row of a CSV/TSV/JSONL file and write one JSON line per row (label, its index, the
    probability of each class, the gold label when the file has one) and a summary beside it: rows,
    seconds, and with labels accuracy / macro-F1 / MCC, with ``reference`` agreement with that model."""
    if batch_size < 1 or max_length < 2:
        raise ConfigError("--batch-size must be >= 1 and --max-length >= 2")
    out = Path(out)
    if out.suffix.lower() != ".jsonl":
        raise ConfigError(f"--out {out}: predictions are written as JSONL (name it .jsonl)")
    check_output(out, inputs=[data, reference])
    check_output(summary_file(out), inputs=[data, reference], flag="--out (its summary)")
    predictor = load_predictor(model, max_length, threads)
    rows = read_texts(data, predictor.label_names, text_column, label_column, encoding)
    ref = None  # read (or predicted) first: a bad reference fails before the long run, never reads our output
    if reference is not None:
        ref = read_reference(reference, rows, predictor.label_names, max_length, batch_size, threads, progress)
    start = time.perf_counter()
    probs = predictor.probabilities(rows.texts, batch_size, progress)
    seconds = time.perf_counter() - start
    pred = probs.argmax(-1).tolist()
    names = predictor.label_names
    lines = []
    for i, (text, p, y) in enumerate(zip(rows.texts, probs, pred)):
        row = {"line": rows.lines[i], "text": text, "label": names[y], "label_id": y,
               "probabilities": {n: round(float(v), 6) for n, v in zip(names, p)}}
        if rows.labels is not None:
            row["gold"] = names[rows.labels[i]]
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    atomic_write_text(out, "".join(lines))
    summary: dict[str, Any] = {
        "model": str(model), "backend": predictor.backend, "precision": predictor.precision, "data": str(data),
        "rows": len(rows), "seconds": seconds, "rows_per_second": len(rows) / seconds if seconds > 0 else None,
        "batch_size": batch_size, "max_length": max_length, "threads": threads or torch.get_num_threads(),
        "label_names": names, "predicted_counts": {n: pred.count(i) for i, n in enumerate(names)},
        "metrics": None, "reference": str(reference) if reference is not None else None, "agreement": None,
    }
    if ref is not None:
        summary["agreement"] = agreement(pred, ref)
    if rows.labels is not None:
        summary["metrics"] = classification_metrics(rows.labels, pred, len(names), ref)
    atomic_write_json(summary_file(out), summary)
    return summary
