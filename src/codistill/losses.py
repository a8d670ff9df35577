"""Distillation losses as pure functions, the two small trainable pieces they need (projections and
TED's task-aware filters), and the loss terms a method is made of (:data:`TERMS`, built from
:class:`~codistill.config.LossTerm` specs). Shapes: B batch, T tokens, D hidden width, C classes, L matched
layer pairs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from codistill.config import LOSSES, LayerMatch, LossTerm, uniform_layer_map
from codistill.modeling_bert_mean import masked_mean_pool  # the mean head's pooling, one definition


def ce_loss(logits: torch.Tensor, labels: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy of hard labels: mean_b -log softmax(z_b)[y_b], over the rows ``rows`` marks only.

    Args: logits ``(B, C)``; labels ``(B,)`` class indices; rows ``(B,)`` bool (``None``: every row). Returns a
    scalar, 0 when no row is marked.
    """
    if rows is None:
        return F.cross_entropy(logits, labels)
    per_row = F.cross_entropy(logits, labels, reduction="none") * rows.to(logits.dtype)
    return per_row.sum() / rows.sum().clamp_min(1).to(logits.dtype)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 2.0) -> torch.Tensor:
    """Knowledge distillation (Hinton et al. 2015): tau^2 * mean_b KL(softmax(z_t/tau) || softmax(z_s/tau)).

    KL(p || q) = sum_c p_c (log p_c - log q_c). The tau^2 factor keeps gradient magnitudes comparable
    across temperatures. Args: both logits ``(B, C)``. Returns a scalar, 0 when the logits are equal.
    """
    log_q = F.log_softmax(student_logits / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.to(log_q.dtype) / temperature, dim=-1)
    return F.kl_div(log_q, log_p, log_target=True, reduction="batchmean") * temperature**2


def masked_mse(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real tokens only.

    sum_{b,t,d} m_bt (s_btd - t_btd)^2 / (D * sum_{b,t} m_bt)

    Args: student, teacher ``(B, T, D)``; mask ``(B, T)`` with 1 for real tokens and 0 for padding.
    Padding positions contribute nothing, whatever their values. Returns a scalar.
    """
    m = mask.to(student.dtype).unsqueeze(-1)
    sq = (student - teacher.to(student.dtype)).pow(2) * m
    denom = m.sum() * student.shape[-1]
    return sq.sum() / denom.clamp_min(1.0)


class Projections(nn.Module):
    """One trainable linear map ``P_l: R^{D_S} -> R^{D_T}`` per matched layer pair (identity when the
    widths agree). Its parameters must be given to the optimizer."""

    def __init__(self, num_pairs: int, student_dim: int, teacher_dim: int) -> None:
        super().__init__()
        self.needed = student_dim != teacher_dim
        self.maps = nn.ModuleList(
            [nn.Linear(student_dim, teacher_dim) for _ in range(num_pairs)] if self.needed else []
        )

    def forward(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        return self.maps[index](hidden) if self.needed else hidden


def lwd_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Sequence[torch.Tensor], mask: torch.Tensor,
             pairs: Sequence[tuple[int, int, float]], projections: Projections | None = None) -> torch.Tensor:
    """Layer-wise distillation: sum_l w_l * masked_mse(P_l h_s[l_S], h_t[l_T]).

    Args:
        student_hidden: the student's ``hidden_states`` (embeddings first), each ``(B, T, D_S)``.
        teacher_hidden: the teacher's, each ``(B, T, D_T)``; same tokenizer, so the same T.
        mask: ``(B, T)`` attention mask.
        pairs: ``(layer_S, layer_T, weight)`` per matched pair.
        projections: maps student width to teacher width (``None``: widths must agree).
    """
    total = student_hidden[0].new_zeros(())
    for i, (ls, lt, w) in enumerate(pairs):
        hs = student_hidden[ls]
        if projections is not None:
            hs = projections(i, hs)
        total = total + w * masked_mse(hs, teacher_hidden[lt], mask)
    return total


def pooled_loss(student_pooled: torch.Tensor, teacher_pooled: torch.Tensor, distance: str = "mse") -> torch.Tensor:
    """Sentence-embedding match: ``mse`` = mean over batch and dimensions of (s - t)^2; ``cosine`` = mean over
    the batch of 1 - cos(s, t). Args: both ``(B, D)`` (the student's already projected). Returns a scalar."""
    if distance == "cosine":
        return (1.0 - F.cosine_similarity(student_pooled, teacher_pooled.to(student_pooled.dtype), dim=-1)).mean()
    return F.mse_loss(student_pooled, teacher_pooled.to(student_pooled.dtype))


def pair_similarity_loss(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SetFit's contrastive objective (cosine-similarity loss) over every pair of a minibatch:
    mean over i < j of (cos(e_i, e_j) - [y_i = y_j])^2.

    Args: embeddings ``(B, D)``; labels ``(B,)``. Returns a scalar, 0 for a batch of fewer than two.
    """
    n = embeddings.shape[0]
    if n < 2:
        return embeddings.new_zeros(())
    unit = F.normalize(embeddings, dim=-1)
    similarity = unit @ unit.T
    target = (labels[:, None] == labels[None, :]).to(similarity.dtype)
    i, j = torch.triu_indices(n, n, offset=1, device=embeddings.device)
    return (similarity[i, j] - target[i, j]).pow(2).mean()


class TaskFilter(nn.Module):
    """TED's task-aware filter (Liang et al., ICML 2023) on one layer: a linear map ``R^{D_in} -> R^{D_f}``
    of every token's hidden state, with a linear task head on the masked mean of the filtered states.
    The head is what makes the filter task-aware: stage 1 trains filter and head with the task loss."""

    def __init__(self, in_dim: int, filter_dim: int, num_classes: int) -> None:
        super().__init__()
        self.filter = nn.Linear(in_dim, filter_dim)
        self.head = nn.Linear(filter_dim, num_classes)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(B, T, D_in) -> (B, T, D_f)`` filtered states."""
        return self.filter(hidden)

    def task_logits(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, D_in), (B, T) -> (B, C)`` logits of the task head on the pooled filtered states."""
        return self.head(masked_mean_pool(self.filter(hidden), mask))


class TaskFilters(nn.Module):
    """One :class:`TaskFilter` per chosen layer of a model."""

    def __init__(self, layers: Sequence[int], in_dim: int, filter_dim: int, num_classes: int) -> None:
        super().__init__()
        self.layers = list(layers)
        self.filters = nn.ModuleList([TaskFilter(in_dim, filter_dim, num_classes) for _ in self.layers])

    def task_loss(self, hidden: Sequence[torch.Tensor], mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Stage 1: mean over filters of CE(y, head(pool(filter(h_l))))."""
        losses = [ce_loss(f.task_logits(hidden[layer], mask), labels) for f, layer in zip(self.filters, self.layers)]
        return torch.stack(losses).mean()

    def filtered(self, hidden: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [f(hidden[layer]) for f, layer in zip(self.filters, self.layers)]


def ted_loss(student_filtered: Sequence[torch.Tensor], teacher_filtered: Sequence[torch.Tensor], mask: torch.Tensor,
             weights: Sequence[float]) -> torch.Tensor:
    """TED stage 2: sum_l w_l * masked_mse(f_S,l(h_s), f_T,l(h_t)), teacher filters frozen."""
    total = student_filtered[0].new_zeros(())
    for s, t, w in zip(student_filtered, teacher_filtered, weights):
        total = total + w * masked_mse(s, t, mask)
    return total


# -- loss terms: a method is a list of these, built from config.LossTerm specs --------------------------


@dataclass
class StepOutputs:
    """What every loss term sees for one minibatch.

    Attributes:
        labels: ``(B,)`` hard labels; mask: ``(B, T)`` the student's attention mask.
        hard: ``(B,)`` bool, the rows whose label the CE term trains on (``None``: every row).
        student_logits: ``(B, C)``; student_hidden: the student's ``hidden_states`` (embeddings first),
            each ``(B, T, D_S)``, when a term needs them.
        teacher_logits: ``(B, C)`` cached teacher logits; teacher_hidden: teacher layer -> ``(B, T, D_T)``.
        teacher_pooled: ``(B, D_T)`` the teacher's cached sentence embeddings (mean of its last layer over
            its own real tokens), when a term needs them.
    """

    labels: torch.Tensor
    mask: torch.Tensor
    student_logits: torch.Tensor
    student_hidden: Sequence[torch.Tensor] | None = None
    teacher_logits: torch.Tensor | None = None
    teacher_hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    teacher_pooled: torch.Tensor | None = None
    hard: torch.Tensor | None = None


class Term(nn.Module):
    """A weighted loss term. What it reads (the teacher, its layers, the student's hidden states) is its
    ``kind``, from :data:`codistill.config.LOSSES`; subclasses compute ``value``; ``forward`` returns
    ``weight * value``. Trainable parts (projections,
    filters) are submodules, so the optimizer gets them with the student. ``first_stage`` returns a module
    to train before distillation starts (TED's filters), or ``None``."""

    def __init__(self, spec: LossTerm) -> None:
        super().__init__()
        self.name = spec.name or spec.loss
        self.weight = spec.weight
        self.kind = spec.kind  # what the term reads, from the one table (config.LOSSES)
        self.teacher_layers: list[int] = []

    def value(self, out: StepOutputs) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, out: StepOutputs) -> torch.Tensor:
        return self.weight * self.value(out)

    def first_stage(self, student: nn.Module) -> tuple[nn.Module, int] | None:
        return None

    def describe(self) -> dict:
        return {"name": self.name, "weight": self.weight}


class CETerm(Term):
    """``weight * CE(y, z_s)``, averaged over the rows with hard labels (``StepOutputs.hard``)."""

    def value(self, out: StepOutputs) -> torch.Tensor:
        return ce_loss(out.student_logits, out.labels, out.hard)


class KDTerm(Term):
    """``weight * tau^2 * KL(softmax(z_t/tau) || softmax(z_s/tau))``."""

    def __init__(self, spec: LossTerm) -> None:
        super().__init__(spec)
        self.temperature = spec.temperature

    def value(self, out: StepOutputs) -> torch.Tensor:
        return kd_loss(out.student_logits, out.teacher_logits, self.temperature)

    def describe(self) -> dict:
        return {**super().describe(), "temperature": self.temperature}


class PooledTerm(Term):
    """``weight * distance(P pool(h_s[L_S]), pool_T)``: the student's sentence embedding (mean of its last layer
    over its real tokens) through a trainable linear ``P`` (``proj: linear``; identity with ``none``, widths
    equal) against the teacher's cached one. Each side pools its own tokens, so the tokenizers may differ."""

    def __init__(self, spec: LossTerm, student_dim: int, teacher_dim: int) -> None:
        super().__init__(spec)
        self.distance = spec.distance
        if spec.proj == "none" and student_dim != teacher_dim:
            from codistill.errors import ConfigError

            raise ConfigError(f"pooled with proj 'none' needs equal widths (student {student_dim}, teacher {teacher_dim})")
        self.projection = nn.Linear(student_dim, teacher_dim) if spec.proj == "linear" else nn.Identity()

    def value(self, out: StepOutputs) -> torch.Tensor:
        pooled = masked_mean_pool(out.student_hidden[-1].float(), out.mask)
        return pooled_loss(self.projection(pooled), out.teacher_pooled, self.distance)

    def describe(self) -> dict:
        return {**super().describe(), "distance": self.distance,
                "proj": "linear" if isinstance(self.projection, nn.Linear) else "none"}


class ContrastiveTerm(Term):
    """``weight * pair_similarity_loss(pool(h_s[L_S]), y)``: the student's sentence embeddings (the mean of its
    last layer over real tokens, what a ``mean`` head reads) pulled together for pairs of one label and apart
    for pairs of different labels, over the pairs of each minibatch. Hard labels: the human label of an
    original, the target label of a counterfactual, so an original and its counterfactual are a negative pair."""

    def value(self, out: StepOutputs) -> torch.Tensor:
        return pair_similarity_loss(masked_mean_pool(out.student_hidden[-1].float(), out.mask), out.labels)


class _LayerTerm(Term):
    def __init__(self, spec: LossTerm, pairs: Sequence[LayerMatch]) -> None:
        super().__init__(spec)
        self.pairs = list(pairs)
        self.teacher_layers = sorted({m.layer_T for m in self.pairs})

    def describe(self) -> dict:
        return {**super().describe(), "layer_map": [asdict(m) for m in self.pairs]}


class HiddenMSETerm(_LayerTerm):
    """LWD: ``weight * sum_l w_l * masked_mse(P_l h_s[l_S], h_t[l_T])``, ``P_l`` trainable when widths differ."""

    def __init__(self, spec: LossTerm, pairs: Sequence[LayerMatch], student_dim: int, teacher_dim: int,
                 num_classes: int) -> None:
        super().__init__(spec, pairs)
        self.projections = Projections(len(self.pairs), student_dim, teacher_dim) if spec.proj == "linear" else None
        if spec.proj == "none" and student_dim != teacher_dim:
            from codistill.errors import ConfigError

            raise ConfigError(f"hidden_mse with proj 'none' needs equal widths (student {student_dim}, "
                              f"teacher {teacher_dim})")

    def value(self, out: StepOutputs) -> torch.Tensor:
        hs = [h.float() for h in out.student_hidden]
        triples = [(m.layer_S, m.layer_T, m.weight) for m in self.pairs]
        return lwd_loss(hs, out.teacher_hidden, out.mask, triples, self.projections)


class FilteredMSETerm(_LayerTerm):
    """TED stage 2: ``weight * sum_l w_l * masked_mse(f_S,l(h_s), f_T,l(h_t))``; the teacher's filters come
    from the first stage (:meth:`first_stage`) and are frozen when it ends."""

    def __init__(self, spec: LossTerm, pairs: Sequence[LayerMatch], student_dim: int, teacher_dim: int,
                 num_classes: int) -> None:
        super().__init__(spec, pairs)
        dim = spec.filter_dim or teacher_dim
        self.filter_epochs = spec.filter_epochs
        self.student_filters = TaskFilters([m.layer_S for m in self.pairs], student_dim, dim, num_classes)
        self.teacher_filters = TaskFilters([m.layer_T for m in self.pairs], teacher_dim, dim, num_classes)

    def first_stage(self, student: nn.Module) -> tuple[nn.Module, int]:
        return FilterStage(student, self.student_filters, self.teacher_filters), self.filter_epochs

    def value(self, out: StepOutputs) -> torch.Tensor:
        hs = [h.float() for h in out.student_hidden]
        student_f = self.student_filters.filtered(hs)
        with torch.no_grad():
            teacher_f = self.teacher_filters.filtered(out.teacher_hidden)
        return ted_loss(student_f, teacher_f, out.mask, [m.weight for m in self.pairs])


class FilterStage(nn.Module):
    """TED stage 1: the filters on the frozen teacher's cached states and on the frozen student's states
    learn the task (CE), each with its own head. The student runs without gradients, so only the filters
    move; the trainer freezes the teacher's filters afterwards."""

    def __init__(self, student: nn.Module, student_filters: TaskFilters, teacher_filters: TaskFilters) -> None:
        super().__init__()
        self.student = student
        self.student_filters = student_filters
        self.teacher_filters = teacher_filters
        self.teacher_layers = sorted(set(teacher_filters.layers))

    def forward(self, batch: dict[str, torch.Tensor], labels: torch.Tensor, teacher_logits=None,
                teacher_hidden: Sequence[torch.Tensor] | None = None, teacher_pooled=None,
                hard=None) -> dict[str, torch.Tensor]:
        self.student.eval()  # frozen here: no dropout either
        with torch.no_grad():
            hs = [h.float() for h in self.student(**batch, output_hidden_states=True).hidden_states]
        mask = batch["attention_mask"]
        parts = {
            "student_filters": self.student_filters.task_loss(hs, mask, labels),
            "teacher_filters": self.teacher_filters.task_loss(dict(zip(self.teacher_layers, teacher_hidden)), mask, labels),
        }
        parts["loss"] = parts["student_filters"] + parts["teacher_filters"]
        return parts

    def finish(self) -> None:
        """Freeze the teacher's filters: stage 2 matches the student to them."""
        self.teacher_filters.requires_grad_(False)


# loss name -> term class; a new term is one class here and one entry in config.LOSSES (what it reads)
TERMS: dict[str, type[Term]] = {"ce": CETerm, "kd": KDTerm, "hidden_mse": HiddenMSETerm, "filtered_mse": FilteredMSETerm,
                                 "pooled": PooledTerm, "contrastive": ContrastiveTerm}
if TERMS.keys() != LOSSES.keys():
    raise ImportError(f"losses.TERMS and config.LOSSES name different terms: {sorted(TERMS)} vs {sorted(LOSSES)}")


def build_terms(specs: Sequence[LossTerm], student_layers: int, teacher_layers: int | None, student_dim: int,
                teacher_dim: int | None, num_classes: int) -> list[Term]:
    """Term modules for ``specs``; layer terms without explicit pairs get the uniform map."""
    terms: list[Term] = []
    for spec in specs:
        cls = TERMS[spec.loss]
        if issubclass(cls, _LayerTerm):
            pairs = spec.layers or uniform_layer_map(student_layers, teacher_layers, spec.include_embeddings)
            terms.append(cls(spec, pairs, student_dim, teacher_dim, num_classes))
        elif cls is PooledTerm:
            terms.append(cls(spec, student_dim, teacher_dim))
        else:
            terms.append(cls(spec))
    return terms
