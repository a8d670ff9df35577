"""The trainer: one loop for teacher fine-tuning and every distillation method (methods are loss
configurations), with the frozen teacher's outputs computed once per training text and cached.

Flow of :func:`distill`: check every input -> k-shot sample (+ counterfactual rows) -> student -> teacher
cache -> [TED stage 1: filters] -> training loop -> test metrics -> files written atomically.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from codistill.config import DistillConfig, LayerMatch, StudentConfig, TrainConfig
from codistill.data import LabeledTexts, TextDataset, iter_json_lines, sample_from, stratified_subset
from codistill.errors import ConfigError, DataError
from codistill.evaluate import classification_metrics, predict_logits
from codistill.fileio import atomic_write_json, atomic_write_text
from codistill.losses import Projections, TaskFilters, ce_loss, kd_loss, lwd_loss, ted_loss
from codistill.models import (
    Classifier,
    check_layer_map,
    load_classifier,
    make_student,
    same_tokenizer,
    uniform_layer_map,
)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices)."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


# -- tokenized examples and the teacher cache ----------------------------------------------------------


@dataclass
class Encoded:
    """Texts tokenized once, unpadded: one dict of token lists per text."""

    features: list[dict[str, list[int]]]
    truncated: int

    def __len__(self) -> int:
        return len(self.features)


def encode(tokenizer, texts: Sequence[str], max_length: int) -> Encoded:
    """Tokenize without padding, truncating at ``max_length``; counts how many texts were truncated."""
    full = tokenizer(list(texts), truncation=False)["input_ids"]
    truncated = sum(len(ids) > max_length for ids in full)
    enc = tokenizer(list(texts), truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    features = [{k: enc[k][i] for k in keys} for i in range(len(texts))]
    return Encoded(features, truncated)


def collate(tokenizer, encoded: Encoded, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Pad the examples ``indices`` into one batch (the tokenizer's own padding side)."""
    return dict(tokenizer.pad([encoded.features[i] for i in indices], return_tensors="pt"))


@dataclass
class TeacherCache:
    """The frozen teacher's outputs on every training text, computed once.

    Attributes:
        logits: ``(N, C)``.
        hidden: teacher layer index -> per-example ``(T_i, D_T)`` states of the real tokens only.
    """

    logits: torch.Tensor
    hidden: dict[int, list[torch.Tensor]] = field(default_factory=dict)

    def batch_hidden(self, layer: int, indices: Sequence[int], mask: torch.Tensor, left_padded: bool) -> torch.Tensor:
        """Pad the cached states of ``indices`` to the batch's ``(B, T, D_T)`` layout given its mask."""
        rows = [self.hidden[layer][i] for i in indices]
        out = torch.zeros(len(rows), mask.shape[1], rows[0].shape[-1], dtype=rows[0].dtype)
        for b, row in enumerate(rows):
            n = row.shape[0]
            if int(mask[b].sum()) != n:
                raise RuntimeError("teacher cache and student batch disagree on a text's length")
            if left_padded:
                out[b, mask.shape[1] - n:] = row
            else:
                out[b, :n] = row
        return out


@torch.no_grad()
def teacher_forward(teacher: nn.Module, batch: dict[str, torch.Tensor], layers: Sequence[int]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Logits ``(B, C)`` and the hidden states of ``layers`` ``(B, T, D_T)`` for one padded batch."""
    out = teacher(**batch, output_hidden_states=bool(layers))
    hidden = [out.hidden_states[layer] for layer in layers] if layers else []
    return out.logits.float(), [h.float() for h in hidden]


@torch.no_grad()
def build_teacher_cache(teacher: Classifier, encoded: Encoded, layers: Sequence[int], batch_size: int = 64,
                        progress: bool = False) -> TeacherCache:
    """Run the teacher (eval mode) once over all training texts; keep logits and the requested layers."""
    from tqdm.auto import tqdm

    model = teacher.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits = torch.empty(len(encoded), model.config.num_labels)
    hidden: dict[int, list[torch.Tensor]] = {layer: [None] * len(encoded) for layer in layers}  # type: ignore[list-item]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.features[i]["input_ids"]))
    for start in tqdm(range(0, len(order), batch_size), desc="teacher cache", disable=not progress, leave=False):
        idx = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate(teacher.tokenizer, encoded, idx).items()}
        z, hs = teacher_forward(model, batch, layers)
        logits[idx] = z.cpu()
        mask = batch["attention_mask"].bool().cpu()
        for layer, h in zip(layers, hs):
            h = h.cpu()
            for b, i in enumerate(idx):
                hidden[layer][i] = h[b][mask[b]].clone()
    model.train(was_training)
    return TeacherCache(logits=logits, hidden=hidden)


def teacher_layers_of(pairs: Sequence[LayerMatch]) -> list[int]:
    """The teacher layers a layer map needs, in the order the cache hands them to a batch."""
    return sorted({m.layer_T for m in pairs})


# -- the module that is trained -----------------------------------------------------------------------


class DistillModule(nn.Module):
    """Everything that trains, in one module (so one optimizer and one ``accelerate.prepare``): the
    student, the LWD projections or TED filters. ``forward`` returns the loss and its parts.

    ``teacher_filters`` (TED) are frozen here: they map cached teacher states to filtered targets.
    """

    def __init__(self, student: nn.Module, cfg: DistillConfig, pairs: Sequence[LayerMatch],
                 projections: Projections | None = None, student_filters: TaskFilters | None = None,
                 teacher_filters: TaskFilters | None = None) -> None:
        super().__init__()
        self.student = student
        self.cfg = cfg
        self.pairs = list(pairs)
        self.teacher_layers = teacher_layers_of(pairs)
        self.projections = projections
        self.student_filters = student_filters
        self.teacher_filters = teacher_filters
        if teacher_filters is not None:
            teacher_filters.requires_grad_(False)

    def forward(self, batch: dict[str, torch.Tensor], labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                teacher_hidden: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        out = self.student(**batch, output_hidden_states=cfg.uses_hidden_states)
        logits = out.logits.float()
        parts = {"ce": ce_loss(logits, labels)}
        if cfg.uses_teacher and cfg.alpha > 0:
            parts["kd"] = cfg.alpha * kd_loss(logits, teacher_logits, cfg.temperature)
        mask = batch["attention_mask"]
        if cfg.method == "lwd":
            hs = [h.float() for h in out.hidden_states]
            by_layer = dict(zip(self.teacher_layers, teacher_hidden))
            triples = [(m.layer_S, m.layer_T, m.weight) for m in self.pairs]
            parts["lwd"] = cfg.beta * lwd_loss(hs, by_layer, mask, triples, self.projections)
        elif cfg.method == "ted":
            hs = [h.float() for h in out.hidden_states]
            student_f = self.student_filters.filtered(hs)
            with torch.no_grad():
                teacher_f = self.teacher_filters.filtered(dict(zip(self.teacher_layers, teacher_hidden)))
            parts["ted"] = cfg.beta * ted_loss(student_f, teacher_f, mask, [m.weight for m in self.pairs])
        parts["loss"] = sum(parts.values())
        return parts


class FilterStage(nn.Module):
    """TED stage 1: train task-aware filters on the frozen teacher's cached states and on the frozen
    student's states, each with its own task head and the task loss (CE on the training labels)."""

    def __init__(self, student: nn.Module, student_filters: TaskFilters, teacher_filters: TaskFilters) -> None:
        super().__init__()
        self.student = student
        self.student_filters = student_filters
        self.teacher_filters = teacher_filters

    def forward(self, batch: dict[str, torch.Tensor], labels: torch.Tensor, teacher_logits=None,
                teacher_hidden: Sequence[torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        self.student.eval()  # frozen here: no dropout either
        with torch.no_grad():
            hs = [h.float() for h in self.student(**batch, output_hidden_states=True).hidden_states]
        mask = batch["attention_mask"]
        teacher_by_layer = dict(zip(sorted(set(self.teacher_filters.layers)), teacher_hidden))
        parts = {
            "student_filters": self.student_filters.task_loss(hs, mask, labels),
            "teacher_filters": self.teacher_filters.task_loss(teacher_by_layer, mask, labels),
        }
        parts["loss"] = parts["student_filters"] + parts["teacher_filters"]
        return parts


# -- the loop -------------------------------------------------------------------------------------------


def plan_steps(n_examples: int, cfg: TrainConfig, epochs: int | None = None) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps): ``epochs`` passes, at least ``min_steps``, at most ``max_steps``."""
    per_epoch = max(1, math.ceil(n_examples / (cfg.batch_size * cfg.grad_accum)))
    total = max(per_epoch * (epochs if epochs is not None else cfg.epochs), cfg.min_steps)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return per_epoch, total


def _batches(n: int, batch_size: int, seed: int) -> Any:
    """Endless minibatch indices: each epoch a fresh permutation from a generator seeded by ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    epoch = 0
    while True:
        perm = torch.randperm(n, generator=gen).tolist()
        for start in range(0, n, batch_size):
            yield epoch, perm[start:start + batch_size]
        epoch += 1


def _param_groups(module: nn.Module, student: nn.Module, cfg: TrainConfig) -> list[dict]:
    """AdamW groups: student weights (decayed), student biases/LayerNorms (not decayed), extras at head_lr."""
    student_ids = {id(p) for p in student.parameters()}
    decay, no_decay, extra = [], [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) not in student_ids:
            extra.append(p)
        elif p.ndim < 2 or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
        {"params": extra, "lr": cfg.head_lr or cfg.lr, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def make_accelerator(cfg: TrainConfig):
    """An ``accelerate.Accelerator``: CPU when there is no GPU; mixed precision on a GPU when ``auto``."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = torch.cuda.is_available()
    mp = cfg.mixed_precision
    if mp == "auto":
        mp = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "no"
    return Accelerator(mixed_precision=mp, cpu=not cuda,
                       kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


@dataclass
class FitResult:
    steps: int
    epochs: float
    seconds: float
    examples_per_second: float
    log: list[dict[str, float]]
    selected: dict[str, Any] | None = None


def fit(module: nn.Module, student: Classifier, encoded: Encoded, labels: Sequence[int], cfg: TrainConfig, *,
        cache: TeacherCache | None = None, teacher_layers: Sequence[int] = (), epochs: int | None = None,
        lr_override: float | None = None, validate: Callable[[], float] | None = None, accelerator=None,
        progress: bool = True, desc: str = "train") -> FitResult:
    """Train ``module`` (a :class:`DistillModule` or :class:`FilterStage`) for the planned budget.

    Each step takes ``grad_accum`` minibatches; the teacher's outputs come from ``cache`` (indexed by the
    examples' positions). With ``validate`` (a function returning validation accuracy), the student is
    evaluated after every epoch and the best epoch's weights are restored at the end (``select_on=
    validation``); the test split is never seen here.
    """
    from tqdm.auto import tqdm

    accelerator = accelerator or make_accelerator(cfg)
    groups = _param_groups(module, student.model, cfg)
    if lr_override is not None:
        for g in groups:
            g["lr"] = lr_override
    optimizer = torch.optim.AdamW(groups)
    per_epoch, total = plan_steps(len(encoded), cfg, epochs)
    warmup = int(total * cfg.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / (warmup + 1) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    module, optimizer = accelerator.prepare(module, optimizer)
    device = accelerator.device
    labels_t = torch.tensor(list(labels), dtype=torch.long)
    left = getattr(student.tokenizer, "padding_side", "right") == "left"
    rank, world = accelerator.process_index, accelerator.num_processes
    batches = _batches(len(encoded), cfg.batch_size * world, cfg.seed)
    log: list[dict[str, float]] = []
    best: tuple[float, int, dict] | None = None
    module.train()
    start = time.perf_counter()
    seen = 0
    bar = tqdm(range(total), desc=desc, disable=not (progress and accelerator.is_local_main_process), leave=False)
    for step in bar:
        sums: dict[str, float] = {}
        for _ in range(cfg.grad_accum):
            epoch, idx = next(batches)
            idx = idx[rank::world] or idx[:1]
            batch = {k: v.to(device) for k, v in collate(student.tokenizer, encoded, idx).items()}
            t_logits = cache.logits[idx].to(device) if cache is not None else None
            t_hidden = [cache.batch_hidden(layer, idx, batch["attention_mask"].cpu(), left).to(device)
                        for layer in teacher_layers] if cache is not None and teacher_layers else None
            with accelerator.autocast():
                parts = module(batch, labels_t[idx].to(device), t_logits, t_hidden)
            accelerator.backward(parts["loss"] / cfg.grad_accum)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / cfg.grad_accum
            seen += len(idx) * world
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(module.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step + 1, "epoch": round(seen / len(encoded), 4), "lr": scheduler.get_last_lr()[0], **sums}
        bar.set_postfix(loss=f"{sums['loss']:.4f}")
        end_of_epoch = (step + 1) % per_epoch == 0 or step + 1 == total
        if validate is not None and end_of_epoch:
            module.eval()
            score = validate()
            module.train()
            row["validation_accuracy"] = score
            if best is None or score > best[0]:
                best = (score, step + 1, copy.deepcopy(student.model.state_dict()))
        log.append(row)
    seconds = time.perf_counter() - start
    bar.close()
    selected = None
    if best is not None:
        student.model.load_state_dict(best[2])
        selected = {"on": "validation", "validation_accuracy": best[0], "step": best[1]}
    module.eval()
    return FitResult(steps=total, epochs=seen / len(encoded), seconds=seconds,
                     examples_per_second=seen / max(seconds, 1e-9), log=log, selected=selected)


# -- counterfactual rows --------------------------------------------------------------------------------


def _label_index(label: Any, label_names: Sequence[str], where: str) -> int:
    """A class index from an index or a class name; anything else is an error naming ``where``."""
    if isinstance(label, str) and label in label_names:
        return list(label_names).index(label)
    if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(label_names):
        raise DataError(f"{where}: label {label!r} is not in the label set ({', '.join(label_names)})")
    return label


def read_extra_examples(path: str | Path, label_names: Sequence[str]) -> tuple[LabeledTexts, dict[str, int]]:
    """Training rows to add to the k-shot sample, from a JSONL file.

    Each line is either ``{"text", "label"}`` or a counterfactual row ``{"counterfactual", "target_label",
    "flipped", "use", ...}`` as written by ``codistill counterfactuals``. A row is skipped when its ``use``
    is false, or, without ``use``, when ``flipped`` is false (a counterfactual counts only if the teacher
    predicts its target). Labels are indices or class names.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    texts, labels = [], []
    skipped = 0
    for line_no, row in iter_json_lines(path, path.read_text(encoding="utf-8")):
        if not row.get("use", row.get("flipped", True)):
            skipped += 1
            continue
        text = row.get("counterfactual", row.get("text"))
        label = row.get("target_label", row.get("label"))
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{path}, line {line_no}: missing or empty 'text'/'counterfactual'")
        texts.append(text.strip())
        labels.append(_label_index(label, label_names, f"{path}, line {line_no}"))
    return LabeledTexts(texts, labels), {"added": len(texts), "skipped_not_flipped": skipped}


COD_MODES = ("replace", "augment")


def cod_counterfactuals(path: str | Path, sample, label_names: Sequence[str]) -> tuple[LabeledTexts, dict[str, int]]:
    """The counterfactual rows of ``path`` that belong to the originals of ``sample`` (matched by their row
    in the pool and checked by text), in the sample's order. A file generated for a larger k of the same
    seed covers every smaller k, since samples are nested; a file for another seed or dataset is refused."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    by_index: dict[int, tuple[int, dict]] = {}
    for line_no, row in iter_json_lines(path, path.read_text(encoding="utf-8")):
        if "pool_index" not in row or "text" not in row:
            raise DataError(f"{path}, line {line_no}: not a counterfactual row (needs pool_index and text; "
                            "write it with `codistill counterfactuals`)")
        by_index[int(row["pool_index"])] = (line_no, row)
    texts, labels = [], []
    skipped = 0
    for idx, original in zip(sample.indices, sample.texts):
        if idx not in by_index:
            raise DataError(f"{path}: no counterfactual for training row {idx} of the k={sample.k}, seed={sample.seed} "
                            "sample (generated for a smaller k or another seed?)")
        line_no, row = by_index[idx]
        if row["text"] != original:
            raise DataError(f"{path}, line {line_no}: its original differs from training row {idx} (another dataset?)")
        if not row.get("use", row.get("flipped", False)) or not row.get("counterfactual"):
            skipped += 1
            continue
        texts.append(row["counterfactual"])
        labels.append(_label_index(row["target_label"], label_names, f"{path}, line {line_no}"))
    return LabeledTexts(texts, labels), {"added": len(texts), "skipped_not_flipped": skipped}


# -- top level -----------------------------------------------------------------------------------------


def _check_inputs(teacher: Classifier | None, student: Classifier, dataset: TextDataset, dcfg: DistillConfig,
                  layer_map: Sequence[LayerMatch]) -> None:
    if teacher is not None and teacher.model.config.num_labels != dataset.num_classes:
        raise ConfigError(
            f"the teacher has {teacher.model.config.num_labels} labels but dataset '{dataset.name}' has "
            f"{dataset.num_classes} ({', '.join(dataset.label_names)})"
        )
    if teacher is not None:
        names = [str(teacher.model.config.id2label[i]) for i in range(teacher.model.config.num_labels)]
        generic = all(n == f"LABEL_{i}" for i, n in enumerate(names))
        if not generic and names != list(dataset.label_names):
            raise ConfigError(f"the teacher's labels ({', '.join(names)}) differ from the dataset's "
                              f"({', '.join(dataset.label_names)}); pass --labels in the teacher's order")
    if student.model.config.num_labels != dataset.num_classes:
        raise ConfigError(f"the student has {student.model.config.num_labels} labels but the dataset has {dataset.num_classes}")
    if dcfg.uses_hidden_states:
        if not same_tokenizer(teacher.tokenizer, student.tokenizer):
            raise ConfigError(
                f"method '{dcfg.method}' matches hidden states token by token, so teacher and student need the "
                "same tokenizer; these differ (use kd, or a student from the teacher's family)"
            )
        check_layer_map(layer_map, student.num_layers, teacher.num_layers)


def _pairs_for(dcfg: DistillConfig, student: Classifier, teacher: Classifier | None) -> list[LayerMatch]:
    if not dcfg.uses_hidden_states or teacher is None:
        return []
    return list(dcfg.layer_map or uniform_layer_map(student.num_layers, teacher.num_layers, dcfg.include_embeddings))


def train_classifier(student: Classifier, train: LabeledTexts, dcfg: DistillConfig, tcfg: TrainConfig, *,
                     teacher: Classifier | None = None, validation: LabeledTexts | None = None,
                     num_classes: int, progress: bool = True) -> dict[str, Any]:
    """Train ``student`` on ``train`` with the method of ``dcfg`` (teacher frozen and cached). In place.

    Returns a summary: steps, epochs, time, throughput, teacher-cache time, truncated texts, trainable
    parameter counts and the training log.
    """
    accelerator = make_accelerator(tcfg)
    device = accelerator.device
    student.model.to(device)
    pairs = _pairs_for(dcfg, student, teacher)
    t_layers = teacher_layers_of(pairs)
    encoded = encode(student.tokenizer, train.texts, tcfg.max_length)
    cache, cache_seconds = None, 0.0
    if dcfg.uses_teacher:
        teacher.model.to(device)
        teacher.model.requires_grad_(False)
        t0 = time.perf_counter()
        t_encoded = encoded if same_tokenizer(teacher.tokenizer, student.tokenizer) else \
            encode(teacher.tokenizer, train.texts, tcfg.max_length)
        cache = build_teacher_cache(teacher, t_encoded, t_layers, tcfg.eval_batch_size, progress)
        cache_seconds = time.perf_counter() - t0
    projections = student_filters = teacher_filters = None
    summary: dict[str, Any] = {"truncated_texts": encoded.truncated, "teacher_cache_seconds": cache_seconds,
                               "layer_map": [asdict(m) for m in pairs]}
    if dcfg.method == "lwd":
        projections = Projections(len(pairs), student.hidden_size, teacher.hidden_size).to(device)
    if dcfg.method == "ted":
        dim = dcfg.ted_filter_dim or teacher.hidden_size
        student_filters = TaskFilters([m.layer_S for m in pairs], student.hidden_size, dim, num_classes).to(device)
        teacher_filters = TaskFilters([m.layer_T for m in pairs], teacher.hidden_size, dim, num_classes).to(device)
        stage1 = FilterStage(student.model, student_filters, teacher_filters)
        trainable = [p for p in student.model.parameters() if p.requires_grad]
        student.model.requires_grad_(False)
        r1 = fit(stage1, student, encoded, train.labels, tcfg, cache=cache, teacher_layers=t_layers,
                 epochs=dcfg.ted_filter_epochs, lr_override=tcfg.head_lr or tcfg.lr, progress=progress,
                 desc="TED stage 1: filters", accelerator=accelerator)
        for p in trainable:
            p.requires_grad_(True)
        summary["ted_stage1"] = {"steps": r1.steps, "seconds": r1.seconds,
                                 "final_filter_loss": r1.log[-1]["loss"] if r1.log else None}
    module = DistillModule(student.model, dcfg, pairs, projections, student_filters, teacher_filters)
    validate = None
    if tcfg.select_on == "validation":
        if validation is None or not len(validation):
            raise ConfigError("select_on='validation' needs a validation split")

        def validate() -> float:
            logits = predict_logits(student.model, student.tokenizer, validation.texts, tcfg.eval_batch_size,
                                    tcfg.max_length, device)
            return classification_metrics(validation.labels, logits.argmax(-1).tolist(), num_classes)["accuracy"]

    result = fit(module, student, encoded, train.labels, tcfg, cache=cache, teacher_layers=t_layers,
                 validate=validate, progress=progress, desc=f"{dcfg.method}", accelerator=accelerator)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    extra = trainable - sum(p.numel() for p in student.model.parameters() if p.requires_grad)
    summary.update({
        "steps": result.steps, "epochs": round(result.epochs, 3), "train_seconds": result.seconds,
        "examples_per_second": result.examples_per_second, "extra_trainable_parameters": extra,
        "selected": result.selected, "log": result.log,
    })
    return summary


def _environment() -> dict[str, Any]:
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "device": "cuda:" + torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
            "threads": torch.get_num_threads()}


def evaluate_split(clf: Classifier, data: LabeledTexts, num_classes: int, tcfg: TrainConfig,
                   reference_pred: Sequence[int] | None = None, progress: bool = True) -> tuple[dict[str, float], list[int]]:
    """Metrics of ``clf`` on ``data`` (and agreement with ``reference_pred``), plus its predictions."""
    device = next(clf.model.parameters()).device
    pred = predict_logits(clf.model, clf.tokenizer, data.texts, tcfg.eval_batch_size, tcfg.max_length, device,
                          progress=progress, desc="evaluate").argmax(-1).tolist()
    return classification_metrics(data.labels, pred, num_classes, reference_pred), pred


def _write_run(out: Path, model: Classifier | None, metrics: dict, config: dict, log: list[dict]) -> None:
    """Write the model (``save_pretrained``: the folder loads with ``transformers.pipeline``), the resolved
    run config, the log, and ``metrics.json`` last: its presence means the run is complete."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").unlink(missing_ok=True)
    if model is not None:
        model.model.save_pretrained(out)
        model.tokenizer.save_pretrained(out)
    atomic_write_json(out / "run_config.json", config)
    atomic_write_text(out / "train_log.jsonl", "".join(json.dumps(r) + "\n" for r in log))
    atomic_write_json(out / "metrics.json", metrics)


def distill(dataset: TextDataset, teacher_dir: str | Path | None, out_dir: str | Path, *, k: int, seed: int = 0,
            student: StudentConfig | None = None, method: DistillConfig | None = None,
            train: TrainConfig | None = None, counterfactuals: str | Path | None = None,
            cod: str | None = None, teacher_test: tuple[dict, list[int]] | None = None,
            save_model: bool = True, progress: bool = True) -> dict[str, Any]:
    """Distill the teacher in ``teacher_dir`` into a student trained on the k-shot sample of ``dataset``
    (plus counterfactuals), evaluate on the test split and write the run to ``out_dir``: the student
    (``save_pretrained``), ``metrics.json``, ``run_config.json`` (resolved) and ``train_log.jsonl``.

    Counterfactuals: with ``cod=None`` every usable row of ``counterfactuals`` is added to the k originals.
    With ``cod="replace"`` (CoD at budget k) the student sees the k/2 nested originals plus their verified
    counterfactuals; with ``cod="augment"`` all k originals plus counterfactuals of all k (a larger set,
    reported as such). Both take the rows of a ``codistill counterfactuals`` file that belong to the sample.

    Every input is checked before training starts. ``finetune`` needs no teacher (agreement is then
    reported only when a teacher is given). ``teacher_test`` = (metrics, predictions) of the teacher on the
    test split, when the caller already has them (a grid computes them once). ``save_model=False`` skips
    writing the student's weights. Returns the metrics.
    """
    scfg = student or StudentConfig()
    dcfg = method or DistillConfig()
    tcfg = train or TrainConfig()
    if tcfg.seed != seed:
        tcfg = TrainConfig(**{**asdict(tcfg), "seed": seed})
    test = dataset.split("test")
    teacher = None
    if teacher_dir is not None:
        teacher = load_classifier(str(teacher_dir), what="teacher")
        teacher.model.requires_grad_(False)
    elif dcfg.uses_teacher or scfg.init == "teacher":
        raise ConfigError(f"method '{dcfg.method}' needs a teacher (--teacher DIR)")
    if cod is not None:
        if cod not in COD_MODES:
            raise ConfigError(f"cod mode must be one of {', '.join(COD_MODES)}, got '{cod}'")
        if counterfactuals is None:
            raise ConfigError("CoD needs a counterfactual file (--counterfactuals, from `codistill counterfactuals`)")
        if cod == "replace" and (k % 2 or (k // 2) % dataset.num_classes):
            raise ConfigError(f"k={k}: CoD keeps k/2 originals, so k/2 must be divisible by {dataset.num_classes}")
    sample = sample_from(dataset, k // 2 if cod == "replace" else k, seed)
    train_rows = sample.as_split()
    cf_info = {"added": 0}
    if counterfactuals is not None:
        if cod is None:
            extra, cf_info = read_extra_examples(counterfactuals, dataset.label_names)
        else:
            extra, cf_info = cod_counterfactuals(counterfactuals, sample, dataset.label_names)
        train_rows = LabeledTexts(train_rows.texts + extra.texts, train_rows.labels + extra.labels)
    seed_everything(seed)
    stu, student_info = make_student(scfg.model, scfg.layers, scfg.init, dataset.label_names, teacher,
                                     scfg.freeze_embeddings)
    pairs = _pairs_for(dcfg, stu, teacher)
    _check_inputs(teacher, stu, dataset, dcfg, pairs)
    t0 = time.perf_counter()
    summary = train_classifier(stu, train_rows, dcfg, tcfg, teacher=teacher, validation=dataset.splits.get("validation"),
                               num_classes=dataset.num_classes, progress=progress)
    teacher_metrics, teacher_pred = teacher_test if teacher_test is not None else (None, None)
    if teacher is not None and teacher_test is None:
        teacher_metrics, teacher_pred = evaluate_split(teacher, test, dataset.num_classes, tcfg, progress=progress)
    test_metrics, _ = evaluate_split(stu, test, dataset.num_classes, tcfg, teacher_pred, progress=progress)
    log = summary.pop("log")
    metrics = {
        "dataset": dataset.name, "method": dcfg.method, "k": k, "seed": seed,
        "cod": cod or ("extra" if cf_info["added"] else None), "n_train": len(train_rows), "n_originals": len(sample.texts),
        "n_counterfactuals": cf_info["added"], "counterfactuals_skipped": cf_info.get("skipped_not_flipped", 0),
        "test": test_metrics, "teacher_test": teacher_metrics,
        "student_parameters": student_info["parameters"],
        "teacher_parameters": teacher.num_parameters() if teacher is not None else None,
        "wall_seconds": time.perf_counter() - t0, **summary,
    }
    config = {
        "dataset": {"name": dataset.name, "source": dataset.source, "label_names": dataset.label_names,
                    "notes": dataset.notes},
        "teacher": str(teacher_dir) if teacher_dir is not None else None, "k": k, "seed": seed,
        "counterfactuals": str(counterfactuals) if counterfactuals else None, "cod": cod,
        "student": {**asdict(scfg), **student_info}, "method": asdict(dcfg), "train": asdict(tcfg),
        "sample_indices": sample.indices, "environment": _environment(),
    }
    _write_run(Path(out_dir), stu if save_model else None, metrics, config, log)
    return metrics


def texts_fingerprint(texts: Sequence[str]) -> str:
    """SHA-256 of a list of texts: tells whether saved predictions belong to this split."""
    import hashlib

    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8") + b"\0")
    return h.hexdigest()


def train_teacher(dataset: TextDataset, model: str, out_dir: str | Path, *, train: TrainConfig | None = None,
                  max_train: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Fine-tune a teacher on the training split (CE), report validation and test accuracy, and save it
    with ``save_pretrained`` so ``transformers.pipeline("text-classification", out_dir/model)`` loads it.

    ``max_train`` caps the training rows with a stratified, seeded subset (the report says so).
    """
    tcfg = train or TrainConfig(epochs=2, min_steps=0, batch_size=32, lr=5e-5)
    rows = dataset.split("train")
    if max_train is not None and max_train < len(rows):
        rows = stratified_subset(rows, max_train, f"teacher-cap-{tcfg.seed}")
    seed_everything(tcfg.seed)
    clf = load_classifier(model, dataset.label_names, what="teacher model")
    summary = train_classifier(clf, rows, DistillConfig(method="finetune"), tcfg,
                               validation=dataset.splits.get("validation"), num_classes=dataset.num_classes,
                               progress=progress)
    metrics = {"dataset": dataset.name, "model": model, "n_train": len(rows),
               "capped": max_train is not None and len(rows) < len(dataset.split("train")),
               "parameters": clf.num_parameters()}
    test_predictions = None
    for split in ("validation", "test"):
        if split in dataset.splits:
            metrics[split], pred = evaluate_split(clf, dataset.split(split), dataset.num_classes, tcfg,
                                                  progress=progress)
            if split == "test":
                test_predictions = {"dataset": dataset.name, "test_sha256": texts_fingerprint(dataset.split("test").texts),
                                    "n": len(pred), "metrics": metrics["test"], "predictions": pred,
                                    "parameters": metrics["parameters"]}
    log = summary.pop("log")
    if test_predictions is not None:  # a grid reuses them instead of evaluating the teacher again
        atomic_write_json(Path(out_dir) / "test_predictions.json", test_predictions)
    metrics.update(summary)
    config = {"dataset": {"name": dataset.name, "source": dataset.source, "label_names": dataset.label_names},
              "model": model, "train": asdict(tcfg), "max_train": max_train, "environment": _environment()}
    _write_run(Path(out_dir), clf, metrics, config, log)
    return metrics
