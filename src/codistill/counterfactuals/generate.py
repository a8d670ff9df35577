"""Counterfactual files for CoD: minimal edits of the originals that flip the teacher.

:func:`generate_counterfactuals` takes the CoD half of a k-shot sample (the k/2 originals nested inside the
baseline's k), chooses each original's target label, runs a generator, has the teacher verify every
candidate, and writes one JSON row per original plus a quality summary.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from codistill import cod as cod_rules
from codistill.config import TrainConfig
from codistill.counterfactuals.base import REQUEST_FAILED, CFRequest, CounterfactualGenerator, choose_targets
from codistill.counterfactuals.edits import EditSearchGenerator
from codistill.counterfactuals.llm import LLMGenerator
from codistill.counterfactuals.metrics import quality_summary
from codistill.counterfactuals.quality import QualityScorer
from codistill.counterfactuals.registry import default_generator, make_generator
from codistill.counterfactuals.rows import summary_path
from codistill.counterfactuals.verify import Verifier
from codistill.data import TextDataset, sample_from
from codistill.errors import CodistillError
from codistill.fileio import (
    atomic_write_json,
    atomic_write_jsonl,
    check_output,
    source_files,
    strip_credentials,
)


class CounterfactualsIncomplete(CodistillError):
    """Some originals got no answer because requests failed; the file holds what was done."""


def check_counterfactual_output(out: str | Path, dataset: TextDataset) -> None:
    """A counterfactual file and its summary can be written at ``out`` without overwriting the dataset's
    files (checked before any model loads)."""
    inputs = source_files(dataset.source)
    check_output(out, inputs=inputs)
    check_output(summary_path(out), inputs=inputs, flag="--out (its summary)")


def generate_counterfactuals(dataset: TextDataset, verifier: Verifier, generator: CounterfactualGenerator,
                             out: str | Path, *, k: int, seed: int = 0, on_failure: str = cod_rules.ON_FAILURE[0],
                             progress: bool = True, scorer: QualityScorer | None = None,
                             allow_empty: bool = False) -> dict[str, Any]:
    """Counterfactuals for the CoD half of the k-shot sample of ``dataset`` (seed ``seed``), written to
    ``out`` (JSONL, one row per original) and ``summary_path(out)``. Returns the summary.

    ``on_failure``: ``skip`` marks originals without a flipping candidate ``"use": false`` (distill leaves
    them out); ``keep-best`` uses the candidate closest to the target instead, labelled with the target.
    ``scorer`` adds fluency and validity (:mod:`.quality`) to the rows and the summary. A file without a
    single usable counterfactual is written and then refused (:func:`codistill.cod.check_usable`) unless
    ``allow_empty``.
    """
    from codistill.models import check_teacher_labels

    cod_rules.check_on_failure(on_failure)
    check_counterfactual_output(out, dataset)
    sample = sample_from(dataset, cod_rules.edited_originals(k, dataset.num_classes), seed)
    start = time.perf_counter()
    counts = (verifier.calls, verifier.texts_scored, verifier.judge_texts)  # a sweep reuses a verifier for every seed
    before = verifier.judge_probs(sample.texts)  # the teacher itself, not a guide standing in for it
    if before.shape[1] != dataset.num_classes:
        check_teacher_labels([f"LABEL_{i}" for i in range(before.shape[1])], dataset)
    targets = choose_targets(before, sample.labels)
    llms = [g for g in getattr(generator, "generators", [generator]) if isinstance(g, LLMGenerator)]
    stats_before = llms[0].client.stats.as_dict() if llms else {}  # a sweep reuses one client for every seed
    requests = [CFRequest(i, t, y, tg) for i, (t, y, tg) in enumerate(zip(sample.texts, sample.labels, targets))]
    results = generator.generate(requests, verifier, dataset.label_names, progress=progress)
    if verifier.has_judge:  # whatever guide a generator asked, the rows show the teacher's probabilities
        for res, row in zip(results, before.tolist()):
            res.probs_before = [round(x, 6) for x in row]
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
        "teacher_calls": verifier.calls - counts[0], "texts_scored": verifier.texts_scored - counts[1],
        "judge_texts": verifier.judge_texts - counts[2] if verifier.has_judge else None,
        "judge_texts_per_original": (verifier.judge_texts - counts[2]) / len(rows) if verifier.has_judge and rows
        else None,
        "proxy": verifier.proxy_info,
    })
    failed = [r for r, res in zip(rows, results)
              if not res.flipped and any(a.reason == REQUEST_FAILED for a in res.attempts)]
    fatal = getattr(generator, "fatal", None)
    summary.update({"failed_originals": len(failed), "complete": not failed and fatal is None, "fatal": fatal})
    if llms:
        after = llms[0].client.stats.as_dict()
        summary["llm"] = {"base_url": strip_credentials(llms[0].cfg.base_url), "model": llms[0].cfg.model,
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
    cod_rules.check_usable(summary["used"], len(rows), str(out), allow_empty)
    return summary


def proxy_pool(dataset: TextDataset, generator: CounterfactualGenerator) -> list[str] | None:
    """The texts an endpoint teacher's proxy may be fitted on (:func:`codistill.teachers.teacher_verifier`): the
    training split's when ``generator`` searches (a proxy guides a search); ``None`` otherwise, since an LLM
    generator's candidates go to the teacher anyway and a proxy would cost its rows for nothing."""
    searches = any(isinstance(g, EditSearchGenerator) for g in getattr(generator, "generators", [generator]))
    return dataset.split("train").texts if searches else None


def counterfactuals_for_run(dataset: TextDataset, teacher, out: str | Path, *, k: int, seed: int = 0,
                            cod: str = cod_rules.DEFAULT_MODE, generator: dict | None = None,
                            on_failure: str = cod_rules.ON_FAILURE[0], progress: bool = True,
                            fluency_lm: str | None = None, allow_empty: bool = False,
                            max_length: int = TrainConfig.max_length) -> dict[str, Any]:
    """Counterfactuals for a distillation run at budget ``k`` in mode ``cod``
    (:func:`codistill.cod.counterfactual_budget`), made by ``generator`` (default: the edit search),
    verified by the teacher (a ``--teacher`` value, or a teacher :func:`codistill.teachers.load_teacher` loaded;
    an LLM teacher's proxy, :func:`codistill.teachers.teacher_verifier`, is fitted on the training split's texts
    when the generator searches)
    and scored for fluency by ``fluency_lm`` (``None``: not scored). Returns the summary."""
    from codistill.teachers import load_teacher, teacher_verifier

    loaded = load_teacher(teacher, dataset.label_names) if isinstance(teacher, (str, Path)) else teacher
    gen = make_generator(generator or default_generator(), default_cache_dir=str(Path(out).parent / ".llm_cache"))
    verifier = teacher_verifier(loaded, max_length=max_length, pool=proxy_pool(dataset, gen))
    scorer = QualityScorer.load(fluency_lm) if fluency_lm else None
    return generate_counterfactuals(dataset, verifier, gen, out, k=cod_rules.counterfactual_budget(k, cod), seed=seed,
                                    on_failure=on_failure, progress=progress, scorer=scorer, allow_empty=allow_empty)
