"""A cheap local stand-in for an expensive teacher: a frozen sentence encoder and a logistic regression
fitted to the teacher's probabilities on a few hundred texts.

The edit search scores hundreds of candidate texts per original (every word left out, every beam child);
with an LLM teacher each is a request. The proxy guides that search instead, and the teacher only judges
the candidates the proxy believes flip it (:class:`~.verify.Verifier` with a ``judge``).

The texts are embedded by the mean-pooled last hidden state of a frozen ``transformers.AutoModel``
(``minilm``, a local folder or a Hub name, :func:`codistill.models.resolve_model_path`); the features are
standardised on the training rows, and a multinomial logistic regression is fitted by L-BFGS to the
teacher's *soft* probabilities (cross-entropy against the soft targets plus an L2 penalty on the weights).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Sequence


if TYPE_CHECKING:
    import torch

DEFAULT_L2 = 1e-3  # the penalty on the weights, per unit of mean cross-entropy
MAX_LENGTH = 128  # tokens the encoder reads per text
BATCH_SIZE = 64  # texts per encoder forward pass


def proxy_rows_from(pool_texts: Sequence[str], n: int, seed: int) -> list[str]:
    """``n`` distinct texts of ``pool_texts`` (an unlabelled pool), drawn with ``random.Random(f"proxy-{seed}")``;
    all of them, in pool order, when there are no more than ``n``."""
    distinct = list(dict.fromkeys(pool_texts))
    if len(distinct) <= n:
        return distinct
    return random.Random(f"proxy-{seed}").sample(distinct, n)


class _Encoder:
    """A frozen encoder: mean-pooled last hidden states, batched, without gradients."""

    def __init__(self, name: str, what: str) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        from codistill.models import quiet_loading, resolve_model_path

        source = resolve_model_path(name)
        with quiet_loading(what, name, errors_only=True):  # a classifier's head left unused is intended
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source)
        self.model.requires_grad_(False).eval()
        self.model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))

    def __call__(self, texts: Sequence[str]) -> "torch.Tensor":
        import torch

        device = next(self.model.parameters()).device
        out = []
        with torch.no_grad():
            for start in range(0, len(texts), BATCH_SIZE):
                enc = self.tokenizer(list(texts[start:start + BATCH_SIZE]), padding=True, truncation=True,
                                     max_length=MAX_LENGTH, return_tensors="pt").to(device)
                hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                out.append(((hidden * mask).sum(1) / mask.sum(1).clamp(min=1)).float().cpu())
        width = self.model.config.hidden_size
        return torch.cat(out) if out else torch.empty(0, width)


class Proxy:
    """The fitted stand-in: ``proxy(texts)`` gives class probabilities ``(N, C)`` (float32).

    Attributes:
        info: ``rows`` (texts it was fitted on), ``encoder``, ``classes``, ``l2`` and ``agreement`` (the share
            of its training rows on which its top class is the teacher's).
    """

    def __init__(self, encoder: _Encoder, mean, scale, weight, bias, info: dict[str, Any]) -> None:
        self.encoder = encoder
        self.mean, self.scale, self.weight, self.bias = mean, scale, weight, bias
        self.info = info

    def logits(self, texts: Sequence[str]) -> "torch.Tensor":
        import torch

        if not len(texts):
            return torch.empty(0, self.bias.shape[0])
        return ((self.encoder(texts) - self.mean) / self.scale) @ self.weight + self.bias

    def __call__(self, texts: Sequence[str]) -> "torch.Tensor":
        return self.logits(list(texts)).softmax(-1)


def fit_proxy(texts: Sequence[str], probs, encoder: str, seed: int = 0, l2: float = DEFAULT_L2,
              what: str = "proxy encoder") -> Proxy:
    """A :class:`Proxy` fitted to the teacher's class probabilities ``probs`` ``(N, C)`` on ``texts``.

    Minimises the mean cross-entropy of the softmax against the soft targets plus ``l2 / 2`` times the
    squared weights (not the biases), with ``scipy.optimize.minimize(method="L-BFGS-B")``; the problem is
    convex, ``seed`` only draws the small initial weights. ``what`` names the encoder option in errors.
    """
    import numpy as np
    import torch
    from scipy.optimize import minimize

    texts = list(texts)
    targets = np.asarray(torch.as_tensor(probs, dtype=torch.float64), dtype=np.float64)
    if not texts or targets.ndim != 2 or targets.shape[0] != len(texts) or targets.shape[1] < 2:
        raise ValueError(f"fit_proxy needs one row of at least two class probabilities per text, got "
                         f"{len(texts)} texts and probabilities of shape {tuple(targets.shape)}")
    targets = targets / targets.sum(1, keepdims=True)
    enc = _Encoder(encoder, what)
    feats = enc(texts).double()
    mean, scale = feats.mean(0), feats.std(0, unbiased=False).clamp(min=1e-6)
    x = ((feats - mean) / scale).numpy()
    n, d = x.shape
    c = targets.shape[1]

    def loss(theta):
        w, b = theta[: d * c].reshape(d, c), theta[d * c:]
        z = x @ w + b
        z -= z.max(1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(1, keepdims=True))
        value = -(targets * log_p).sum() / n + 0.5 * l2 * (w * w).sum()
        residual = (np.exp(log_p) - targets) / n
        return value, np.concatenate([(x.T @ residual + l2 * w).ravel(), residual.sum(0)])

    theta0 = np.concatenate([np.random.default_rng(seed).normal(0.0, 0.01, d * c), np.zeros(c)])
    theta = minimize(loss, theta0, jac=True, method="L-BFGS-B", options={"maxiter": 1000}).x
    weight = torch.tensor(theta[: d * c].reshape(d, c), dtype=torch.float32)
    bias = torch.tensor(theta[d * c:], dtype=torch.float32)
    proxy = Proxy(enc, mean.float(), scale.float(), weight, bias, {})
    fitted = torch.as_tensor(x, dtype=torch.float32) @ weight + bias
    agreement = float((fitted.argmax(-1) == torch.as_tensor(targets).argmax(-1)).double().mean())
    proxy.info = {"rows": n, "encoder": encoder, "classes": c, "l2": l2, "agreement": round(agreement, 6)}
    return proxy
