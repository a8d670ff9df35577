"""Running a sweep: its artifacts made or found by key, then every unfinished cell, in this process, in a
local process pool, or as Ray tasks. Every cell writes its own folder with ``metrics.json`` last, so an
interrupted sweep resumes where it stopped; ``sweep.json`` keeps the history of the configs run here."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from codistill import cod as cod_rules
from codistill.config import CounterfactualUse, DistillConfig, RunConfig, StudentConfig, TrainConfig
from codistill.errors import CodistillError, ConfigError
from codistill.experiments.artifacts import (
    cell_recipe,
    config_hash,
    prepare_counterfactuals,
    prepare_teacher,
    read_json,
)
from codistill.experiments.grid import Cell, SweepConfig, check_dataset_name, plan_cells
from codistill.fileio import atomic_write_json, check_output, readable_json


def distill_options(method: str, options: dict[str, Any]) -> DistillConfig:
    """The sweep's ``distill`` options for one method: the hidden-state options (layer map, TED's filters)
    go only to methods that match hidden states."""
    hidden_only = ("layer_map", "include_embeddings", "ted_filter_dim", "ted_filter_epochs")
    probe = DistillConfig(**{k: v for k, v in options.items() if k not in hidden_only}, method=method)
    if not probe.uses_hidden_states and probe.terms is None:
        return probe
    return DistillConfig(**options, method=method)


def load_entry(entry):
    """Load a sweep dataset, its validation and test splits capped by ``max_eval`` (noted)."""
    from codistill.config import DataConfig, build_config
    from codistill.data import load_dataset, stratified_subset

    dataset = load_dataset(build_config(DataConfig, {"source": entry.data, **entry.options}, "datasets[].options"))
    for split in ("validation", "test"):
        rows = dataset.splits.get(split)
        if entry.max_eval and rows is not None and len(rows) > entry.max_eval:
            dataset.splits[split] = stratified_subset(rows, entry.max_eval, f"eval-{split}")
            dataset.notes.append(f"'{split}' evaluated on a stratified subset of {len(dataset.splits[split])} "
                                 f"of its {len(rows)} rows (max_eval)")
    return dataset


@dataclass
class CellJob:
    """One cell to run, as plain data a worker process or a Ray task can receive."""

    config: dict[str, Any]
    cell: Cell
    entry_index: int
    folder: str
    key: str
    recipe: dict[str, Any]
    teacher: str
    teacher_test: dict[str, Any]
    counterfactuals: str | None
    teacher_validation: dict[str, Any] | None = None

    def run_config(self, cfg: SweepConfig) -> RunConfig:
        return cell_run(cfg, self.cell, self.entry_index, self.teacher, self.counterfactuals)


def cell_run(cfg: SweepConfig, c: Cell, entry_index: int, teacher: str | None,
             counterfactuals: str | None = None) -> RunConfig:
    """The run a cell is: its k, seed and mode with the sweep's options (``cf`` and
    ``allow_empty_counterfactuals`` for CoD cells only, so they never change a baseline's key), the dataset's
    teacher (and endpoint options) and its counterfactual file."""
    return RunConfig(teacher=teacher, k=c.k, seed=c.seed, counterfactuals=counterfactuals,
                     cod=None if c.cod == "none" else c.cod, student=StudentConfig(**cfg.student),
                     generator=cfg.generator if c.cod == "rounds" else None,
                     cf=cfg.cf_use() if c.cod != "none" else CounterfactualUse(),
                     allow_empty_counterfactuals=cfg.allow_empty_counterfactuals and c.cod != "none",
                     llm_teacher=cfg.datasets[entry_index].llm_options(cfg.out),
                     distill=distill_options(c.method, cfg.distill), train=TrainConfig(**cfg.train))


def in_context_by_seed(cfg: SweepConfig, cells: list[Cell], entry_index: int, dataset) -> dict[int, Any]:
    """Per seed, the rows an endpoint teacher shows in context (``None``: a classifier or zero-shot), checked
    for every cell (and that no cell's method needs a PyTorch teacher)."""
    from codistill.config import method_terms
    from codistill.teachers import check_endpoint_terms, in_context_rows

    entry = cfg.datasets[entry_index]
    rows: dict[int, Any] = {}
    if not entry.endpoint:
        return {c.seed: None for c in cells}
    for c in cells:
        run = cell_run(cfg, c, entry_index, entry.teacher)
        check_endpoint_terms(method_terms(run.distill), entry.endpoint, run.student.init)
        rows[c.seed] = in_context_rows(dataset, run)
    return rows


def prepare_teachers(cfg: SweepConfig, cells: list[Cell], entry_index: int, dataset, name: str, root: Path,
                     progress: bool) -> dict[int, dict[str, Any]]:
    """Each seed's teacher (:func:`prepare_teacher`): one classifier for all, and an endpoint teacher per set
    of in-context rows (:func:`codistill.teachers.in_context_rows`, checked for every cell here, before any
    work; zero-shot: one for all). Cells without a teacher (finetune) still get its predictions, for agreement."""
    from codistill.data import texts_fingerprint

    entry = cfg.datasets[entry_index]
    rows = in_context_by_seed(cfg, cells, entry_index, dataset)
    teachers: dict[str, dict[str, Any]] = {}
    out = {}
    for seed in cfg.seeds:
        shown = rows.get(seed)
        which = texts_fingerprint(shown.texts, shown.labels) if shown is not None else ""
        if which not in teachers:
            teachers[which] = prepare_teacher(entry, dataset, name, root, progress, shown, seed,
                                              TrainConfig(**cfg.train))
        out[seed] = teachers[which]
    return out


def run_cell(job: CellJob, threads: int | None = None, progress: bool = True, dataset=None) -> dict[str, Any]:
    """Train and evaluate one cell. Workers load the dataset themselves; in-process callers pass it."""
    import torch

    from codistill.runs import distill

    if threads:
        torch.set_num_threads(threads)
    cfg = SweepConfig(**job.config)
    dataset = dataset if dataset is not None else load_entry(cfg.datasets[job.entry_index])
    result = distill(dataset, job.run_config(cfg), job.folder,
                     teacher_test=(job.teacher_test["metrics"], job.teacher_test["predictions"]),
                     teacher_validation=(job.teacher_validation["metrics"], job.teacher_validation["predictions"])
                     if job.teacher_validation else None,
                     save_model=cfg.save_models, progress=progress,
                     record={"cell_key": job.key, "cell_recipe": job.recipe})
    return result.to_dict()


# -- executors ---------------------------------------------------------------------------------------------


def run_in_pool(jobs: list[CellJob], workers: int, done: Callable[[], None]) -> None:
    """``run_cell(job)`` for every job in ``workers`` spawned processes. The first failure, an interrupt or
    a worker that dies (the OOM killer) stops the pool at once: the other workers are terminated instead of
    finishing their cells unwatched, and a dead worker raises instead of leaving the sweep waiting forever."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    threads = max(1, (os.cpu_count() or 1) // workers)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        futures = [pool.submit(run_cell, job, threads, False) for job in jobs]
        for fut in as_completed(futures):
            fut.result()
            done()
    except BaseException as exc:
        procs = list((getattr(pool, "_processes", None) or {}).values())   # no public handle before 3.14
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(timeout=30)
        pool.shutdown(wait=False, cancel_futures=True)
        if isinstance(exc, BrokenProcessPool):
            raise CodistillError("sweep: a worker process died (killed, or out of memory?); the finished cells are "
                                 "kept: run the same command again to resume") from exc
        raise
    pool.shutdown()


def run_on_ray(jobs: list[CellJob], cfg: SweepConfig, done: Callable[[], None]) -> None:
    """Every job as a Ray task asking for ``cpus_per_cell`` / ``gpus_per_cell``; a task whose worker dies
    is retried once by Ray. Joins ``cfg.ray_address`` (``auto``: the running cluster) or starts a local
    cluster. Each task writes its cell's folder, so the sweep folder must be on storage every node shares."""
    try:
        import ray
    except ImportError:
        raise ConfigError("executor 'ray' needs Ray: pip install 'codistill[ray]'") from None
    started = False
    if not ray.is_initialized():
        ray.init(address=cfg.ray_address, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=cfg.cpus_per_cell, num_gpus=cfg.gpus_per_cell, max_retries=1)(run_cell)
        threads = max(1, int(cfg.cpus_per_cell))
        pending = [remote.remote(job, threads, False) for job in jobs]
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                ray.get(ready[0])
                done()
        except BaseException:
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def terminate_on_sigterm():
    """Turn SIGTERM (``kill``, a batch scheduler) into SystemExit while a pool runs, so the pool's cleanup
    stops its workers; the default action would leave them running as orphans."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the sweep -------------------------------------------------------------------------------------------------


def record_history(root: Path, cfg: SweepConfig, artifacts: dict[str, Any], cells: dict[str, str]) -> dict[str, Any]:
    """Append this config to ``sweep.json``'s history (or mark it run again when it is the last one) with
    the artifacts and cells it is made of; the last entry is the config a report describes."""
    path = root / "sweep.json"
    history = read_json(path).get("history", []) if path.is_file() else []
    config = cfg.to_dict()
    key = config_hash(config)
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    entry = {"hash": key, "first_run": now, "last_run": now, "config": config, "artifacts": artifacts, "cells": cells}
    if history and history[-1].get("hash") == key:
        entry["first_run"] = history[-1].get("first_run", now)
        history[-1] = entry
    else:
        history.append(entry)
    atomic_write_json(path, {"history": history})
    return entry


def finished(folder: str | Path) -> bool:
    """A cell is finished when its ``metrics.json`` (written last, atomically) reads back: a truncated one
    (a copy cut short, a full disk) makes the cell run again."""
    return readable_json(Path(folder) / "metrics.json")


@contextlib.contextmanager
def sweep_lock(root: Path):
    """One writer per sweep folder: a second sweep into a folder in use is refused (the lock is the
    operating system's, so it goes with a process that dies)."""
    from filelock import FileLock, Timeout

    check_output(root, folder=True, flag="sweep out")
    lock = FileLock(str(root / ".sweep.lock"), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(f"sweep: the folder {root} is in use by another sweep; wait for it to finish or "
                          "give this one another 'out'") from None
    try:
        yield
    finally:
        lock.release()


def check_counterfactual_cells(jobs: list[CellJob], cfg: SweepConfig, context: dict) -> None:
    """Every CoD cell to run has at least one usable counterfactual (unless the sweep allows none):
    checked for all of them before the first one trains."""
    from codistill.runs import training_rows

    for job in jobs:
        if job.counterfactuals is None:
            continue
        try:
            training_rows(context[job.cell.dataset][1], job.run_config(cfg))
        except cod_rules.NoCounterfactuals as exc:
            c = job.cell
            raise cod_rules.NoCounterfactuals(f"sweep cell {c.dataset} {c.label} k={c.k} seed={c.seed}: {exc}") from None


def run_sweep(cfg: SweepConfig, workers: int | None = None, progress: bool = True, stop_after: int | None = None,
              executor: str | None = None) -> dict[str, Any]:
    """Run every unfinished cell of the grid; returns counts. ``stop_after`` ends after that many new
    cells (used to test resuming); ``executor`` overrides the config's (``local`` or ``ray``). A second
    sweep into the same folder while this one runs is refused."""
    executor = executor or cfg.executor
    if workers is not None and workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {workers}")
    root = Path(cfg.out)
    datasets, names = {}, []
    for i, entry in enumerate(cfg.datasets):  # load everything first: a bad dataset fails before any work
        dataset = load_entry(entry)
        name = check_dataset_name(entry.name or dataset.name)
        if name in datasets:
            raise ConfigError(f"sweep: two datasets are named '{name}'; give them distinct 'name's")
        datasets[name] = (i, dataset)
        names.append(name)
        cfg.cf_use().check_classes(dataset.num_classes)
        for k in cfg.k:  # every budget of every mode can be halved over the classes: checked before any work
            for cod in cfg.cod:
                cod_rules.check_run_budget(k, None if cod == "none" else cod, dataset.num_classes)
        in_context_by_seed(cfg, [c for c in plan_cells(cfg, [name]) if c.dataset == name], i, dataset)
    with sweep_lock(root):  # created here: a bad dataset leaves no folder behind
        return _run_cells(cfg, datasets, names, workers, progress, stop_after, executor)


def _run_cells(cfg: SweepConfig, datasets: dict, names: list[str], workers: int | None, progress: bool,
               stop_after: int | None, executor: str) -> dict[str, Any]:
    from tqdm.auto import tqdm

    root = Path(cfg.out)
    jobs, artifacts = [], {}
    config = cfg.to_dict()
    context = {}
    cells = plan_cells(cfg, names)
    for name, (i, dataset) in datasets.items():
        teachers = prepare_teachers(cfg, [c for c in cells if c.dataset == name], i, dataset, name, root, progress)
        cf_files = prepare_counterfactuals(cfg, dataset, name, teachers, root, progress, cfg.datasets[i].judge)
        context[name] = (i, dataset, teachers, cf_files)
        distinct = list({t["key"]: t for t in teachers.values()}.values())
        predictions = [str(Path(t["predictions_path"]).relative_to(root))
                       if Path(t["predictions_path"]).is_relative_to(root) else t["predictions_path"] for t in distinct]
        artifacts[name] = {"teacher": distinct[0]["path"],
                           "teacher_key": distinct[0]["key"] if len(distinct) == 1 else [t["key"] for t in distinct],
                           "teacher_predictions": predictions[0] if len(predictions) == 1 else predictions,
                           "counterfactuals": [str(f["path"].relative_to(root)) for f in cf_files.values()]}
    for c in cells:
        i, dataset, teachers, cf_files = context[c.dataset]
        teacher = teachers[c.seed]
        cf = cf_files[c.seed] if c.cod != "none" else None
        job = CellJob(config, c, i, "", "", {}, teacher["path"], teacher["test"], str(cf["path"]) if cf else None,
                      teacher["validation"])
        recipe = cell_recipe(dataset, teacher, job.run_config(cfg), cf)
        job.key, job.recipe = config_hash(recipe), recipe
        job.folder = str(c.folder(root, job.key))
        jobs.append(job)
    record_history(root, cfg, artifacts, {str(Path(j.folder).relative_to(root)): j.key for j in jobs})
    todo = [j for j in jobs if not finished(j.folder)]
    if stop_after is not None:
        todo = todo[:stop_after]
    check_counterfactual_cells(todo, cfg, context)
    workers = cfg.workers if workers is None else workers
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="cells", disable=not progress)
    if executor == "ray":
        with terminate_on_sigterm():
            run_on_ray(todo, cfg, lambda: bar.update(1))
    elif workers == 1:
        for job in todo:
            run_cell(job, progress=progress, dataset=context[job.cell.dataset][1])
            bar.update(1)
    else:
        with terminate_on_sigterm():
            run_in_pool(todo, workers, lambda: bar.update(1))
    bar.close()
    done = sum(finished(j.folder) for j in jobs)
    return {"cells": len(jobs), "ran": len(todo), "finished": done, "seconds": time.perf_counter() - start}
