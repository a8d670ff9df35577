"""The generator interface and the records every generator produces.

A generator receives :class:`CFRequest` s (text, current label, target label) and a :class:`~.verify.Verifier`
(the teacher), and returns one :class:`CFResult` per request with every candidate it tried
(:class:`Attempt`, each with the verifier's verdict and the reason it was kept or rejected).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from codistill.counterfactuals.metrics import word_edit_distance

# Reasons recorded for a candidate. Only FLIPPED candidates count as counterfactuals.
FLIPPED = "flipped"
NOT_FLIPPED = "not_flipped"
REQUEST_FAILED = "request_failed"
NO_EDIT_FOUND = "no_edit_found"
TOO_LONG = "too_long"  # an original longer than a generator searches


@dataclass
class CFRequest:
    """One original to edit: its position in the CoD sample, text, current label and target label."""

    index: int
    text: str
    label: int
    target: int


@dataclass
class Attempt:
    """One candidate and the verdict on it.

    Attributes:
        text: the candidate (``None`` when no candidate could be produced, e.g. a failed request).
        reason: ``flipped``, ``not_flipped`` or why it was rejected before the teacher saw it (``empty``,
            ``unchanged``, ``refusal``, ``echo``, ``too_long``, ``too_many_edits``, ``request_failed``, ...).
        detail: what the generator did (the edits applied, the LLM attempt number, the error).
        probs: the teacher's class probabilities on the candidate (when it was verified).
    """

    text: str | None
    reason: str
    detail: str = ""
    probs: list[float] | None = None

    @property
    def flipped(self) -> bool:
        return self.reason == FLIPPED


@dataclass
class CFResult:
    """The outcome for one original: the chosen counterfactual (if any) and everything tried."""

    request: CFRequest
    generator: str
    probs_before: list[float]
    attempts: list[Attempt] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)

    @property
    def best(self) -> Attempt | None:
        """The first flipped candidate; else the verified candidate closest to the target (keep-best)."""
        for a in self.attempts:
            if a.flipped:
                return a
        verified = [a for a in self.attempts if a.probs is not None and a.text]
        if not verified:
            return None
        return max(verified, key=lambda a: a.probs[self.request.target])

    @property
    def flipped(self) -> bool:
        return any(a.flipped for a in self.attempts)

    def to_row(self, label_names: Sequence[str]) -> dict[str, Any]:
        """The JSONL row written for this original (read back by ``codistill distill --counterfactuals``)."""
        best = self.best
        text = best.text if best is not None else None
        more = [a.text for a in self.attempts if a.flipped and a is not best]
        return {
            "index": self.request.index,
            "text": self.request.text,
            "label": self.request.label,
            "label_name": label_names[self.request.label],
            "counterfactual": text,
            "more_counterfactuals": more,
            "target_label": self.request.target,
            "target_name": label_names[self.request.target],
            "probs_before": self.probs_before,
            "probs_after": best.probs if best is not None else None,
            "edited_words": word_edit_distance(self.request.text, text) if text else None,
            "generator": self.generator,
            "attempts": len(self.attempts),
            "flipped": self.flipped,
            "usage": self.usage,
            "candidates": [asdict(a) for a in self.attempts],
        }


class CounterfactualGenerator(ABC):
    """Anything that proposes minimal edits flipping the teacher from ``label`` to ``target``."""

    name: str = "generator"

    @abstractmethod
    def generate(self, requests: Sequence[CFRequest], verifier, label_names: Sequence[str],
                 progress: bool = True) -> list[CFResult]:
        """One :class:`CFResult` per request, in order; every candidate verified by ``verifier``."""


def choose_targets(probs_before, labels: Sequence[int]) -> list[int]:
    """Each original's target: the class other than its label that the teacher finds most likely
    (``1 - y`` for two classes)."""
    targets = []
    for p, y in zip(probs_before.tolist(), labels):
        others = [c for c in range(len(p)) if c != y]
        targets.append(max(others, key=p.__getitem__))
    return targets
