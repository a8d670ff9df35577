"""Each loss equals its formula on hand-made tensors, is zero when student equals teacher, ignores padding."""

from __future__ import annotations

import math

import pytest
import torch

from codistill.losses import (
    Projections,
    TaskFilters,
    ce_loss,
    kd_loss,
    lwd_loss,
    masked_mean_pool,
    masked_mse,
    ted_loss,
)


def test_ce_matches_formula() -> None:
    z = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 0])
    expected = (-math.log(math.exp(2) / (math.exp(2) + 1)) - math.log(1 / (1 + math.e))) / 2
    assert ce_loss(z, y).item() == pytest.approx(expected, rel=1e-6)


def test_kd_matches_formula_and_temperature_squared() -> None:
    zs = torch.tensor([[1.0, 0.0, -1.0]])
    zt = torch.tensor([[0.0, 2.0, 0.5]])
    tau = 2.0

    def softmax(v):
        e = [math.exp(x / tau) for x in v]
        return [x / sum(e) for x in e]

    p, q = softmax(zt[0].tolist()), softmax(zs[0].tolist())
    expected = tau**2 * sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))
    assert kd_loss(zs, zt, tau).item() == pytest.approx(expected, rel=1e-5)
    assert kd_loss(zt, zt, tau).item() == pytest.approx(0.0, abs=1e-7)
    batch = torch.cat([zs, zt])
    assert kd_loss(batch, torch.cat([zt, zt]), tau).item() == pytest.approx(expected / 2, rel=1e-5)


def test_kd_gradient_reaches_student_only() -> None:
    zs = torch.randn(4, 2, requires_grad=True)
    zt = torch.randn(4, 2, requires_grad=True)
    kd_loss(zs, zt.detach(), 2.0).backward()
    assert zs.grad is not None and zs.grad.abs().sum() > 0 and zt.grad is None


def test_masked_mse_formula_and_padding_ignored() -> None:
    s = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    t = torch.tensor([[[0.0, 2.0], [3.0, 2.0], [-5.0, 7.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # real tokens: (1-0)^2 + 0 + 0 + (4-2)^2 = 5 over 2 tokens * 2 dims
    assert masked_mse(s, t, mask).item() == pytest.approx(5 / 4)
    s2 = s.clone()
    s2[0, 2] = torch.tensor([-1e3, 1e3])  # change padding only
    assert masked_mse(s2, t, mask).item() == pytest.approx(5 / 4)
    assert masked_mse(t, t, torch.ones(1, 3)).item() == 0.0


def test_lwd_weights_projections_and_their_gradients() -> None:
    torch.manual_seed(0)
    student = [torch.randn(2, 5, 4) for _ in range(3)]
    teacher = [torch.randn(2, 5, 8) for _ in range(5)]
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    proj = Projections(2, 4, 8)
    assert proj.needed and len(list(proj.parameters())) == 4
    pairs = [(1, 2, 1.0), (2, 4, 0.5)]
    loss = lwd_loss(student, teacher, mask, pairs, proj)
    expected = masked_mse(proj(0, student[1]), teacher[2], mask) + 0.5 * masked_mse(proj(1, student[2]), teacher[4], mask)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in proj.parameters())
    same = Projections(1, 8, 8)
    assert not same.needed and list(same.parameters()) == []
    assert lwd_loss(teacher, teacher, mask, [(2, 2, 1.0)], same).item() == 0.0


def test_ted_filters_task_loss_and_matching() -> None:
    torch.manual_seed(0)
    hidden = [torch.randn(3, 4, 6) for _ in range(3)]
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    labels = torch.tensor([0, 1, 1])
    filters = TaskFilters([1, 2], in_dim=6, filter_dim=5, num_classes=2)
    loss = filters.task_loss(hidden, mask, labels)
    f = filters.filters[0]
    logits = f.head(masked_mean_pool(f.filter(hidden[1]), mask))
    expected = (ce_loss(logits, labels) + ce_loss(filters.filters[1].task_logits(hidden[2], mask), labels)) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    out = filters.filtered(hidden)
    assert [o.shape for o in out] == [torch.Size([3, 4, 5])] * 2
    assert ted_loss(out, [o.detach() for o in out], mask, [1.0, 1.0]).item() == 0.0
    shifted = [o + 1.0 for o in out]
    assert ted_loss(out, shifted, mask, [1.0, 2.0]).item() == pytest.approx(3.0, rel=1e-6)


def test_masked_mean_pool_ignores_padding() -> None:
    h = torch.tensor([[[1.0], [3.0], [99.0]]])
    assert masked_mean_pool(h, torch.tensor([[1, 1, 0]])).item() == pytest.approx(2.0)


def test_pooled_loss_formulas() -> None:
    from codistill.losses import pooled_loss

    s = torch.tensor([[1.0, 2.0, 2.0], [0.0, 3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0, 2.0], [0.0, 6.0, 8.0]])
    assert pooled_loss(s, t).item() == pytest.approx(((0 + 4 + 0) + (0 + 9 + 16)) / 6)
    # cosine: row 1 cos = (1 + 0 + 4) / (3 * sqrt(5)); row 2 is parallel (cos 1)
    assert pooled_loss(s, t, "cosine").item() == pytest.approx(((1 - 5 / (3 * math.sqrt(5))) + 0.0) / 2, rel=1e-6)
    assert pooled_loss(t, t).item() == 0.0 and pooled_loss(2 * t, t, "cosine").item() == pytest.approx(0.0, abs=1e-6)


def test_pooled_term_projects_the_masked_mean_of_the_last_layer() -> None:
    from codistill.config import LossTerm
    from codistill.losses import PooledTerm, StepOutputs

    torch.manual_seed(0)
    term = PooledTerm(LossTerm("pooled", weight=0.5), student_dim=4, teacher_dim=6)
    hidden = [torch.randn(2, 3, 4), torch.randn(2, 3, 4)]  # embeddings, last layer
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    teacher = torch.randn(2, 6)
    out = StepOutputs(labels=torch.tensor([0, 1]), mask=mask, student_logits=torch.zeros(2, 2),
                      student_hidden=hidden, teacher_pooled=teacher)
    pooled = torch.stack([hidden[-1][0, :2].mean(0), hidden[-1][1].mean(0)])  # padding left out
    expected = 0.5 * ((term.projection(pooled) - teacher) ** 2).mean()
    loss = term(out)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert term.projection.weight.grad is not None and term.projection.weight.grad.abs().sum() > 0
    from codistill.errors import ConfigError

    with pytest.raises(ConfigError, match="needs equal widths"):
        PooledTerm(LossTerm("pooled", proj="none"), student_dim=4, teacher_dim=6)
    with pytest.raises(ConfigError, match="distance must be 'mse' or 'cosine'"):
        LossTerm("pooled", distance="l1")


def test_pair_similarity_loss_matches_setfit_formula() -> None:
    from codistill.losses import pair_similarity_loss

    e = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 2.0]])
    y = torch.tensor([0, 0, 1])
    c = 1 / math.sqrt(2)
    # pairs (0,1) same label: (c - 1)^2; (0,2) different: (0 - 0)^2; (1,2) different: (c - 0)^2
    expected = ((c - 1) ** 2 + 0.0 + c**2) / 3
    assert pair_similarity_loss(e, y).item() == pytest.approx(expected, rel=1e-6)
    # zero when same-label embeddings coincide in direction and different labels are orthogonal
    assert pair_similarity_loss(torch.tensor([[2.0, 0.0], [1.0, 0.0], [0.0, 3.0]]), y).item() == pytest.approx(0.0, abs=1e-7)
    # scale-free, and nothing to compare in a batch of one
    assert pair_similarity_loss(5 * e, y).item() == pytest.approx(expected, rel=1e-5)
    assert pair_similarity_loss(e[:1], y[:1]).item() == 0.0


def test_contrastive_term_pools_real_tokens_only() -> None:
    from codistill.config import LossTerm
    from codistill.losses import ContrastiveTerm, StepOutputs, pair_similarity_loss

    term = ContrastiveTerm(LossTerm("contrastive", weight=3.0))
    assert not term.kind.teacher and term.kind.student_hidden
    hidden = torch.randn(3, 4, 5)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    labels = torch.tensor([1, 0, 1])
    step = StepOutputs(labels=labels, mask=mask, student_logits=torch.zeros(3, 2), student_hidden=[hidden])
    expected = 3.0 * pair_similarity_loss(masked_mean_pool(hidden, mask), labels)
    assert term(step).item() == pytest.approx(expected.item(), rel=1e-6)
    changed = hidden.clone()
    changed[0, 2:] = 100.0  # padding of the first text
    step.student_hidden = [changed]
    assert term(step).item() == pytest.approx(expected.item(), rel=1e-6)
