"""Dataclasses for every option, validated at construction and documented per field."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from codistill.errors import ConfigError


@dataclass
class DataConfig:
    """Where a labelled text dataset comes from and how to read it.

    Attributes:
        source: ``tweets`` (the embedded default), a registered name (``sst2``, ``cola``, ``imdb``,
            ``yelp_polarity``, ``amazon_polarity``, ``sentiment140``; loaded from the Hugging Face Hub),
            a folder with ``train``/``validation``/``test`` files, a single ``.csv``/``.tsv``/``.jsonl``
            file, or any other Hub dataset name (``owner/name``).
        text_column: column holding the text; several columns may be given (joined by a space). ``None``
            picks the first of ``text, sentence, review, content, tweet, document`` that exists.
        label_column: column holding the label. ``None`` picks the first of
            ``label, labels, sentiment, class, target, category`` that exists.
        label_names: names of the classes in index order. File labels may then be either these names or
            integer indices. ``None`` infers the label set from the training split (sorted).
        label_map: raw label value -> class name (e.g. ``{"0": "negative", "4": "positive"}``); raw values
            not in the map are an error unless listed in ``drop_labels``.
        drop_labels: raw label values whose rows are dropped before anything else (e.g. a neutral class).
        encoding: text encoding of local files. Bytes that do not decode are an error naming the line.
        split_seed: seed of the deterministic, stratified carving of missing validation/test splits.
        holdout_fraction: share of the training pool carved out for each missing validation/test split.
    """

    source: str = "tweets"
    text_column: str | list[str] | None = None
    label_column: str | None = None
    label_names: list[str] | None = None
    label_map: dict[str, str] | None = None
    drop_labels: list[str] = field(default_factory=list)
    encoding: str = "utf-8"
    split_seed: int = 0
    holdout_fraction: float = 0.1

    def __post_init__(self) -> None:
        if not str(self.source).strip():
            raise ConfigError("data source is empty: pass a folder, a file, a registered name or 'tweets'")
        if isinstance(self.text_column, str):
            self.text_column = [c.strip() for c in self.text_column.split(",") if c.strip()] or None
        if not 0.0 < self.holdout_fraction < 0.5:
            raise ConfigError(f"holdout_fraction must be in (0, 0.5), got {self.holdout_fraction}")
        if self.label_names is not None:
            names = [str(n) for n in self.label_names]
            if len(names) < 2:
                raise ConfigError(f"label_names needs at least two classes, got {names}")
            if len(set(names)) != len(names):
                raise ConfigError(f"label_names has duplicates: {names}")
            self.label_names = names
        if self.label_map is not None:
            self.label_map = {str(k).strip(): str(v) for k, v in self.label_map.items()}
        self.drop_labels = [str(v).strip() for v in self.drop_labels]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


METHODS = ("finetune", "kd", "lwd", "ted")


@dataclass
class LayerMatch:
    """One pair of a layer map, in TextBrewer's vocabulary.

    Layer indices count the embeddings as 0 and transformer block ``i`` as ``i`` (the index into a model's
    ``hidden_states`` output), so a 6-layer teacher has layers 0..6.

    Attributes:
        layer_T: teacher layer index.
        layer_S: student layer index.
        weight: weight of this pair's mean-squared error in the LWD/TED term.
    """

    layer_T: int
    layer_S: int
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.layer_T < 0 or self.layer_S < 0:
            raise ConfigError(f"layer map entry {self.layer_S}:{self.layer_T}: layer indices must be >= 0")
        if self.weight < 0:
            raise ConfigError(f"layer map entry {self.layer_S}:{self.layer_T}: weight must be >= 0")


def parse_layer_map(text: str | None) -> list[LayerMatch] | None:
    """``"1:2,2:4,3:6"`` (student:teacher[:weight], comma-separated) -> layer map; ``None``/empty -> None."""
    if not text:
        return None
    out = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) not in (2, 3):
            raise ConfigError(f"--layer-map: '{item}' is not STUDENT:TEACHER[:WEIGHT] (e.g. '1:2,2:4,3:6')")
        try:
            s, t = int(parts[0]), int(parts[1])
            w = float(parts[2]) if len(parts) == 3 else 1.0
        except ValueError:
            raise ConfigError(f"--layer-map: '{item}' is not STUDENT:TEACHER[:WEIGHT] with numbers") from None
        out.append(LayerMatch(layer_T=t, layer_S=s, weight=w))
    return out


@dataclass
class TrainConfig:
    """How a classifier is trained: the loop shared by teacher fine-tuning and every distillation method.

    The budget is fixed: ``epochs`` passes over the training set, but never fewer than ``min_steps``
    optimizer steps (so a tiny k-shot set is not under-trained), and never more than ``max_steps`` when set.
    The same rule applies to every method. Nothing is ever selected on the test split.

    Attributes:
        epochs: passes over the training set.
        min_steps: floor on optimizer steps.
        max_steps: cap on optimizer steps (``None``: no cap).
        batch_size: examples per forward pass.
        grad_accum: forward passes per optimizer step (effective batch = batch_size * grad_accum).
        lr: peak AdamW learning rate of the model.
        head_lr: learning rate of projections and TED filters (``None``: same as ``lr``).
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_ratio: share of steps with linear warm-up; then linear decay to zero.
        max_grad_norm: gradient clipping norm (``0`` disables clipping).
        max_length: tokens per text; longer texts are truncated and the number truncated is reported.
        seed: seeds model initialisation, data order and dropout.
        select_on: ``none`` (use the final model) or ``validation`` (keep the best epoch by validation
            accuracy; the report says so). The test split is never used for selection.
        eval_batch_size: batch size for prediction.
        mixed_precision: ``no``, ``fp16``, ``bf16`` or ``auto`` (bf16/fp16 on a GPU, no on CPU).
    """

    epochs: int = 30
    min_steps: int = 150
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-5
    head_lr: float | None = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 0
    select_on: str = "none"
    eval_batch_size: int = 64
    mixed_precision: str = "auto"

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.min_steps < 0:
            raise ConfigError(f"min_steps must be >= 0, got {self.min_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise ConfigError("learning rates must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.select_on not in ("none", "validation"):
            raise ConfigError(f"select_on must be 'none' or 'validation' (never test), got '{self.select_on}'")
        if self.mixed_precision not in ("no", "fp16", "bf16", "auto"):
            raise ConfigError(f"mixed_precision must be no, fp16, bf16 or auto, got '{self.mixed_precision}'")


@dataclass
class DistillConfig:
    """Which distillation method, and the weights of its loss terms.

    Loss on each training example (teacher frozen)::

        L = CE(y, z_s) + alpha * tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))
            + beta * sum_l w_l * masked_mean (P_l h_s[l_S] - h_t[l_T])^2

    ``finetune`` uses CE only (no teacher); ``kd`` adds the KL term; ``lwd`` adds the layer-wise term on
    hidden states (trainable projections ``P_l`` when widths differ); ``ted`` replaces the raw hidden states
    by task-aware filtered ones (Liang et al. 2023), after a first stage that trains the filters.

    Attributes:
        method: ``finetune``, ``kd``, ``lwd`` or ``ted``.
        alpha: weight of the KD term (used by kd, lwd and ted). The reference code used 20 with tau=2;
            the default 1.0 balances CE and KD on few-shot sets.
        temperature: softmax temperature tau of the KD term (reference code: 2).
        beta: weight of the layer-wise term (lwd, ted). The paper says 5 and its code used 0.05 on LWD.
        layer_map: pairs of student/teacher layers; ``None`` maps student layer i to teacher layer
            i * L_T / L_S for i = 1..L_S.
        include_embeddings: with the default map, also match the embedding outputs (layer 0 to 0).
        ted_filter_dim: width of TED's filters (``None``: the teacher's hidden size).
        ted_filter_epochs: epochs of TED's first stage (training the filters with the task loss).
    """

    method: str = "kd"
    alpha: float = 1.0
    temperature: float = 2.0
    beta: float = 1.0
    layer_map: list[LayerMatch] | None = None
    include_embeddings: bool = False
    ted_filter_dim: int | None = None
    ted_filter_epochs: int = 10

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method '{self.method}' (choose from {', '.join(METHODS)})")
        if self.alpha < 0 or self.beta < 0:
            raise ConfigError("alpha and beta must be >= 0")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.layer_map is not None:
            self.layer_map = [m if isinstance(m, LayerMatch) else LayerMatch(**m) for m in self.layer_map]
            if not self.layer_map:
                raise ConfigError("layer_map is empty")
        if self.ted_filter_epochs < 1:
            raise ConfigError(f"ted_filter_epochs must be >= 1, got {self.ted_filter_epochs}")

    @property
    def uses_teacher(self) -> bool:
        return self.method != "finetune"

    @property
    def uses_hidden_states(self) -> bool:
        return self.method in ("lwd", "ted")


@dataclass
class StudentConfig:
    """Which student to distill into.

    Attributes:
        model: Hugging Face name or local folder; ``minilm`` is the packaged all-MiniLM-L6-v2 (offline).
        layers: keep the embeddings and this many evenly spaced transformer layers (``None``: all).
        init: ``pretrained`` (the model's own pretrained weights, which have never seen the task's labels,
            as in the paper) or ``teacher`` (DistilBERT-style: copy the teacher's layers; this carries the
            teacher's full-data training into the student and is reported as such).
        freeze_embeddings: keep the word-embedding matrix fixed (position embeddings, layers and head
            train). A k-shot set only moves the rows of the few tokens it contains, while the dense
            gradient and AdamW update of the whole matrix (two thirds of MiniLM-3's parameters) cost about a
            third of each CPU training step. The same for every method.
    """

    model: str = "minilm"
    layers: int | None = 3
    init: str = "pretrained"
    freeze_embeddings: bool = True

    def __post_init__(self) -> None:
        if self.layers is not None and self.layers < 1:
            raise ConfigError(f"student layers must be >= 1, got {self.layers}")
        if self.init not in ("pretrained", "teacher"):
            raise ConfigError(f"student init must be 'pretrained' or 'teacher', got '{self.init}'")
