"""Artifacts keyed by what made them: the teacher, its test predictions, counterfactual files and cells.

Every artifact has a *recipe*: the full resolved configuration that produced it, including the keys of
the artifacts it was built from (a counterfactual file names its teacher; a cell its teacher and the
counterfactual rows it trains on). Its *key* is the SHA-256 of the recipe, and it is stored under a name
that carries the key, so a changed setting can never find an old result: it reruns exactly what depends
on the change. Each artifact records its recipe beside it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codistill import cod as cod_rules
from codistill.config import CounterfactualUse, RunConfig, TrainConfig, decisive_fields, teacher_train_config
from codistill.data import LabeledTexts, TextDataset, sample_from, texts_fingerprint
from codistill.fileio import atomic_write_json, read_json, readable_json


def config_hash(recipe: Any) -> str:
    """SHA-256 of a recipe as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()


def dataset_fingerprint(dataset: TextDataset, splits: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Label names and a hash of the texts and labels of each split (all splits when ``splits`` is None)."""
    names = splits or tuple(sorted(dataset.splits))
    return {"label_names": list(dataset.label_names),
            "splits": {s: texts_fingerprint(dataset.splits[s].texts, dataset.splits[s].labels)
                       for s in names if s in dataset.splits}}


def folder_fingerprint(folder: Path) -> str:
    """SHA-256 over a model folder's files (names and contents): a given teacher is keyed by its weights."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(folder)).encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


# -- teachers ------------------------------------------------------------------------------------------------


def teacher_recipe(entry, dataset: TextDataset, in_context: LabeledTexts | None = None) -> dict[str, Any]:
    """What a teacher is: a given folder (keyed by its files) or Hub name, how one is trained here, or an
    endpoint teacher: its model, prompt and label words (not how patiently it is asked) and the in-context
    rows it is shown."""
    if entry.endpoint:
        from codistill.llm_teacher import LLMTeacherConfig

        cfg = LLMTeacherConfig.from_spec(str(entry.teacher), **entry.llm_teacher)
        return {"endpoint": cfg.recipe(),
                "in_context": texts_fingerprint(in_context.texts, in_context.labels) if in_context else None}
    if entry.teacher is not None:
        folder = Path(entry.teacher)
        if folder.is_dir():
            return {"given": str(folder), "files_sha256": folder_fingerprint(folder)}
        return {"given": entry.teacher}
    train = teacher_train_config(epochs=entry.teacher_epochs, lr=entry.teacher_lr)
    weights = {k: v for k, v in asdict(train).items() if k != "eval_points"}  # evaluating changes no weight
    return {"model": entry.teacher_model, "train": weights, "max_train": entry.teacher_max_train,
            "data": dataset_fingerprint(dataset, ("train", "validation"))}


def prepare_teacher(entry, dataset: TextDataset, name: str, root: Path, progress: bool = True,
                    in_context: LabeledTexts | None = None, seed: int = 0,
                    cells_train: TrainConfig | None = None) -> dict[str, Any]:
    """The teacher (trained into ``teachers/NAME-KEY`` unless given) and its test predictions, each found
    by its key or made once; its validation predictions too when the cells' training (``cells_train``) needs them
    (:func:`codistill.teachers.answers_validation`). An endpoint teacher shows ``in_context`` rows (drawn in
    order with ``seed``).
    Returns ``{"path", "key", "predictions_path", "test", "validation", "load"}`` (the predictions on
    validation ``None`` without that split; ``load()`` gives the teacher ready to score)."""
    from codistill.runs import train_teacher
    from codistill.teachers import answers_validation, load_teacher

    recipe = teacher_recipe(entry, dataset, in_context)
    key = config_hash(recipe)
    if entry.teacher is None:
        folder = root / "teachers" / f"{name}-{key[:12]}"
        if not readable_json(folder / "metrics.json"):  # a metrics.json cut short means: train it again
            train = teacher_train_config(epochs=entry.teacher_epochs, lr=entry.teacher_lr)
            train_teacher(dataset, entry.teacher_model, folder, train=train, max_train=entry.teacher_max_train,
                          progress=progress)
            atomic_write_json(folder / "artifact.json", {"key": key, "recipe": recipe})
        teacher = str(folder)
    else:
        teacher = entry.teacher
    llm_options = entry.llm_options(root)

    def load():
        return load_teacher(teacher, dataset.label_names, llm_options=llm_options, examples=in_context, seed=seed)

    test_path, test = teacher_predictions(teacher, key, dataset, "test", name, root, load, progress)
    validation = None
    if len(dataset.splits.get("validation") or ()) and answers_validation(teacher, cells_train or TrainConfig()):
        validation = teacher_predictions(teacher, key, dataset, "validation", name, root, load, progress)[1]
    return {"path": teacher, "key": key, "predictions_path": str(test_path), "test": test, "validation": validation,
            "load": load}


def teacher_predictions(teacher: str, key: str, dataset: TextDataset, split: str, name: str, root: Path,
                        load, progress: bool = True) -> tuple[Path, dict[str, Any]]:
    """The teacher's metrics and predictions on ``split``, keyed by the teacher's key and the split's rows,
    computed once with the teacher ``load()`` gives (for the test split, ``train_teacher``'s own file is
    reused when it covers the same rows). An endpoint teacher's file records what labelling the split cost
    (``teacher_info``: requests, tokens, seconds)."""
    from codistill.teachers import describe_teacher, evaluate_teacher

    rows = dataset.split(split)
    fingerprint = texts_fingerprint(rows.texts, rows.labels)
    recipe = {"teacher": key, split: fingerprint}
    pred_key = config_hash(recipe)
    path = root / "teachers" / f"{name}-{key[:12]}.{split}_predictions-{pred_key[:12]}.json"
    if path.is_file():
        return path, read_json(path)
    own = Path(teacher) / f"{split}_predictions.json"  # train_teacher writes test_predictions.json
    saved = read_json(own) if own.is_file() else {}
    if saved.get(f"{split}_sha256") != fingerprint or "parameters" not in saved:  # only here is the teacher loaded
        loaded = load()
        metrics, pred = evaluate_teacher(loaded, rows, dataset.num_classes, progress=progress)
        info = describe_teacher(loaded)
        saved = {"metrics": metrics, "predictions": pred, "n": len(pred), "parameters": info.get("parameters"),
                 "teacher_info": info}
    saved = {**saved, "teacher": teacher, f"{split}_sha256": fingerprint, "key": pred_key, "recipe": recipe}
    atomic_write_json(path, saved)
    return path, saved


# -- counterfactual files -------------------------------------------------------------------------------------


def generator_recipe(spec: dict[str, Any]) -> dict[str, Any]:
    """A generator spec without the options that change how hard it tries but not what it produces."""
    from codistill.counterfactuals.registry import generator_config

    if spec.get("name") == "chain":
        generator_config(spec)
        return {"name": "chain", "generators": [generator_recipe(g) for g in spec["generators"]]}
    return {"name": spec["name"], **decisive_fields(generator_config(spec))}


def prepare_counterfactuals(cfg, dataset: TextDataset, name: str, teachers: dict[int, dict[str, Any]], root: Path,
                            progress: bool = True, judge: str | None = None) -> dict[int, dict[str, Any]]:
    """One counterfactual file per seed for the largest k any cell needs, keyed by the dataset, the seed's
    teacher's key (``teachers``: :func:`prepare_teacher` per seed), the generator and its options,
    ``on_failure``, k and the seed. An endpoint teacher's verification cost (requests, tokens, seconds, with
    fitting its proxy) is recorded in the file's summary as ``teacher_cost``. A file is reused only when its
    summary says it is complete; otherwise it is made again (an LLM's answers come from its cache).
    Each file is then scored for quality (:mod:`codistill.counterfactuals.quality`: the sweep's
    ``fluency_lm``, the dataset's ``judge``) unless it was already scored by the same LM and judge.
    Returns, per seed, the file's path and recipe."""
    from codistill.counterfactuals.generate import generate_counterfactuals, proxy_pool
    from codistill.counterfactuals.quality import QualityScorer, score_file
    from codistill.counterfactuals.registry import make_generator
    from codistill.counterfactuals.rows import summary_path
    from codistill.teachers import describe_teacher, teacher_verifier

    k_max = cfg.counterfactual_k()
    if k_max is None:
        return {}
    files: dict[int, dict[str, Any]] = {}
    generator = None
    verifiers: dict[str, tuple] = {}  # per teacher key: (teacher, verifier)
    max_length = TrainConfig(**cfg.train).max_length  # what the teacher reads of each candidate, as in training
    for seed in cfg.seeds:
        teacher = teachers[seed]
        recipe = {"data": dataset_fingerprint(dataset, ("train",)), "teacher": teacher["key"],
                  "generator": generator_recipe(cfg.generator), "on_failure": cfg.on_failure, "k": k_max,
                  "seed": seed, "max_length": max_length}
        key = config_hash(recipe)
        path = root / "counterfactuals" / name / f"{cfg.generator['name']}_k{k_max}_s{seed}-{key[:12]}.jsonl"
        files[seed] = {"path": path, "recipe": recipe}
        summary = summary_path(path)
        if path.is_file() and summary.is_file() and read_json(summary).get("complete", True):
            continue
        generator = generator or make_generator(cfg.generator, default_cache_dir=str(root / "llm_cache"))
        loaded = verifiers[teacher["key"]][0] if teacher["key"] in verifiers else teacher["load"]()
        before = describe_teacher(loaded)
        if teacher["key"] not in verifiers:
            verifiers[teacher["key"]] = (loaded, teacher_verifier(loaded, max_length=max_length,
                                                                  pool=proxy_pool(dataset, generator)))
        generate_counterfactuals(dataset, verifiers[teacher["key"]][1], generator, path, k=k_max, seed=seed,
                                 on_failure=cfg.on_failure, progress=progress, allow_empty=True)  # checked per cell
        cost = {key_: describe_teacher(loaded)[key_] - before[key_]
                for key_ in ("requests", "prompt_tokens", "completion_tokens", "seconds") if key_ in before}
        atomic_write_json(summary, {**read_json(summary), "artifact": {"key": key, "recipe": recipe},
                                    **({"teacher_cost": cost} if cost else {})})
    wanted = {"lm": cfg.fluency_lm, "judge": judge}
    scorer = None
    for f in files.values():
        if (cfg.fluency_lm or judge) and read_json(summary_path(f["path"])).get("quality") != wanted:
            scorer = scorer or QualityScorer.load(cfg.fluency_lm, judge)
            score_file(f["path"], scorer)
    return files


def counterfactual_rows_hash(path: Path, dataset: TextDataset, run: RunConfig) -> str:
    """SHA-256 of the counterfactual rows a cell trains on (those of its own originals)."""
    from codistill.counterfactuals.rows import read_counterfactual_rows

    wanted = set(sample_from(dataset, cod_rules.originals(run.k, run.cod), run.seed).indices)
    rows = [asdict(r) for r in read_counterfactual_rows(path, dataset.label_names) if r.pool_index in wanted]
    for r in rows:
        r.pop("line")
        if run.cod != "multi" or not r["more"]:  # only "multi" trains on them (and older keys stay valid)
            r.pop("more")
    return config_hash(sorted(rows, key=lambda r: r["pool_index"]))


# -- cells ---------------------------------------------------------------------------------------------------


def cell_recipe(dataset: TextDataset, teacher: dict[str, Any], run: RunConfig,
                counterfactuals: dict[str, Any] | None) -> dict[str, Any]:
    """Everything a cell's result depends on: the data (after ``max_eval``), the teacher's key, the resolved
    run options and, for CoD, its counterfactual file's recipe and the hash of the rows it trains on. The
    file's k is left out of it: a file made for a larger k holds the same rows for a smaller cell (samples
    are nested), so adding a k to the grid reruns no finished cell, while any change to the generator does."""
    options = asdict(run)
    options.pop("teacher")
    options.pop("counterfactuals")
    if options["generator"] is None:  # only 'rounds' cells have one (and older keys stay valid)
        options.pop("generator")
    if run.cf == CounterfactualUse():  # only CoD cells set it (and older keys stay valid)
        options.pop("cf")
    if options.get("llm_teacher") is not None:  # the teacher's key holds what changes its answers
        options.pop("llm_teacher")
    cf = None
    if counterfactuals is not None:
        cf = {"file": {k: v for k, v in counterfactuals["recipe"].items() if k != "k"},
              "rows": counterfactual_rows_hash(counterfactuals["path"], dataset, run)}
    return {"data": dataset_fingerprint(dataset), "teacher": teacher["key"], "run": options, "counterfactuals": cf}
