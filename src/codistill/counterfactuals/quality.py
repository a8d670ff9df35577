"""Model-based quality of counterfactual rows: fluency under a small causal LM and validity by a judge.

*Fluency*: the perplexity of each counterfactual relative to its original's under the LM
(:class:`~.lm.CausalLM`, SmolLM2-135M-Instruct by default); a ratio near 1 reads as naturally as the
original, an adversarial word salad scores far above. *Validity*: an independent classifier over the same
labels (a different backbone or training data than the teacher) also predicts the target: the teacher's
verdict alone cannot tell a real flip from an exploit of the teacher.

:class:`QualityScorer` adds ``fluency_ratio``, ``judge_label``, ``judge_probs`` and
``judge_original_label`` to rows; :func:`~.metrics.quality_summary` summarizes them. :func:`score_file`
scores an existing counterfactual file in place (``codistill quality``); sweeps and ``codistill
counterfactuals`` score what they write. The recipe (which LM, which judge) is stored in the summary, so a
file scored by another LM or judge is scored again, never mixed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from codistill.counterfactuals.metrics import quality_summary
from codistill.counterfactuals.rows import summary_path
from codistill.data import iter_json_lines
from codistill.errors import ConfigError, DataError
from codistill.fileio import atomic_write_json, atomic_write_jsonl, read_json


class QualityScorer:
    """Scores rows with an optional LM (fluency) and an optional judge (validity).

    Args:
        lm: a :class:`~.lm.CausalLM` (or anything with ``perplexity_ratios``), or ``None``.
        judge: a :class:`~.verify.Verifier` over the judge classifier, or ``None``.
        lm_name, judge_name: what they are, recorded in the summary.
        judge_labels: the judge's class names (checked against the rows' names).
    """

    def __init__(self, lm=None, judge=None, lm_name: str | None = None, judge_name: str | None = None,
                 judge_labels: Sequence[str] | None = None) -> None:
        self.lm = lm
        self.judge = judge
        self.lm_name = lm_name if lm is not None else None
        self.judge_name = judge_name if judge is not None else None
        self.judge_labels = list(judge_labels) if judge_labels is not None else None

    @classmethod
    def load(cls, lm: str | None = None, judge: str | None = None) -> "QualityScorer":
        """From names: ``lm`` a causal LM (``smollm2``, a folder, a Hub name), ``judge`` a classifier."""
        from codistill.counterfactuals.lm import CausalLM
        from codistill.counterfactuals.verify import Verifier
        from codistill.models import label_names, load_classifier

        model = CausalLM.load(lm) if lm else None
        clf = load_classifier(judge, what="judge") if judge else None
        return cls(model, Verifier.from_classifier(clf) if clf else None, lm, judge,
                   label_names(clf.model.config) if clf else None)

    @property
    def recipe(self) -> dict[str, Any]:
        return {"lm": self.lm_name, "judge": self.judge_name}

    @property
    def active(self) -> bool:
        return self.lm is not None or self.judge is not None

    def check_labels(self, rows: Sequence[dict[str, Any]], where: str) -> None:
        """The judge's classes must be the rows' classes, by index and name (generic ``LABEL_i`` names: by
        index only)."""
        if self.judge_labels is None:
            return
        from codistill.models import generic_labels

        generic = generic_labels(self.judge_labels)
        for r in rows:
            for idx, name in ((r.get("label"), r.get("label_name")), (r.get("target_label"), r.get("target_name"))):
                if idx is None or name is None:
                    continue
                if idx >= len(self.judge_labels) or (not generic and self.judge_labels[idx] != name):
                    raise ConfigError(f"judge '{self.judge_name}' has labels {self.judge_labels}, but {where} names "
                                      f"label {idx} '{name}': the judge must classify the same labels")

    def score(self, rows: list[dict[str, Any]], where: str = "the rows") -> list[dict[str, Any]]:
        """Add the model-based fields to every row with a counterfactual (in place; returns ``rows``)."""
        for r in rows:
            for key in ("fluency_ratio", "judge_label", "judge_probs", "judge_original_label"):
                r.pop(key, None)
        todo = [r for r in rows if r.get("counterfactual")]
        if self.lm is not None and todo:
            ratios = self.lm.perplexity_ratios([r["text"] for r in todo], [r["counterfactual"] for r in todo])
            for r, x in zip(todo, ratios):
                r["fluency_ratio"] = round(float(x), 6)
        if self.judge is not None and rows:
            self.check_labels(rows, where)
            originals = self.judge.probs([r["text"] for r in rows])
            for r, p in zip(rows, originals.tolist()):
                r["judge_original_label"] = max(range(len(p)), key=p.__getitem__)
            if todo:
                probs = self.judge.probs([r["counterfactual"] for r in todo])
                for r, p in zip(todo, probs.tolist()):
                    r["judge_probs"] = [round(x, 6) for x in p]
                    r["judge_label"] = max(range(len(p)), key=p.__getitem__)
        return rows


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """The raw rows of a counterfactual file (as ``codistill counterfactuals`` writes them)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such counterfactual file")
    rows = []
    for n, row in iter_json_lines(path, path.read_text(encoding="utf-8")):
        missing = [k for k in ("text", "counterfactual", "target_label") if k not in row]
        if missing:
            raise DataError(f"{path}, line {n}: not a counterfactual row (no {', '.join(missing)})")
        rows.append(row)
    return rows


def score_file(path: str | Path, scorer: QualityScorer, force: bool = False) -> dict[str, Any]:
    """Score the rows of counterfactual file ``path`` and rewrite it and its summary (atomically); the
    summary keeps every field it had and gains the quality figures. A file already scored with the same
    LM and judge is left alone unless ``force``. Returns the summary."""
    path = Path(path)
    rows = read_rows(path)
    spath = summary_path(path)
    old = read_json(spath) if spath.is_file() else {}
    if not force and old.get("quality") == scorer.recipe:
        return old
    scorer.score(rows, where=str(path))
    summary = {**old, **quality_summary(rows), "quality": scorer.recipe}
    atomic_write_jsonl(path, rows)
    atomic_write_json(spath, summary)
    return summary
