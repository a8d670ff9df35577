"""The shared verifier (the teacher decides whether a candidate flipped) and the text checks every
candidate passes before the teacher sees it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Callable, Sequence

from codistill.config import TrainConfig
from codistill.counterfactuals.base import FLIPPED, NOT_FLIPPED, Attempt
from codistill.counterfactuals.metrics import word_edit_distance, words

if TYPE_CHECKING:  # torch is imported when texts are scored, so the command line starts without it
    import torch

Scorer = Callable[[Sequence[str]], "torch.Tensor"]

JUDGE_TRIES = 3  # judged candidates per original when a guide stands in for an expensive judge

REFUSAL = re.compile(
    r"^\s*(i['’]?m sorry|i am sorry|sorry,|i can(?:not|['’]t)|i won['’]t|i am unable|i['’]m unable|as an ai"
    r"|i apologi[sz]e|unfortunately,? i)", re.IGNORECASE)
META = re.compile(
    r"\b(original text|target label|edited text|counterfactual|the classifier|as few words|minimal (?:edit|change)"
    r"|i (?:changed|replaced|modified)|here is|here's)\b", re.IGNORECASE)


class Verifier:
    """Scores texts with the teacher and judges candidates: flipped iff the teacher's top class is the target.

    ``scorer`` maps texts to class probabilities ``(N, C)``; :meth:`from_classifier` wraps a model. Tests
    pass a rule-based scorer whose behaviour they control.

    With a ``judge`` (an expensive teacher, e.g. an LLM), ``scorer`` is only a guide (a local proxy,
    :mod:`.proxy`): :meth:`probs` asks the guide, while :meth:`verify` and :meth:`judge_probs` ask the judge,
    which sees each distinct text once (its answers are remembered). A generator that searches gives each
    original at most ``judge_tries`` judged candidates. Without a judge the scorer does everything.

    Attributes:
        calls, texts_scored: batched calls to the scorer (the guide) and the texts they scored.
        judge_calls, judge_texts: calls to the judge and the distinct texts it was sent.
        proxy_info: what the guide is (a proxy's ``info``: rows, encoder, agreement) when the scorer is a
            stand-in for the teacher; ``None`` otherwise.
    """

    def __init__(self, scorer: Scorer, judge: Scorer | None = None, judge_tries: int = JUDGE_TRIES) -> None:
        if judge_tries < 1:
            raise ValueError(f"judge_tries must be >= 1, got {judge_tries}")
        self.scorer = scorer
        self.judge = judge
        self.judge_tries = judge_tries
        self.calls = 0
        self.texts_scored = 0
        self.judge_calls = 0
        self.judge_texts = 0
        self.proxy_info: dict | None = None
        self._judged: dict[str, list[float]] = {}

    @property
    def has_judge(self) -> bool:
        return self.judge is not None

    @classmethod
    def from_classifier(cls, clf, batch_size: int = TrainConfig.eval_batch_size,
                        max_length: int = TrainConfig.max_length) -> "Verifier":
        from codistill.evaluate import predict_logits

        device = next(clf.model.parameters()).device

        def scorer(texts: Sequence[str]) -> torch.Tensor:
            return predict_logits(clf.model, clf.tokenizer, list(texts), batch_size, max_length, device).softmax(-1)

        return cls(scorer)

    def probs(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities ``(N, C)`` (one batched call; empty input gives an empty tensor)."""
        import torch

        if not texts:
            return torch.empty(0, 0)
        self.calls += 1
        self.texts_scored += len(texts)
        return torch.as_tensor(self.scorer(list(texts)), dtype=torch.float32)

    def judge_probs(self, texts: Sequence[str]) -> torch.Tensor:
        """The judge's class probabilities ``(N, C)``: one batched call for the texts it has not seen yet
        (none when it has seen them all); :meth:`probs` when there is no judge."""
        import torch

        if self.judge is None:
            return self.probs(texts)
        if not texts:
            return torch.empty(0, 0)
        new = [t for t in dict.fromkeys(texts) if t not in self._judged]
        if new:
            self.judge_calls += 1
            self.judge_texts += len(new)
            for text, row in zip(new, torch.as_tensor(self.judge(new), dtype=torch.float32).tolist()):
                self._judged[text] = row
        return torch.tensor([self._judged[t] for t in texts], dtype=torch.float32)

    def verify(self, texts: Sequence[str], targets: Sequence[int], details: Sequence[str] | None = None) -> list[Attempt]:
        """Verdicts for candidates ``texts`` aimed at ``targets`` (one batched call to the judge, or to the
        scorer when there is none)."""
        p = self.judge_probs(texts)
        details = details or [""] * len(texts)
        out = []
        for i, (text, target) in enumerate(zip(texts, targets)):
            row = p[i].tolist()
            reason = FLIPPED if is_flip(row, target) else NOT_FLIPPED
            out.append(Attempt(text=text, reason=reason, detail=details[i], probs=[round(x, 6) for x in row]))
        return out


def is_flip(probs: Sequence[float], target: int) -> bool:
    """The teacher predicts ``target`` outright: its probability beats every other class (a tie does not)."""
    return all(probs[target] > q for c, q in enumerate(probs) if c != target)


def _letters(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def check_candidate(original: str, candidate: str | None, max_changed_share: float = 0.5,
                    max_length_ratio: float = 2.0) -> str | None:
    """Why ``candidate`` is not an acceptable minimal edit of ``original`` (``None`` when it is).

    Rejected: empty; identical to the original (ignoring case, spacing, punctuation and tokenization:
    ``We don't`` echoes ``we do n't``); a refusal; text that talks
    about the task or echoes the prompt instead of rewriting; much longer than the original; or a
    rewrite that changes more than ``max_changed_share`` of the words (a flip by wholesale rewrite is
    not a counterfactual).
    """
    if candidate is None or not candidate.strip():
        return "empty"
    if _letters(candidate) == _letters(original):  # an echo, however re-cased, re-spaced or re-tokenized
        return "unchanged"
    if REFUSAL.search(candidate):
        return "refusal"
    if META.search(candidate) and not META.search(original):
        return "echo"
    n_orig = max(1, len(words(original)))
    if len(candidate) > max_length_ratio * max(len(original), 20):
        return "too_long"
    if word_edit_distance(original, candidate) > max(1, round(max_changed_share * n_orig)):
        return "too_many_edits"
    return None
