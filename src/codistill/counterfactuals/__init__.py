"""Counterfactual generation for CoD: minimal edits of the originals that flip the teacher.

:func:`generate_counterfactuals` takes the CoD half of a k-shot sample (the k/2 originals nested inside the
baseline's k), chooses each original's target label, runs a generator, has the teacher verify every
candidate, and writes one JSON row per original plus a quality summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Sequence

from codistill.counterfactuals.base import Attempt, CFRequest, CFResult, CounterfactualGenerator
from codistill.counterfactuals.edits import DictLexicon, EditSearchGenerator, WordNetLexicon
from codistill.counterfactuals.llm import ChatClient, LLMConfig, LLMGenerator
from codistill.counterfactuals.metrics import quality_summary, word_edit_distance
from codistill.counterfactuals.verify import Verifier, check_candidate
from codistill.data import TextDataset, sample_from
from codistill.errors import ConfigError
from codistill.fileio import atomic_write_json, atomic_write_text

__all__ = [
    "Attempt", "CFRequest", "CFResult", "ChatClient", "CounterfactualGenerator", "DictLexicon",
    "EditSearchGenerator", "LLMConfig", "LLMGenerator", "Verifier", "WordNetLexicon", "check_candidate",
    "choose_targets", "generate_counterfactuals", "quality_summary", "summary_path", "word_edit_distance",
]


def choose_targets(probs_before, labels: Sequence[int]) -> list[int]:
    """Each original's target: the class other than its label that the teacher finds most likely
    (``1 - y`` for two classes)."""
    targets = []
    for p, y in zip(probs_before.tolist(), labels):
        others = [c for c in range(len(p)) if c != y]
        targets.append(max(others, key=p.__getitem__))
    return targets


def summary_path(out: str | Path) -> Path:
    """``cf.jsonl`` -> ``cf.summary.json``."""
    out = Path(out)
    return out.with_name(out.stem + ".summary.json")


def generate_counterfactuals(dataset: TextDataset, verifier: Verifier, generator: CounterfactualGenerator,
                             out: str | Path, *, k: int, seed: int = 0, on_failure: str = "skip",
                             progress: bool = True) -> dict[str, Any]:
    """Counterfactuals for the CoD half of the k-shot sample of ``dataset`` (seed ``seed``), written to
    ``out`` (JSONL, one row per original) and ``summary_path(out)``. Returns the summary.

    ``on_failure``: ``skip`` marks originals without a flipping candidate ``"use": false`` (distill leaves
    them out); ``keep-best`` uses the candidate closest to the target instead, labelled with the target.
    """
    if on_failure not in ("skip", "keep-best"):
        raise ConfigError(f"--on-failure must be 'skip' or 'keep-best', got '{on_failure}'")
    if k % 2 or (k // 2) % dataset.num_classes:
        raise ConfigError(f"k={k}: CoD takes k/2 originals, so k/2 must be divisible by the number of classes "
                          f"({dataset.num_classes})")
    sample = sample_from(dataset, k // 2, seed)
    start = time.perf_counter()
    before = verifier.probs(sample.texts)
    targets = choose_targets(before, sample.labels)
    requests = [CFRequest(i, t, y, tg) for i, (t, y, tg) in enumerate(zip(sample.texts, sample.labels, targets))]
    results = generator.generate(requests, verifier, dataset.label_names, progress=progress)
    seconds = time.perf_counter() - start
    rows = []
    for res, pool_index in zip(results, sample.indices):
        row = res.to_row(dataset.label_names)
        row["pool_index"] = pool_index
        row["use"] = bool(row["counterfactual"]) and (row["flipped"] or on_failure == "keep-best")
        rows.append(row)
    summary = quality_summary(rows)
    summary.update({
        "dataset": dataset.name, "k": k, "seed": seed, "generator": generator.name, "on_failure": on_failure,
        "used": sum(r["use"] for r in rows), "seconds": seconds,
        "counterfactuals_per_second": len(rows) / seconds if seconds > 0 else None,
        "teacher_calls": verifier.calls, "texts_scored": verifier.texts_scored,
    })
    if isinstance(generator, LLMGenerator):
        summary["llm"] = {"base_url": generator.cfg.base_url, "model": generator.cfg.model,
                          **generator.client.stats.as_dict()}
    atomic_write_text(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    atomic_write_json(summary_path(out), summary)
    return summary
