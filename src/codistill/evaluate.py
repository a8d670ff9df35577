"""Metrics on a split: accuracy, macro-F1, MCC, and teacher-student agreement (fidelity)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Callable, Sequence

import torch

from codistill.config import TrainConfig

if TYPE_CHECKING:
    import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> list[list[int]]:
    """``m[i][j]`` = number of examples of true class i predicted as j."""
    m = [[0] * num_classes for _ in range(num_classes)]
    for t, p in zip(y_true, y_pred):
        m[t][p] += 1
    return m


def accuracy(y_true: Sequence[int], y_pred: Sequence[int]) -> float:
    if not y_true:
        return float("nan")
    return sum(int(t == p) for t, p in zip(y_true, y_pred)) / len(y_true)


def macro_f1(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class never true nor predicted scores 0."""
    m = confusion_matrix(y_true, y_pred, num_classes)
    scores = []
    for c in range(num_classes):
        tp = m[c][c]
        fp = sum(m[r][c] for r in range(num_classes)) - tp
        fn = sum(m[c]) - tp
        denom = 2 * tp + fp + fn
        scores.append(2 * tp / denom if denom else 0.0)
    return sum(scores) / num_classes


def mcc(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> float:
    """Matthews correlation coefficient, multi-class form (Gorodkin 2004):
    (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)); 0 when undefined."""
    m = confusion_matrix(y_true, y_pred, num_classes)
    s = len(y_true)
    c = sum(m[k][k] for k in range(num_classes))
    t = [sum(m[k]) for k in range(num_classes)]
    p = [sum(m[r][k] for r in range(num_classes)) for k in range(num_classes)]
    denom = math.sqrt((s * s - sum(x * x for x in p)) * (s * s - sum(x * x for x in t)))
    return (c * s - sum(pk * tk for pk, tk in zip(p, t))) / denom if denom else 0.0


def agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Share of examples on which two classifiers predict the same class (fidelity)."""
    return accuracy(list(a), list(b))


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int,
                           reference_pred: Sequence[int] | None = None) -> dict[str, float]:
    """Accuracy, macro-F1, MCC and, given the teacher's predictions, agreement with them."""
    out = {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": macro_f1(y_true, y_pred, num_classes),
        "mcc": mcc(y_true, y_pred, num_classes),
        "n": len(y_true),
    }
    if reference_pred is not None:
        out["agreement"] = agreement(y_pred, reference_pred)
    return out


def reference_protocol(curve: Sequence[dict[str, float]], final: float | None = None) -> dict[str, float] | None:
    """The figure the CoD paper's code reports, from a validation curve (:attr:`TrainSummary.curve`): the
    best validation accuracy over the evaluations made along training (the first step that reaches it), with
    the agreement there. It is chosen and scored on the same rows, so it is optimistic; beside it, the
    validation accuracy of the weights the run keeps (``final``; default the last evaluation, the final
    weights) and the difference, the selection bias. ``None`` for an empty curve."""
    if not curve:
        return None
    best = max(curve, key=lambda point: point["validation_accuracy"])  # the first of equal maxima
    kept = curve[-1]["validation_accuracy"] if final is None else final
    return {"validation_accuracy": best["validation_accuracy"], "validation_agreement": best.get("validation_agreement"),
            "step": best["step"], "epoch": best["epoch"], "evaluations": len(curve),
            "final_validation_accuracy": kept, "selection_bias": best["validation_accuracy"] - kept}


def batched_logits(texts: Sequence[str], forward: Callable[[list[str]], "np.ndarray | torch.Tensor"],
                   num_labels: int, batch_size: int = TrainConfig.eval_batch_size, progress: bool = False, desc: str = "predict") -> torch.Tensor:
    """Logits ``(N, C)`` of ``texts`` from ``forward`` (a batch of texts -> its logits), any backend: texts
    are sorted by length so each batch pads little, and the result is put back in the input order."""
    from tqdm.auto import tqdm

    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.empty(len(texts), num_labels)
    with tqdm(total=len(texts), desc=desc, disable=not progress, leave=False, unit="text") as bar:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            out[idx] = torch.as_tensor(forward([texts[i] for i in idx])).float().cpu()
            bar.update(len(idx))
    return out


@torch.no_grad()
def predict_logits(model, tokenizer, texts: Sequence[str], batch_size: int = TrainConfig.eval_batch_size, max_length: int = TrainConfig.max_length,
                   device: torch.device | str | None = None, progress: bool = False, desc: str = "predict") -> torch.Tensor:
    """Logits ``(N, C)`` of a PyTorch classifier for ``texts``, in eval mode, batched (:func:`batched_logits`)."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()

    def forward(batch: list[str]) -> torch.Tensor:
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt").to(device)
        return model(**enc).logits

    try:
        return batched_logits(texts, forward, model.config.num_labels, batch_size, progress, desc)
    finally:
        model.train(was_training)


def evaluate_texts(model, tokenizer, texts: Sequence[str], labels: Sequence[int], num_classes: int,
                   reference_pred: Sequence[int] | None = None, **predict_kwargs) -> tuple[dict[str, float], list[int]]:
    """Predict ``texts`` and score them; returns the metrics and the predictions."""
    pred = predict_logits(model, tokenizer, texts, **predict_kwargs).argmax(-1).tolist()
    return classification_metrics(list(labels), pred, num_classes, reference_pred), pred


def evaluate_split(clf, data, num_classes: int, batch_size: int = TrainConfig.eval_batch_size, max_length: int = TrainConfig.max_length,
                   reference_pred: Sequence[int] | None = None, progress: bool = True) -> tuple[dict[str, float], list[int]]:
    """Metrics of classifier ``clf`` (a :class:`~codistill.models.Classifier`) on ``data`` (a
    :class:`~codistill.data.LabeledTexts`), agreement with ``reference_pred``, and its predictions."""
    device = next(clf.model.parameters()).device
    return evaluate_texts(clf.model, clf.tokenizer, data.texts, data.labels, num_classes, reference_pred,
                          batch_size=batch_size, max_length=max_length, device=device, progress=progress,
                          desc="evaluate")
