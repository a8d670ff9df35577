"""The trainer: one loop for teacher fine-tuning and every distillation method, with the frozen teacher's
outputs computed once per training text and cached. A method is a list of weighted loss terms
(:mod:`codistill.losses`); this file knows no method by name and touches no file.

Read in this order: :func:`encode` / :func:`collate` (tokens), :func:`build_teacher_cache` (the teacher,
once), :class:`DistillModule` (student + terms -> loss parts), :func:`fit` (the loop), and
:func:`train_classifier`, which puts them together.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import torch
from torch import nn

from codistill.config import LossTerm, TrainConfig
from codistill.data import LabeledTexts
from codistill.errors import TrainingDiverged
from codistill.evaluate import classification_metrics, predict_logits
from codistill.losses import StepOutputs, Term, build_terms, masked_mean_pool
from codistill.models import Classifier, head_parameters, same_tokenizer
from codistill.teachers import check_endpoint_terms, is_classifier


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
        pooled: ``(N, D_T)`` sentence embeddings, the mean of the last layer over each text's real tokens
            (when a term matches them), else ``None``.
    """

    logits: torch.Tensor
    hidden: dict[int, list[torch.Tensor]] = field(default_factory=dict)
    pooled: torch.Tensor | None = None

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
def build_teacher_cache(teacher: Classifier, encoded: Encoded, layers: Sequence[int], batch_size: int = TrainConfig.eval_batch_size,
                        progress: bool = False, pooled: bool = False) -> TeacherCache:
    """Run the teacher (eval mode) once over all training texts; keep logits, the requested layers and,
    with ``pooled``, the mean of the last layer over each text's real tokens."""
    from tqdm.auto import tqdm

    model = teacher.model
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    logits = torch.empty(len(encoded), model.config.num_labels)
    hidden: dict[int, list[torch.Tensor]] = {layer: [None] * len(encoded) for layer in layers}  # type: ignore[list-item]
    last = teacher.num_layers
    forward_layers = sorted(set(layers) | ({last} if pooled else set()))
    sentence = torch.empty(len(encoded), teacher.hidden_size) if pooled else None
    order = sorted(range(len(encoded)), key=lambda i: len(encoded.features[i]["input_ids"]))
    for start in tqdm(range(0, len(order), batch_size), desc="teacher cache", disable=not progress, leave=False):
        idx = order[start:start + batch_size]
        batch = {k: v.to(device) for k, v in collate(teacher.tokenizer, encoded, idx).items()}
        z, hs = teacher_forward(model, batch, forward_layers)
        logits[idx] = z.cpu()
        mask = batch["attention_mask"].bool().cpu()
        by_layer = dict(zip(forward_layers, hs))
        if sentence is not None:
            sentence[idx] = masked_mean_pool(by_layer[last].cpu(), mask)
        for layer in layers:
            h = by_layer[layer].cpu()
            for b, i in enumerate(idx):
                hidden[layer][i] = h[b][mask[b]].clone()
    model.train(was_training)
    return TeacherCache(logits=logits, hidden=hidden, pooled=sentence)


# -- the module that is trained -----------------------------------------------------------------------


class DistillModule(nn.Module):
    """Everything that trains, in one module (so one optimizer and one ``accelerate.prepare``): the
    student and its loss terms (with their projections or filters). ``forward`` returns each term's
    weighted value and their sum, ``loss``."""

    def __init__(self, student: nn.Module, terms: Sequence[Term]) -> None:
        super().__init__()
        self.student = student
        self.terms = nn.ModuleList(terms)
        self.teacher_layers = sorted({layer for t in terms for layer in t.teacher_layers})
        self.needs_hidden = any(t.kind.student_hidden for t in terms)

    def forward(self, batch: dict[str, torch.Tensor], labels: torch.Tensor, teacher_logits: torch.Tensor | None = None,
                teacher_hidden: Sequence[torch.Tensor] | None = None,
                teacher_pooled: torch.Tensor | None = None,
                hard: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = self.student(**batch, output_hidden_states=self.needs_hidden)
        step = StepOutputs(labels=labels, mask=batch["attention_mask"], student_logits=out.logits.float(),
                           student_hidden=out.hidden_states if self.needs_hidden else None,
                           teacher_logits=teacher_logits,
                           teacher_hidden=dict(zip(self.teacher_layers, teacher_hidden or [])),
                           teacher_pooled=teacher_pooled, hard=hard)
        parts = {term.name: term(step) for term in self.terms}
        parts["loss"] = sum(parts.values())
        return parts


# -- the loop -------------------------------------------------------------------------------------------


def plan_steps(n_examples: int, cfg: TrainConfig, epochs: int | None = None) -> tuple[int, int]:
    """(optimizer steps per epoch, total steps): ``epochs`` passes, at least ``min_steps``, at most ``max_steps``."""
    per_epoch = max(1, math.ceil(n_examples / (cfg.batch_size * cfg.grad_accum)))
    total = max(per_epoch * (epochs if epochs is not None else cfg.epochs), cfg.min_steps)
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    return per_epoch, total


def evaluation_steps(per_epoch: int, total: int, cfg: TrainConfig) -> list[int]:
    """The optimizer steps after which the student is evaluated on validation: every epoch's end with
    ``select_on='validation'``; ``eval_points`` epoch ends spread evenly (every epoch when there are fewer
    epochs), the last step always among them; none without either."""
    epochs = math.ceil(total / per_epoch)
    ends = [min(e * per_epoch, total) for e in range(1, epochs + 1)]
    chosen = set(ends) if cfg.select_on == "validation" else set()
    if cfg.eval_points:
        n = min(cfg.eval_points, epochs)
        chosen |= {ends[math.ceil(epochs * i / n) - 1] for i in range(1, n + 1)}
    return sorted(chosen)


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
    """AdamW groups: student weights (decayed), student biases/LayerNorms (not decayed), the student's
    classification head at ``classifier_lr`` when set, extras (projections, filters) at ``extras_lr``."""
    student_ids = {id(p) for p in student.parameters()}
    head_ids = {id(p) for p in head_parameters(student)} if cfg.classifier_lr is not None else set()
    decay, no_decay, head, extra = [], [], [], []
    for name, p in module.named_parameters():
        if not p.requires_grad:
            continue
        if id(p) not in student_ids:
            extra.append(p)
        elif id(p) in head_ids:
            head.append(p)
        elif p.ndim < 2 or "norm" in name.lower():
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0},
        {"params": head, "lr": cfg.classifier_lr, "weight_decay": cfg.weight_decay},
        {"params": extra, "lr": cfg.extras_lr or cfg.lr, "weight_decay": 0.0},
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
    curve: list[dict[str, float]] = field(default_factory=list)
    eval_seconds: float = 0.0

    def stage_summary(self, term: str) -> dict[str, Any]:
        """How a first stage is recorded in :attr:`TrainSummary.first_stages`."""
        return {"term": term, "steps": self.steps, "seconds": self.seconds,
                "final_loss": self.log[-1]["loss"] if self.log else None}


def fit(module: nn.Module, student: Classifier, encoded: Encoded, labels: Sequence[int], cfg: TrainConfig, *,
        cache: TeacherCache | None = None, teacher_layers: Sequence[int] = (), epochs: int | None = None,
        lr_override: float | None = None, validate: Callable[[], dict[str, float]] | None = None, accelerator=None,
        progress: bool = True, desc: str = "train", hard: Sequence[bool] | None = None) -> FitResult:
    """Train ``module`` (a :class:`DistillModule` or :class:`FilterStage`) for the planned budget.

    Each step takes ``grad_accum`` minibatches; the teacher's outputs come from ``cache`` (indexed by the
    examples' positions); ``hard`` marks the examples whose label the CE term trains on (``None``: all). With
    ``validate`` (a function returning ``{"validation_accuracy": ...}`` and other validation figures), the
    student is evaluated after the steps :func:`evaluation_steps` names; each evaluation joins the log and the
    curve, timed apart from training. With ``select_on='validation'`` the best epoch's weights are restored at
    the end; the test split is never seen here.
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
    hard_t = torch.tensor(list(hard), dtype=torch.bool) if hard is not None else None
    left = getattr(student.tokenizer, "padding_side", "right") == "left"
    rank, world = accelerator.process_index, accelerator.num_processes
    batches = _batches(len(encoded), cfg.batch_size * world, cfg.seed)
    log: list[dict[str, float]] = []
    curve: list[dict[str, float]] = []
    eval_at = set(evaluation_steps(per_epoch, total, cfg)) if validate is not None else set()
    eval_seconds = 0.0
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
            t_pooled = cache.pooled[idx].to(device) if cache is not None and cache.pooled is not None else None
            with accelerator.autocast():
                parts = module(batch, labels_t[idx].to(device), t_logits, t_hidden, t_pooled,
                               hard_t[idx].to(device) if hard_t is not None else None)
            accelerator.backward(parts["loss"] / cfg.grad_accum)
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) / cfg.grad_accum
            seen += len(idx) * world
        if not math.isfinite(sums["loss"]):
            terms = ", ".join(f"{k} {v:.4g}" for k, v in sums.items() if k != "loss")
            raise TrainingDiverged(f"step {step + 1}: the loss is {sums['loss']} ({terms}); training stopped and "
                                   "nothing was saved (check the learning rates and loss weights)")
        if cfg.max_grad_norm > 0:
            accelerator.clip_grad_norm_(module.parameters(), cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step + 1, "epoch": round(seen / len(encoded), 4), "lr": scheduler.get_last_lr()[0], **sums}
        bar.set_postfix(loss=f"{sums['loss']:.4f}")
        if step + 1 in eval_at:
            t_eval = time.perf_counter()
            module.eval()
            scores = validate()
            module.train()
            eval_seconds += time.perf_counter() - t_eval
            row.update(scores)
            curve.append({"step": row["step"], "epoch": row["epoch"], **scores})
            score = scores["validation_accuracy"]
            if cfg.select_on == "validation" and (best is None or score > best[0]):
                best = (score, step + 1, copy.deepcopy(student.model.state_dict()))
        log.append(row)
    seconds = time.perf_counter() - start - eval_seconds
    bar.close()
    selected = None
    if best is not None:
        student.model.load_state_dict(best[2])
        selected = {"on": "validation", "validation_accuracy": best[0], "step": best[1]}
    module.eval()
    return FitResult(steps=total, epochs=seen / len(encoded), seconds=seconds,
                     examples_per_second=seen / max(seconds, 1e-9), log=log, selected=selected, curve=curve,
                     eval_seconds=eval_seconds)


# -- putting it together -------------------------------------------------------------------------------


def _probe_stage(module: DistillModule, student: Classifier, encoded: Encoded, labels: Sequence[int], tcfg: TrainConfig,
                 cache: TeacherCache | None, teacher_layers: Sequence[int], accelerator, progress: bool,
                 hard: Sequence[bool] | None = None) -> dict[str, Any]:
    """LP-FT's first stage: ``probe_steps`` steps of the method's own loss with every student parameter
    outside the classification head frozen (term parameters such as projections train too); then the
    encoder is unfrozen as it was."""
    head = {id(p) for p in head_parameters(student.model)}
    frozen = [p for p in student.model.parameters() if p.requires_grad and id(p) not in head]
    for p in frozen:
        p.requires_grad_(False)
    try:
        stage_cfg = replace(tcfg, min_steps=tcfg.probe_steps, max_steps=tcfg.probe_steps)
        result = fit(module, student, encoded, labels, stage_cfg, cache=cache, teacher_layers=teacher_layers, epochs=1,
                     lr_override=tcfg.classifier_lr or tcfg.extras_lr or tcfg.lr, progress=progress,
                     desc="probe: head only", accelerator=accelerator, hard=hard)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return result.stage_summary("probe")


@dataclass
class TrainSummary:
    """What :func:`train_classifier` did: steps, epochs, time, throughput, the teacher cache's time,
    truncated texts, the terms used (with their layer maps), extra trainable parameters (projections,
    filters), a first stage's figures, the epoch selected on validation, the validation curve (``eval_points``
    evaluations: step, epoch, accuracy, agreement with the teacher) and their seconds, and the per-step log."""

    steps: int
    epochs: float
    train_seconds: float
    examples_per_second: float
    teacher_cache_seconds: float
    truncated_texts: int
    terms: list[dict[str, Any]]
    extra_trainable_parameters: int
    first_stages: list[dict[str, Any]] = field(default_factory=list)
    selected: dict[str, Any] | None = None
    curve: list[dict[str, float]] = field(default_factory=list)
    eval_seconds: float = 0.0
    log: list[dict[str, float]] = field(default_factory=list)


def train_classifier(student: Classifier, train: LabeledTexts, specs: Sequence[LossTerm], tcfg: TrainConfig, *,
                     teacher: Classifier | None = None, validation: LabeledTexts | None = None,
                     validation_reference: Sequence[int] | None = None, num_classes: int,
                     progress: bool = True) -> TrainSummary:
    """Train ``student`` on ``train`` with the loss terms ``specs`` (teacher frozen and cached). In place. The
    CE term trains on the labels of the rows ``train.hard`` marks (TED's first stage reads every label).
    ``teacher``: a :class:`Classifier`, or an endpoint teacher (anything with ``logits(texts)`` giving
    ``(N, C)``: :class:`~codistill.llm_teacher.LLMTeacher`), whose class probabilities are all a term can read.
    ``validation_reference``: the teacher's predictions on ``validation``, for the curve's agreement."""
    accelerator = make_accelerator(tcfg)
    device = accelerator.device
    student.model.to(device)
    encoded = encode(student.tokenizer, train.texts, tcfg.max_length)
    uses_teacher = any(s.kind.teacher for s in specs)
    endpoint = teacher is not None and not is_classifier(teacher)
    check_endpoint_terms(specs, endpoint)
    classifier = teacher if teacher is not None and not endpoint else None
    terms = build_terms(specs, student.num_layers, classifier.num_layers if classifier else None, student.hidden_size,
                        classifier.hidden_size if classifier else None, num_classes)
    t_layers = sorted({layer for t in terms for layer in t.teacher_layers})
    cache, cache_seconds = None, 0.0
    if uses_teacher and endpoint:
        t0 = time.perf_counter()
        cache = TeacherCache(logits=teacher.logits(list(train.texts), progress=progress).float().cpu())
        cache_seconds = time.perf_counter() - t0
    elif uses_teacher:
        teacher.model.to(device)
        teacher.model.requires_grad_(False)
        t0 = time.perf_counter()
        t_encoded = encoded if same_tokenizer(teacher.tokenizer, student.tokenizer) else \
            encode(teacher.tokenizer, train.texts, tcfg.max_length)
        cache = build_teacher_cache(teacher, t_encoded, t_layers, tcfg.eval_batch_size, progress,
                                    pooled=any(t.kind.teacher_pooled for t in terms))
        cache_seconds = time.perf_counter() - t0
    first_stages = []
    for term in terms:
        term.to(device)
        stage = term.first_stage(student.model)
        if stage is not None:
            stage_module, epochs = stage
            r1 = fit(stage_module, student, encoded, train.labels, tcfg, cache=cache, teacher_layers=t_layers,
                     epochs=epochs, lr_override=tcfg.extras_lr or tcfg.lr, progress=progress,
                     desc=f"{term.name}: first stage", accelerator=accelerator)
            stage_module.finish()
            first_stages.append(r1.stage_summary(term.name))
    module = DistillModule(student.model, terms)
    if tcfg.probe_steps:
        first_stages.append(_probe_stage(module, student, encoded, train.labels, tcfg, cache, t_layers, accelerator,
                                         progress, train.hard))
    validate = None
    if tcfg.uses_validation:
        if validation is None or not len(validation):
            from codistill.errors import ConfigError

            raise ConfigError("select_on='validation' and eval_points need a validation split")

        def validate() -> dict[str, float]:
            logits = predict_logits(student.model, student.tokenizer, validation.texts, tcfg.eval_batch_size,
                                    tcfg.max_length, device)
            m = classification_metrics(validation.labels, logits.argmax(-1).tolist(), num_classes,
                                       validation_reference)
            return {f"validation_{key}": m[key] for key in ("accuracy", "agreement") if key in m}

    result = fit(module, student, encoded, train.labels, tcfg, cache=cache, teacher_layers=t_layers,
                 validate=validate, progress=progress, desc="+".join(t.name for t in terms), accelerator=accelerator,
                 hard=train.hard)
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    extra = trainable - sum(p.numel() for p in student.model.parameters() if p.requires_grad)
    return TrainSummary(steps=result.steps, epochs=round(result.epochs, 3), train_seconds=result.seconds,
                        examples_per_second=result.examples_per_second, teacher_cache_seconds=cache_seconds,
                        truncated_texts=encoded.truncated, terms=[t.describe() for t in terms],
                        extra_trainable_parameters=extra, first_stages=first_stages, selected=result.selected,
                        curve=result.curve, eval_seconds=result.eval_seconds, log=result.log)
