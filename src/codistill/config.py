"""Dataclasses for every option, validated at construction and documented per field."""

from __future__ import annotations

import math
import types
import typing
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Union

from codistill import cod as cod_rules
from codistill.errors import ConfigError

# -- type checks: every option group validates its fields' types at construction ------------------------


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        inner = typing.get_args(tp)[0]
        return f"a list of {_describe(inner).removeprefix('a ').removeprefix('an ')}s"
    if origin is dict:
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null",
            Any: "any value"}.get(tp, f"a {getattr(tp, '__name__', tp)} mapping")


def _coerce(value: Any, tp: Any) -> tuple[bool, Any]:
    """(value fits ``tp``, the value to keep). A number written as a string (YAML reads ``5e-5`` as one)
    becomes a float; nothing else is converted."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True, value
    if origin in (Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, out = _coerce(value, arg)
            if ok:
                return True, out
        return False, value
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return False, value
            return not math.isnan(number), number
        return False, value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            return False, value
        inner = typing.get_args(tp)[0]
        out = []
        for item in value:
            ok, item = _coerce(item, inner)
            if not ok:
                return False, value
            out.append(item)
        return True, out
    if origin is dict:
        return isinstance(value, dict), value
    if is_dataclass(tp):
        return isinstance(value, (tp, dict)), value
    return True, value


def check_types(obj: Any, section: str) -> None:
    """Check (and, for numbers written as strings, convert) every field of dataclass ``obj`` against its
    annotation; a mismatch is one line naming ``section.field``: ``train.lr: expected a number, got 'fast'``."""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        ok, value = _coerce(getattr(obj, f.name), hints[f.name])
        if not ok:
            raise ConfigError(f"{section}.{f.name}: expected {_describe(hints[f.name])}, got {getattr(obj, f.name)!r}")
        if isinstance(value, float) and not math.isfinite(value):  # NaN passes every `x <= 0` check after this
            raise ConfigError(f"{section}.{f.name}: expected a finite number, got {value}")
        setattr(obj, f.name, value)


def decisive_fields(cfg: Any) -> dict[str, Any]:
    """A config dataclass's fields that decide what it produces, the ones an artifact is keyed by: all but those
    its class lists as ``OPERATIONAL`` (how patiently or where it asks, budgets, caches)."""
    operational = getattr(cfg, "OPERATIONAL", ())
    return {k: v for k, v in asdict(cfg).items() if k not in operational}


def read_yaml_mapping(path, where: str, what: str = "it") -> dict[str, Any]:
    """A YAML file that must hold a mapping of options; an unreadable file or another shape is one line
    starting with ``where``."""
    import yaml

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {what} ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of options")
    return raw


def build_config(cls, raw: Any, where: str):
    """``cls(**raw)`` for a mapping read from YAML/JSON: unknown keys and a non-mapping are one-line errors
    naming ``where``."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of options, got {raw!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(map(str, set(raw) - known))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(map(str, unknown))} (known: {', '.join(sorted(known))})")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


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
        train_from: for a dataset without a train split: ``validation`` or ``test`` (that split is divided,
            stratified and seeded by ``split_seed``: ``holdout_fraction`` of it stays that split, the rest
            becomes train; disjoint) or another data source (a folder, file or ``tweets`` with the same label
            names: its train split, and its validation split when this dataset has none; rows whose text is
            in this dataset's evaluation splits are dropped). Recorded in the dataset's notes. ``None``: the
            dataset's own train split.
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
    train_from: str | None = None

    def __post_init__(self) -> None:
        check_types(self, "data")
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


METHODS = ("finetune", "kd", "lwd", "ted", "kd_rep", "kd_con")


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
        check_types(self, "layer_map[]")
        if self.layer_T < 0 or self.layer_S < 0:
            raise ConfigError(f"layer map entry {self.layer_S}:{self.layer_T}: layer indices must be >= 0")
        if self.weight < 0:
            raise ConfigError(f"layer map entry {self.layer_S}:{self.layer_T}: weight must be >= 0")


def layer_pairs(value: list | None) -> list[LayerMatch] | None:
    """A layer map read from YAML (mappings) or built in code (:class:`LayerMatch`); an empty one is an error."""
    if value is None:
        return None
    pairs = [m if isinstance(m, LayerMatch) else build_config(LayerMatch, m, "layer_map[]") for m in value]
    if not pairs:
        raise ConfigError("layer_map is empty")
    return pairs


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
        extras_lr: learning rate of the trainable parts loss terms add (LWD's projections, TED's filters;
            ``None``: same as ``lr``).
        classifier_lr: learning rate of the model's own classification head, the parameters outside its
            base model (``None``: same as ``lr``). A fresh head on a pretrained encoder wants the larger
            rate a new linear map gets (SetFit fits its head to convergence).
        probe_steps: optimizer steps of a first stage in which only the classification head trains (the
            encoder frozen, the same loss terms, at ``classifier_lr`` or else ``extras_lr``) before everything
            trains: linear probing then fine-tuning (LP-FT, Kumar et al., ICLR 2022), so a random head's
            gradients do not distort the pretrained features. ``0``: no such stage. With the mean-pooling
            student (``pooling: auto``) 200 steps are the recipe chosen on validation (benchmarks/README.md);
            teachers (``codistill teacher``), trained on thousands of rows, default to 0.
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        warmup_ratio: share of steps with linear warm-up; then linear decay to zero.
        max_grad_norm: gradient clipping norm (``0`` disables clipping).
        max_length: tokens per text; longer texts are truncated and the number truncated is reported.
        seed: seeds model initialisation, data order and dropout.
        select_on: ``none`` (use the final model) or ``validation`` (keep the best epoch by validation
            accuracy; the report says so). The test split is never used for selection.
        eval_points: evaluate the student on the validation split this many times along training, at epoch
            ends spread evenly (every epoch when there are fewer epochs than points), recording validation
            accuracy and, with a teacher, agreement with it: the curve behind the reference protocol's figure
            (the best of these evaluations, as the CoD paper's code reports) and the selection bias. Nothing is
            selected by it; each evaluation costs one pass over the validation split (timed apart from
            training). ``0``: none.
        eval_batch_size: batch size for prediction.
        mixed_precision: ``no``, ``fp16``, ``bf16`` or ``auto`` (bf16/fp16 on a GPU, no on CPU).
    """

    epochs: int = 30
    min_steps: int = 150
    max_steps: int | None = None
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-5
    extras_lr: float | None = 1e-3
    classifier_lr: float | None = 1e-3
    probe_steps: int = 200
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    max_length: int = 128
    seed: int = 0
    select_on: str = "none"
    eval_points: int = 0
    eval_batch_size: int = 64
    mixed_precision: str = "auto"

    def __post_init__(self) -> None:
        check_types(self, "train")
        for name in ("epochs", "batch_size", "grad_accum", "max_length", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_steps < 0:
            raise ConfigError(f"probe_steps must be >= 0, got {self.probe_steps}")
        if self.eval_points < 0:
            raise ConfigError(f"eval_points must be >= 0, got {self.eval_points}")
        if self.min_steps < 0:
            raise ConfigError(f"min_steps must be >= 0, got {self.min_steps}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.lr <= 0 or any(v is not None and v <= 0 for v in (self.extras_lr, self.classifier_lr)):
            raise ConfigError("learning rates must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.select_on not in ("none", "validation"):
            raise ConfigError(f"select_on must be 'none' or 'validation' (never test), got '{self.select_on}'")
        if self.mixed_precision not in ("no", "fp16", "bf16", "auto"):
            raise ConfigError(f"mixed_precision must be no, fp16, bf16 or auto, got '{self.mixed_precision}'")

    @property
    def uses_validation(self) -> bool:
        """Whether training evaluates on the validation split (``select_on`` or ``eval_points``)."""
        return self.select_on == "validation" or self.eval_points > 0


@dataclass(frozen=True)
class LossKind:
    """What a loss term reads, beside the student's logits and the hard labels.

    Attributes:
        teacher: the teacher's outputs (a method with such a term needs a teacher).
        student_hidden: the student's hidden states.
        teacher_layers: the teacher's hidden states, matched token by token (so both share a tokenizer).
        teacher_pooled: the teacher's sentence embedding (mean of its last layer over real tokens).
    """

    teacher: bool = False
    student_hidden: bool = False
    teacher_layers: bool = False
    teacher_pooled: bool = False


# the one table of loss terms: name -> what it reads (losses.TERMS gives each name its module)
LOSSES: dict[str, LossKind] = {
    "ce": LossKind(),
    "kd": LossKind(teacher=True),
    "hidden_mse": LossKind(teacher=True, student_hidden=True, teacher_layers=True),
    "filtered_mse": LossKind(teacher=True, student_hidden=True, teacher_layers=True),
    "pooled": LossKind(teacher=True, student_hidden=True, teacher_pooled=True),
    "contrastive": LossKind(student_hidden=True),
}
PROJECTIONS = ("linear", "none")
DISTANCES = ("mse", "cosine")


@dataclass
class LossTerm:
    """One weighted term of the student's loss, in TextBrewer's vocabulary. A method is a list of these.

    Attributes:
        loss: ``ce`` (cross-entropy on the hard labels), ``kd`` (tau^2 KL to the teacher's softened
            logits), ``hidden_mse`` (layer-wise MSE over real tokens between student and teacher hidden
            states, LWD), ``filtered_mse`` (MSE between task-aware filtered states, TED) or ``pooled``
            (the student's sentence embedding, the mean of its last layer over real tokens, matched to
            the teacher's through a trained projection; needs no shared tokenizer) or ``contrastive``
            (SetFit's pair objective on the student's sentence embeddings: for every pair of examples in a
            minibatch, the squared gap between their cosine similarity and 1 when their labels agree, 0
            when they differ; needs no teacher).
        weight: multiplies the term in the total loss.
        temperature: ``kd``: the softmax temperature tau.
        layers: ``hidden_mse`` / ``filtered_mse``: pairs of ``layer_T``, ``layer_S`` and a per-pair weight
            (``None``: student layer i <-> teacher layer i * L_T / L_S).
        include_embeddings: with the default pairs, also match the embedding outputs (layer 0 to 0).
        proj: ``hidden_mse`` / ``pooled``: ``linear`` (a trainable map from the student's width to the
            teacher's; for ``hidden_mse`` only when they differ; in the optimizer) or ``none`` (widths must
            agree).
        distance: ``pooled``: ``mse`` (mean squared difference per dimension) or ``cosine`` (1 - cosine).
        filter_dim: ``filtered_mse``: width of the filters (``None``: the teacher's hidden size).
        filter_epochs: ``filtered_mse``: epochs of the first stage that trains the filters.
        name: how the term is logged (default: ``loss``).
    """

    loss: str
    weight: float = 1.0
    temperature: float = 2.0
    layers: list[LayerMatch] | None = None
    include_embeddings: bool = False
    proj: str = "linear"
    filter_dim: int | None = None
    filter_epochs: int = 10
    distance: str = "mse"
    name: str | None = None

    def __post_init__(self) -> None:
        check_types(self, "terms[]")
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss '{self.loss}' (choose from {', '.join(LOSSES)})")
        if self.weight < 0:
            raise ConfigError(f"loss term '{self.loss}': weight must be >= 0, got {self.weight}")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.proj not in PROJECTIONS:
            raise ConfigError(f"loss term '{self.loss}': proj must be 'linear' or 'none', got '{self.proj}'")
        if self.filter_epochs < 1:
            raise ConfigError(f"ted_filter_epochs must be >= 1, got {self.filter_epochs}")
        if self.distance not in DISTANCES:
            raise ConfigError(f"loss term '{self.loss}': distance must be 'mse' or 'cosine', got '{self.distance}'")
        self.layers = layer_pairs(self.layers)
        self.name = self.name or self.loss

    @property
    def kind(self) -> LossKind:
        return LOSSES[self.loss]


def uniform_layer_map(student_layers: int, teacher_layers: int, include_embeddings: bool = False) -> list[LayerMatch]:
    """Student layer i (1..L_S) -> teacher layer round(i * L_T / L_S); optionally embeddings 0 -> 0."""
    pairs = [LayerMatch(layer_T=round(i * teacher_layers / student_layers), layer_S=i)
             for i in range(1, student_layers + 1)]
    return ([LayerMatch(0, 0)] if include_embeddings else []) + pairs


@dataclass
class DistillConfig:
    """Which distillation method, and the weights of its loss terms.

    Loss on each training example (teacher frozen)::

        L = CE(y, z_s) + alpha * tau^2 * KL(softmax(z_t / tau) || softmax(z_s / tau))
            + beta * sum_l w_l * masked_mean (P_l h_s[l_S] - h_t[l_T])^2

    A method is a preset list of :class:`LossTerm` (see :func:`method_terms`): ``finetune`` is CE only (no
    teacher); ``kd`` adds the KL term; ``lwd`` adds the layer-wise term on hidden states (trainable
    projections ``P_l`` when widths differ); ``ted`` matches task-aware filtered states instead (Liang et al.
    2023), after a first stage that trains the filters; ``kd_rep`` adds to KD the match of sentence embeddings
    (``pooled``: mean of the last layer over real tokens, projected to the teacher's width), which works
    across tokenizers; ``kd_con`` adds to KD SetFit's contrastive pair objective on the student's sentence
    embeddings (``contrastive``, weight ``gamma``): pairs of the same label pulled together, of different
    labels pushed apart, so a counterfactual and its original (one edit apart, opposite labels) become a
    hard negative pair. ``terms`` replaces the preset by any list.

    Attributes:
        method: ``finetune``, ``kd``, ``lwd``, ``ted``, ``kd_rep`` or ``kd_con`` (the name reports use; with ``terms``, a
            label).
        alpha: weight of the KD term (used by kd, lwd and ted). The reference code used 20 with tau=2;
            the default 1.0 balances CE and KD on few-shot sets.
        temperature: softmax temperature tau of the KD term (reference code: 2).
        beta: weight of the layer-wise term (lwd, ted) or of the sentence-embedding term (kd_rep). The paper
            says 5 and its code used 0.05 on LWD.
        gamma: weight of the contrastive pair term (kd_con).
        layer_map: pairs of student/teacher layers for lwd and ted; ``None`` maps student layer i to teacher
            layer i * L_T / L_S for i = 1..L_S.
        include_embeddings: with the default map, also match the embedding outputs (layer 0 to 0).
        ted_filter_dim: width of TED's filters (``None``: the teacher's hidden size).
        ted_filter_epochs: epochs of TED's first stage (training the filters with the task loss).
        terms: an explicit list of loss terms instead of the method's preset.
    """

    method: str = "kd"
    alpha: float = 1.0
    temperature: float = 2.0
    beta: float = 1.0
    gamma: float = 1.0
    layer_map: list[LayerMatch] | None = None
    include_embeddings: bool = False
    ted_filter_dim: int | None = None
    ted_filter_epochs: int = 10
    terms: list[LossTerm] | None = None

    def __post_init__(self) -> None:
        check_types(self, "distill")
        if self.method not in METHODS:
            raise ConfigError(f"unknown method '{self.method}' (choose from {', '.join(METHODS)})")
        if self.alpha < 0 or self.beta < 0 or self.gamma < 0:
            raise ConfigError("alpha, beta and gamma must be >= 0")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        self.layer_map = layer_pairs(self.layer_map)
        if self.ted_filter_epochs < 1:
            raise ConfigError(f"ted_filter_epochs must be >= 1, got {self.ted_filter_epochs}")
        if self.terms is not None:
            self.terms = [t if isinstance(t, LossTerm) else build_config(LossTerm, t, "terms[]") for t in self.terms]
            if not self.terms:
                raise ConfigError("terms is empty")
        elif self.layer_map is not None and not self.uses_hidden_states:
            raise ConfigError(f"layer_map is used only by lwd and ted; method '{self.method}' matches no hidden "
                              "states, so it would be ignored")

    @property
    def uses_teacher(self) -> bool:
        return any(t.kind.teacher for t in method_terms(self))

    @property
    def uses_hidden_states(self) -> bool:
        """Whether a term matches the teacher's hidden states token by token (LWD, TED)."""
        return any(t.kind.teacher_layers for t in method_terms(self))


def method_terms(cfg: DistillConfig) -> list[LossTerm]:
    """The loss terms of a method: ``cfg.terms`` when given, else the preset named by ``cfg.method``."""
    if cfg.terms is not None:
        return list(cfg.terms)
    ce = LossTerm("ce")
    kd = LossTerm("kd", weight=cfg.alpha, temperature=cfg.temperature)
    presets = {
        "finetune": [ce],
        "kd": [ce, kd],
        "lwd": [ce, kd, LossTerm("hidden_mse", weight=cfg.beta, layers=cfg.layer_map,
                                 include_embeddings=cfg.include_embeddings, proj="linear")],
        "ted": [ce, kd, LossTerm("filtered_mse", weight=cfg.beta, layers=cfg.layer_map,
                                 include_embeddings=cfg.include_embeddings, filter_dim=cfg.ted_filter_dim,
                                 filter_epochs=cfg.ted_filter_epochs)],
        "kd_rep": [ce, kd, LossTerm("pooled", weight=cfg.beta, proj="linear")],
        "kd_con": [ce, kd, LossTerm("contrastive", weight=cfg.gamma)],
    }
    return presets[cfg.method]


POOLINGS = ("auto", "cls", "mean")


@dataclass
class StudentConfig:
    """Which student to distill into.

    Attributes:
        model: Hugging Face name or local folder; ``minilm`` is the packaged all-MiniLM-L6-v2 (offline).
        layers: keep the embeddings and this many evenly spaced transformer layers (``None`` or 0: all).
        init: ``pretrained`` (the model's own pretrained weights, which have never seen the task's labels,
            as in the paper) or ``teacher`` (DistilBERT-style: copy the teacher's layers; this carries the
            teacher's full-data training into the student and is reported as such).
        freeze_embeddings: keep the word-embedding matrix fixed (position embeddings, layers and head
            train). A k-shot set only moves the rows of the few tokens it contains, while the dense
            gradient and AdamW update of the whole matrix (two thirds of MiniLM-3's parameters) cost about a
            third of each CPU training step. The same for every method.
        pooling: what the classification head reads: ``cls`` (the model's own head, [CLS] for BERT,
            the last real token for decoders), ``mean`` (the mean of the last layer over real tokens,
            the sentence embedding a sentence-transformers backbone was trained for; BERT-family students
            only, saved as model type ``codistill_bert_mean``) or ``auto`` (the default: ``mean`` where the
            student is BERT-family, else ``cls``; chosen on validation, benchmarks/README.md).
    """

    model: str = "minilm"
    layers: int | None = 3
    init: str = "pretrained"
    freeze_embeddings: bool = True
    pooling: str = "auto"

    def __post_init__(self) -> None:
        check_types(self, "student")
        if self.layers == 0:  # 0 = keep every layer
            self.layers = None
        if self.layers is not None and self.layers < 1:
            raise ConfigError(f"student layers must be >= 1, got {self.layers}")
        if self.init not in ("pretrained", "teacher"):
            raise ConfigError(f"student init must be 'pretrained' or 'teacher', got '{self.init}'")
        if self.pooling not in POOLINGS:
            raise ConfigError(f"student pooling must be one of {', '.join(POOLINGS)}, got '{self.pooling}'")


@dataclass
class CounterfactualUse:
    """How a CoD run trains on its counterfactuals (section ``cf``; CoD runs only).

    Attributes:
        hard_labels: train the CE term on each counterfactual (and a ``rounds`` run's second-round edits) with
            its target label, as the paper does. False (``--cf-soft-labels-only``): those rows get only the terms
            that read the teacher (KD, ...); CE averages over the batch's originals alone (0 in a batch of none).
            TED's first stage and the contrastive term still read every row's label.
        max_target_prob: use only counterfactuals whose teacher probability of the target class (the row's
            ``probs_after``; for ``multi``, that of the row's first counterfactual) is at most this: the ones
            near the teacher's decision boundary. In (1/classes, 1]: a flip gives the target more than that.
            ``None``: every flipped one.
        rebalance: after the unflipped and filtered rows are dropped, keep per target class only as many
            counterfactuals as the rarest target class has (the first ones, in sample order). The classes counted
            are those the sample's originals target, so a targeted class left without any counterfactual leaves
            none of the others either.
    """

    hard_labels: bool = True
    max_target_prob: float | None = None
    rebalance: bool = False

    def __post_init__(self) -> None:
        check_types(self, "cf")
        if self.max_target_prob is not None and not 0 < self.max_target_prob <= 1:
            raise ConfigError(f"cf.max_target_prob must be in (0, 1], got {self.max_target_prob}")

    def check_classes(self, num_classes: int) -> None:
        """A counterfactual flips the teacher, so its target probability exceeds 1 / ``num_classes``: a bound
        at or below that would drop every one."""
        if self.max_target_prob is not None and self.max_target_prob <= 1 / num_classes:
            raise ConfigError(f"cf.max_target_prob must be in (1/{num_classes}, 1] for {num_classes} classes (a "
                              f"flipped counterfactual's target probability is above 1/{num_classes}), got "
                              f"{self.max_target_prob}")


@dataclass
class RunConfig:
    """One distillation run: which teacher, which k-shot sample, which counterfactuals, and how to train.

    Attributes:
        teacher: teacher folder or Hub name, or an LLM behind an OpenAI-compatible endpoint (``llm:MODEL``, or a
            ``.yaml``/``.json`` spec of :class:`~codistill.llm_teacher.LLMTeacherConfig`) whose class probabilities
            come from the label words' log-probabilities (``None`` only for ``finetune``).
        k: few-shot budget: k labelled originals, k / classes per class.
        seed: sampling and training seed (overrides ``train.seed``).
        counterfactuals: JSONL of counterfactual rows (``codistill counterfactuals``) or ``text,label`` rows.
            A CoD run without one generates them with the teacher and ``generator`` into its run folder.
        cod: ``None`` (every usable row of ``counterfactuals`` is added to the k originals), ``replace`` (CoD
            at budget k: k/2 originals + their counterfactuals), ``multi`` (the same k/2 originals, each with
            every counterfactual its row holds: the first and its ``more_counterfactuals``, made by a
            generator with ``per_original`` > 1), ``augment`` (all k originals + counterfactuals of all k:
            the same k human labels, up to twice the training texts) or ``rounds`` (student-aware, beyond
            the paper: CoD's k/2 originals and their counterfactuals train a first student; the edits of those
            training texts that flip that student and that the teacher labels otherwise join them, and a fresh
            student trains on the whole; the same k/2 human labels).
        generator: the search a CoD run without a counterfactual file generates them with, and of a
            ``rounds`` run's second round (``{"name": "edits", ...}``; ``None``: the edit search's defaults).
        allow_empty_counterfactuals: let a CoD run train when none of its originals has a usable
            counterfactual (it then trains on the originals alone); by default that is an error.
        llm_teacher: options of an endpoint teacher (``teacher: llm:MODEL`` or a spec file), fields of
            :class:`~codistill.llm_teacher.LLMTeacherConfig` (``base_url``, ``examples``, ``max_requests``, ...)
            over the spec's; its in-context examples are drawn from the run's own k-shot rows.
        cf: how a CoD run uses its counterfactuals (:class:`CounterfactualUse`; a mapping is read as one).
        student, distill, train: the option groups.
    """

    teacher: str | None = None
    k: int = 16
    seed: int = 0
    counterfactuals: str | None = None
    cod: str | None = None
    generator: dict[str, Any] | None = None
    allow_empty_counterfactuals: bool = False
    llm_teacher: dict[str, Any] | None = None
    cf: CounterfactualUse = field(default_factory=CounterfactualUse)
    student: StudentConfig = field(default_factory=StudentConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        check_types(self, "run")
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")
        if self.cod is not None:
            cod_rules.check_mode(self.cod, "cod mode")
        if self.cod is not None and self.counterfactuals is None and self.teacher is None:
            raise ConfigError("CoD without a counterfactual file (--counterfactuals, from `codistill "
                              "counterfactuals`) generates them with the teacher: pass --teacher")
        if self.generator is not None and not self.searches:
            raise ConfigError("run generator: only a CoD run without a counterfactual file, or a 'rounds' run, "
                              "searches for counterfactuals itself")
        if self.cod == "rounds" and self.teacher is None:
            raise ConfigError("cod mode 'rounds' needs a teacher (--teacher DIR) to label the second round")
        if isinstance(self.cf, dict):
            self.cf = build_config(CounterfactualUse, self.cf, "cf")
        if self.cod is None and self.cf != CounterfactualUse():
            raise ConfigError("cf (--cf-soft-labels-only, --cf-max-target-prob, --cf-rebalance): only a CoD run "
                              "(--cod) uses its counterfactuals this way; pass --cod or leave them out")
        if self.train.seed != self.seed:
            self.train = TrainConfig(**{**asdict(self.train), "seed": self.seed})
        if self.teacher is None and (self.distill.uses_teacher or self.student.init == "teacher"):
            raise ConfigError(f"method '{self.distill.method}' needs a teacher (--teacher DIR)")

    @property
    def searches(self) -> bool:
        """Whether the run searches for counterfactuals itself (with ``generator``): a CoD run without a
        counterfactual file generates them, and a ``rounds`` run searches its second round."""
        return self.cod == "rounds" or (self.cod is not None and self.counterfactuals is None)


# The teacher's recipe: 2 epochs over the full training split, batch 32, lr 5e-5 for every parameter, no step
# floor, no head-only first stage. ``codistill teacher`` shows and applies it; sweeps train teachers with it.
TEACHER_TRAIN = TrainConfig(epochs=2, min_steps=0, batch_size=32, lr=5e-5, classifier_lr=None, probe_steps=0)


# Named recipes: the option values a run or a sweep starts from, per section (``train``, ``distill``); options
# given explicitly override them. ``default`` is the dataclasses' own defaults. ``reference`` is the CoD paper's
# released code (github FaisalHamman/CoD, text-classification/ted_no_trainer.py, as its run scripts call it):
# 100 epochs at batch 8, AdamW at lr 6e-5 for every parameter with a linear decay and no warm-up, no weight
# decay, no gradient clipping, 256 tokens, loss CE + 20 * tau^2 * KL with tau = 2 (LWD/TED weight 20), CE on each
# counterfactual's target label, no head-only first stage, word embeddings trained. The student's model and head
# stay the run's own (the paper's was DeBERTa-v3-xsmall). Its code reports the best of its per-epoch
# evaluations on the split it reports; 20 validation evaluations along training give that figure here (the
# report shows it beside the final weights' test figure, labelled as optimistic).
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "default": {},
    "reference": {
        "train": {"epochs": 100, "min_steps": 0, "batch_size": 8, "grad_accum": 1, "lr": 6e-5, "extras_lr": None,
                  "classifier_lr": None, "probe_steps": 0, "weight_decay": 0.0, "warmup_ratio": 0.0,
                  "max_grad_norm": 0.0, "max_length": 256, "select_on": "none", "eval_points": 20},
        "distill": {"alpha": 20.0, "temperature": 2.0, "beta": 20.0},
        "student": {"freeze_embeddings": False},
    },
}


def recipe_section(recipe: str | None, section: str, given: dict[str, Any] | None = None,
                   where: str = "recipe") -> dict[str, Any]:
    """The options of ``section`` (``train``, ``distill``, ``student``) under a named recipe, with ``given`` on
    top."""
    name = recipe or "default"
    if name not in RECIPES:
        raise ConfigError(f"{where}: unknown recipe '{name}' (choose from {', '.join(RECIPES)})")
    return {**RECIPES[name].get(section, {}), **(given or {})}


def teacher_train_config(**overrides: Any) -> TrainConfig:
    """:data:`TEACHER_TRAIN` with ``overrides`` (validated like any :class:`TrainConfig`)."""
    return build_config(TrainConfig, {**asdict(TEACHER_TRAIN), **overrides}, "train")


@dataclass
class TeacherOptions:
    """What ``codistill teacher`` fine-tunes (its data and training are the ``data`` and ``train`` groups).

    Attributes:
        model: backbone to fine-tune: a Hub name or local folder; ``minilm`` is the packaged
            all-MiniLM-L6-v2 (offline).
        max_train: cap on the training rows (a stratified, seeded subset; ``None``: every row).
    """

    model: str = "minilm"
    max_train: int | None = None

    def __post_init__(self) -> None:
        check_types(self, "teacher")
        if self.max_train is not None and self.max_train < 2:
            raise ConfigError(f"max_train must be >= 2, got {self.max_train}")


# the ONNX opset of ``codistill export``
ONNX_OPSET = 18

# the causal LM that scores counterfactuals' fluency unless told otherwise (fetched from PyPI on first use)
DEFAULT_FLUENCY_LM = "smollm2"


@dataclass
class CounterfactualOptions:
    """How ``codistill counterfactuals`` makes a counterfactual file (the generator's own options are the
    ``edits`` and ``llm`` groups, or the ``generator`` section of a config file).

    Attributes:
        teacher: teacher folder or Hub name: it verifies every candidate.
        k: budget k: counterfactuals for the originals a CoD run at budget k trains on (``cod``).
        seed: sampling seed (the same as for distill).
        cod: the CoD mode of the run that uses the file: ``augment`` edits all k originals of the k-shot
            sample, ``replace`` (and ``multi``, ``rounds``) the k/2 it keeps.
        generator: ``edits`` (offline search), ``llm`` (an OpenAI-compatible endpoint), ``llm+edits``
            (the LLM, then the edit search for the originals it could not flip) or ``chain`` (the list of
            generator specs in a config file's ``generator.generators``).
        on_failure: ``skip`` or ``keep-best`` for originals no candidate flipped.
        allow_empty: exit 0 when no original got a usable counterfactual (by default the file is written and
            the command fails).
        fluency_lm: causal LM that scores fluency (perplexity ratio to the original): ``smollm2`` (fetched
            from PyPI on first use), a folder, a Hub name, or ``none``.
        judge: an independent classifier over the same labels (another backbone or training data than the
            teacher): validity = share of flips whose target it also predicts (``None``: not measured).
    """

    teacher: str | None = None
    k: int = RunConfig.k
    seed: int = RunConfig.seed
    cod: str = cod_rules.DEFAULT_MODE
    generator: str = "edits"
    on_failure: str = cod_rules.ON_FAILURE[0]
    allow_empty: bool = False
    fluency_lm: str | None = DEFAULT_FLUENCY_LM
    judge: str | None = None

    def __post_init__(self) -> None:
        check_types(self, "counterfactuals")
        if self.k < 2:
            raise ConfigError(f"k must be >= 2, got {self.k}")
        cod_rules.check_mode(self.cod, "--cod-mode")
        cod_rules.check_on_failure(self.on_failure)
        self.fluency_lm = fluency_lm_option(self.fluency_lm)

    @property
    def budget(self) -> int:
        """The budget whose CoD half the file covers (:func:`codistill.cod.counterfactual_budget`)."""
        return cod_rules.counterfactual_budget(self.k, self.cod)


def fluency_lm_option(value: str | None) -> str | None:
    """A fluency LM option: ``none`` (any case) means no LM."""
    return None if value is None or str(value).lower() == "none" else value
