"""Distillation losses as pure functions, plus the two small trainable pieces they need (projections and
TED's task-aware filters). Shapes: B batch, T tokens, D hidden width, C classes, L matched layer pairs.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of hard labels: mean_b -log softmax(z_b)[y_b].

    Args: logits ``(B, C)``; labels ``(B,)`` class indices. Returns a scalar.
    """
    return F.cross_entropy(logits, labels)


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
    widths agree and ``force`` is off). Its parameters must be given to the optimizer."""

    def __init__(self, num_pairs: int, student_dim: int, teacher_dim: int, force: bool = False) -> None:
        super().__init__()
        self.needed = force or student_dim != teacher_dim
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


def masked_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens: ``(B, T, D), (B, T) -> (B, D)``."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


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
