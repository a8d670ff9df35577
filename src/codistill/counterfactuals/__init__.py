"""Counterfactual generation for CoD: minimal edits of the originals that flip the teacher.

:func:`generate_counterfactuals` takes the CoD half of a k-shot sample (the k/2 originals nested inside the
baseline's k), chooses each original's target label, runs a generator, has the teacher verify every
candidate, and writes one JSON row per original plus a quality summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

from codistill.counterfactuals.base import REQUEST_FAILED, Attempt, CFRequest, CFResult, CounterfactualGenerator
from codistill.counterfactuals.chain import ChainConfig, ChainGenerator
from codistill.counterfactuals.edits import DictLexicon, EditSearchConfig, EditSearchGenerator, WordNetLexicon
from codistill.counterfactuals.llm import ChatClient, LLMConfig, LLMGenerator
from codistill.counterfactuals.metrics import edit_kind, edit_ops, quality_summary, word_edit_distance
from codistill.counterfactuals.quality import QualityScorer, score_file
from codistill.counterfactuals.verify import Verifier, check_candidate
from codistill.data import TextDataset, sample_from
from codistill.errors import CodistillError, ConfigError
from codistill.fileio import atomic_write_json, atomic_write_jsonl

__all__ = [
    "Attempt", "CFRequest", "CFResult", "ChainConfig", "ChainGenerator", "ChatClient", "CounterfactualGenerator", "CounterfactualsIncomplete",
    "DictLexicon", "EditSearchConfig", "EditSearchGenerator", "LLMConfig", "LLMGenerator", "QualityScorer",
    "Verifier", "WordNetLexicon", "check_candidate", "choose_targets", "edit_kind", "edit_ops",
    "generate_counterfactuals", "generator_config", "make_generator", "quality_summary", "score_file",
    "summary_path", "word_edit_distance",
]

GENERATORS = {"edits": EditSearchConfig, "llm": LLMConfig, "chain": ChainConfig}


def generator_config(spec: dict, default_cache_dir: str | None = None, where: str = "generator"):
    """The validated options of a generator spec ``{"name": "edits" | "llm" | "chain", **options}``."""
    from codistill.config import build_config

    if not isinstance(spec, dict) or spec.get("name") not in GENERATORS:
        name = spec.get("name") if isinstance(spec, dict) else spec
        raise ConfigError(f"{where}.name: must be one of {', '.join(GENERATORS)}, got {name!r}")
    opts = {k: v for k, v in spec.items() if k != "name"}
    if spec["name"] == "llm" and default_cache_dir is not None:
        opts.setdefault("cache_dir", default_cache_dir)
    return build_config(GENERATORS[spec["name"]], opts, where)


def make_generator(spec: dict, default_cache_dir: str | None = None, where: str = "generator") -> CounterfactualGenerator:
    """A generator from its spec (what sweeps and the command line both use)."""
    cfg = generator_config(spec, default_cache_dir, where)
    return cfg.build(default_cache_dir) if isinstance(cfg, ChainConfig) else cfg.build()


class CounterfactualsIncomplete(CodistillError):
    """Some originals got no answer because requests failed; the file holds what was done."""


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
                             progress: bool = True, scorer: QualityScorer | None = None) -> dict[str, Any]:
    """Counterfactuals for the CoD half of the k-shot sample of ``dataset`` (seed ``seed``), written to
    ``out`` (JSONL, one row per original) and ``summary_path(out)``. Returns the summary.

    ``on_failure``: ``skip`` marks originals without a flipping candidate ``"use": false`` (distill leaves
    them out); ``keep-best`` uses the candidate closest to the target instead, labelled with the target.
    ``scorer`` adds fluency and validity (:mod:`.quality`) to the rows and the summary.
    """
    if on_failure not in ("skip", "keep-best"):
        raise ConfigError(f"--on-failure must be 'skip' or 'keep-best', got '{on_failure}'")
    if k % 2 or (k // 2) % dataset.num_classes:
        raise ConfigError(f"k={k}: CoD takes k/2 originals, so k/2 must be divisible by the number of classes "
                          f"({dataset.num_classes})")
    sample = sample_from(dataset, k // 2, seed)
    start = time.perf_counter()
    before = verifier.probs(sample.texts)
    if before.shape[1] != dataset.num_classes:
        raise ConfigError(f"the teacher has {before.shape[1]} labels but dataset '{dataset.name}' has "
                          f"{dataset.num_classes} ({', '.join(dataset.label_names)})")
    targets = choose_targets(before, sample.labels)
    llms = [g for g in getattr(generator, "generators", [generator]) if isinstance(g, LLMGenerator)]
    stats_before = llms[0].client.stats.as_dict() if llms else {}  # a sweep reuses one client for every seed
    requests = [CFRequest(i, t, y, tg) for i, (t, y, tg) in enumerate(zip(sample.texts, sample.labels, targets))]
    results = generator.generate(requests, verifier, dataset.label_names, progress=progress)
    seconds = time.perf_counter() - start
    rows = []
    for res, pool_index in zip(results, sample.indices):
        row = res.to_row(dataset.label_names)
        row["pool_index"] = pool_index
        row["use"] = bool(row["counterfactual"]) and (row["flipped"] or on_failure == "keep-best")
        rows.append(row)
    if scorer is not None and scorer.active:
        scorer.score(rows, where=str(out))
    summary = quality_summary(rows)
    summary.update({
        "quality": scorer.recipe if scorer is not None and scorer.active else None,
        "dataset": dataset.name, "k": k, "seed": seed, "generator": generator.name, "on_failure": on_failure,
        "used": sum(r["use"] for r in rows), "seconds": seconds,
        "counterfactuals_per_second": len(rows) / seconds if seconds > 0 else None,
        "teacher_calls": verifier.calls, "texts_scored": verifier.texts_scored,
    })
    failed = [r for r, res in zip(rows, results)
              if not res.flipped and any(a.reason == REQUEST_FAILED for a in res.attempts)]
    fatal = getattr(generator, "fatal", None)
    summary.update({"failed_originals": len(failed), "complete": not failed and fatal is None, "fatal": fatal})
    if llms:
        after = llms[0].client.stats.as_dict()
        summary["llm"] = {"base_url": llms[0].cfg.base_url, "model": llms[0].cfg.model,
                          **{key: after[key] - stats_before[key] for key in after}}
        summary["generated_by"] = {name: sum(r["flipped"] and r["generator"] == name for r in rows)
                                   for name in sorted({r["generator"] for r in rows})}
    atomic_write_jsonl(out, rows)
    atomic_write_json(summary_path(out), summary)
    if not summary["complete"]:
        last = fatal or next((a.detail for res in results for a in reversed(res.attempts)
                              if a.reason == REQUEST_FAILED), "requests failed")
        raise CounterfactualsIncomplete(
            f"{len(failed)} of {len(rows)} originals got no counterfactual because requests failed ({last}); "
            f"wrote what was done to {out}: run the same command again to resume from the cache")
    return summary


def counterfactuals_for_run(dataset: TextDataset, teacher: str, out: str | Path, *, k: int, seed: int = 0,
                            cod: str = "replace", generator: dict | None = None, on_failure: str = "skip",
                            progress: bool = True, fluency_lm: str | None = None) -> dict[str, Any]:
    """Counterfactuals for a distillation run at budget ``k``: the CoD half of the k-shot sample (of the
    2k sample for ``augment``), made by ``generator`` (default: the edit search), verified by the
    teacher and scored for fluency by ``fluency_lm`` (``None``: not scored). Returns the summary."""
    from codistill.config import counterfactual_k
    from codistill.models import load_classifier

    verifier = Verifier.from_classifier(load_classifier(teacher, what="teacher"))
    gen = make_generator(generator or {"name": "edits"}, default_cache_dir=str(Path(out).parent / ".llm_cache"))
    scorer = QualityScorer.load(fluency_lm) if fluency_lm else None
    return generate_counterfactuals(dataset, verifier, gen, out, k=counterfactual_k(k, cod), seed=seed,
                                    on_failure=on_failure, progress=progress, scorer=scorer)
