"""Grids of runs (datasets × methods × CoD × k × seeds), resumable, and their reports.

A sweep writes one folder per cell; a cell is finished when its ``metrics.json`` exists (written last,
atomically), so an interrupted sweep resumes where it stopped. Teachers are trained (or found) once per
dataset, their test predictions cached once, and counterfactuals generated once per (dataset, teacher,
generator, seed) for the largest k needed: samples are nested, so that file serves every smaller k.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from codistill.config import DistillConfig, METHODS, StudentConfig, TrainConfig
from codistill.errors import CodistillError, ConfigError
from codistill.fileio import atomic_write_json, atomic_write_text

COD_CHOICES = ("none", "replace", "augment")


# -- small helpers shared by reports and benchmarks ----------------------------------------------------


def method_label(method: str, cod: str | None) -> str:
    """How a run is named in tables: ``kd``, ``kd+cod`` (CoD at the same budget), ``kd+cod-augment``
    (k originals plus their counterfactuals: a larger set), ``kd+extra`` (rows added by hand)."""
    suffix = {None: "", "none": "", "replace": "+cod", "augment": "+cod-augment", "extra": "+extra"}[cod]
    return method + suffix


def read_cells(root: str | Path, pattern: str = "**/metrics.json") -> list[dict[str, Any]]:
    """Every completed cell under ``root`` (a ``metrics.json`` exists only once a run has finished)."""
    return [json.loads(p.read_text()) for p in sorted(Path(root).glob(pattern))]


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count; NaN mean for no values."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return float("nan"), float("nan"), 0
    return statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals)


def aggregate(cells: Iterable[dict[str, Any]], keys: Sequence[str],
              value: Callable[[dict[str, Any]], float]) -> dict[tuple, tuple[float, float, int]]:
    """Group cells by ``keys`` and return mean, std and count of ``value(cell)`` per group."""
    groups: dict[tuple, list[float]] = {}
    for cell in cells:
        groups.setdefault(tuple(cell[k] for k in keys), []).append(value(cell))
    return {group: mean_std(vals) for group, vals in sorted(groups.items(), key=lambda kv: str(kv[0]))}


def format_mean_std(stats: tuple[float, float, int], scale: float = 100.0, digits: int = 1) -> str:
    mean, std, n = stats
    if n == 0:
        return "-"
    return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f}"


def paired_difference(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """Per-seed differences ``a[s] - b[s]`` over the seeds both have: mean, a 95% t-interval, wins."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    mean, std, n = mean_std(diffs)
    half = float(stats.t.ppf(0.975, n - 1)) * std / math.sqrt(n) if n > 1 else float("nan")
    return {"n": n, "mean": mean, "ci_low": mean - half, "ci_high": mean + half,
            "wins": sum(d > 0 for d in diffs), "diffs": diffs, "seeds": seeds}


# -- sweep configuration ---------------------------------------------------------------------------------


@dataclass
class DatasetEntry:
    """One dataset of a sweep: where its data is, and its teacher (a folder or Hub name, or how to train it).

    Attributes:
        data: as for ``--data`` (``tweets``, a folder, a file, a registered name).
        teacher: a teacher folder/Hub name; ``None`` trains one with ``teacher_model`` into the sweep folder.
        teacher_model: backbone to fine-tune when training the teacher.
        teacher_epochs, teacher_lr, teacher_max_train: its epochs, learning rate and a cap on its training
            rows (stratified).
        max_eval: evaluate on a stratified subset of this many validation and test rows (fixed, seed 0,
            the same for the teacher and every cell; recorded in the dataset's notes). ``None``: all rows.
        name: short name in reports (default: the dataset's own name).
        options: extra :class:`~codistill.config.DataConfig` fields (text_column, label_names, ...).
    """

    data: str
    teacher: str | None = None
    teacher_model: str = "minilm"
    teacher_epochs: int = 2
    teacher_lr: float = 5e-5
    teacher_max_train: int | None = None
    max_eval: int | None = None
    name: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepConfig:
    """A grid: every dataset × method × cod mode × k × seed is one cell.

    Attributes:
        out: the sweep folder (cells, teachers, counterfactuals, report).
        datasets: :class:`DatasetEntry` list.
        methods: among finetune, kd, lwd, ted.
        cod: among ``none`` (baseline on k originals), ``replace`` (CoD: k/2 originals + counterfactuals),
            ``augment`` (k originals + counterfactuals of all k).
        k: budgets; seeds: sampling/training seeds.
        generator: ``{"name": "edits", "max_edits": 3, "beam_width": 4, "lexicon": null}`` or
            ``{"name": "llm", "base_url": ..., "model": ..., ...}`` (fields of :class:`LLMConfig`).
        on_failure: ``skip`` or ``keep-best`` for originals without a flipping counterfactual.
        student, train, distill: fields of :class:`StudentConfig`, :class:`TrainConfig`,
            :class:`DistillConfig` (method excluded).
        workers: cells run in parallel processes (each with its share of the CPU threads).
    """

    out: str
    datasets: list[DatasetEntry]
    methods: list[str] = field(default_factory=lambda: ["kd"])
    cod: list[str] = field(default_factory=lambda: ["none", "replace"])
    k: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 512])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    generator: dict[str, Any] = field(default_factory=lambda: {"name": "edits"})
    on_failure: str = "skip"
    student: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)
    workers: int = 1

    def __post_init__(self) -> None:
        self.datasets = [d if isinstance(d, DatasetEntry) else _build(DatasetEntry, d, "datasets[]")
                         for d in self.datasets]
        if not self.datasets:
            raise ConfigError("sweep: 'datasets' is empty")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"sweep: unknown method '{m}' (choose from {', '.join(METHODS)})")
        for c in self.cod:
            if c not in COD_CHOICES:
                raise ConfigError(f"sweep: unknown cod mode '{c}' (choose from {', '.join(COD_CHOICES)})")
        if any(int(k) < 1 for k in self.k) or not self.k or not self.seeds:
            raise ConfigError("sweep: 'k' and 'seeds' need at least one value, k >= 1")
        if self.generator.get("name") not in ("edits", "llm"):
            raise ConfigError(f"sweep: generator.name must be 'edits' or 'llm', got {self.generator.get('name')!r}")
        if self.workers < 1:
            raise ConfigError("sweep: workers must be >= 1")
        # validate the nested option groups now, not in the middle of a sweep
        StudentConfig(**self.student)
        TrainConfig(**self.train)
        DistillConfig(**{**self.distill, "method": "kd"})

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SweepConfig":
        import yaml

        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the sweep config ({str(exc).splitlines()[0]})") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: expected a mapping of options")
        return _build(cls, raw, str(path))


def _build(cls, raw: dict[str, Any], where: str):
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    try:
        return cls(**raw)
    except TypeError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass(frozen=True)
class Cell:
    dataset: str
    method: str
    cod: str
    k: int
    seed: int

    @property
    def label(self) -> str:
        return method_label(self.method, self.cod)

    def folder(self, root: Path) -> Path:
        return root / "cells" / self.dataset / self.label / f"k{self.k}_s{self.seed}"


def plan_cells(cfg: SweepConfig, names: Sequence[str]) -> list[Cell]:
    """All cells, smallest k first (so a partial sweep already covers every method at small k)."""
    return [Cell(name, method, cod, int(k), int(seed))
            for k in sorted(cfg.k) for name in names for seed in cfg.seeds for method in cfg.methods
            for cod in cfg.cod]


# -- running ---------------------------------------------------------------------------------------------


def _dataset_name(entry: DatasetEntry, dataset) -> str:
    return entry.name or dataset.name


def _load_entry(entry: DatasetEntry):
    from codistill.config import DataConfig
    from codistill.data import load_dataset, stratified_subset

    dataset = load_dataset(DataConfig(source=entry.data, **entry.options))
    for split in ("validation", "test"):
        rows = dataset.splits.get(split)
        if entry.max_eval and rows is not None and len(rows) > entry.max_eval:
            dataset.splits[split] = stratified_subset(rows, entry.max_eval, f"eval-{split}")
            dataset.notes.append(f"'{split}' evaluated on a stratified subset of {len(dataset.splits[split])} "
                                 f"of its {len(rows)} rows (max_eval)")
    return dataset


def _make_generator(cfg: SweepConfig, root: Path):
    from codistill.counterfactuals import DictLexicon, EditSearchGenerator, LLMConfig, LLMGenerator

    opts = {k: v for k, v in cfg.generator.items() if k != "name"}
    if cfg.generator["name"] == "edits":
        lexicon = opts.pop("lexicon", None)
        return EditSearchGenerator(DictLexicon.from_json(lexicon) if lexicon else None, **opts)
    opts.setdefault("cache_dir", str(root / "llm_cache"))
    return LLMGenerator(_build(LLMConfig, opts, "generator"))


def prepare_teacher(entry: DatasetEntry, dataset, name: str, root: Path, progress: bool = True) -> tuple[str, dict]:
    """The teacher folder (trained into ``root/teachers/NAME`` when none is given; reused when there)
    and its test metrics and predictions, computed once and cached beside it."""
    from codistill.distill import evaluate_split, texts_fingerprint, train_teacher
    from codistill.models import load_classifier

    if entry.teacher is None:
        teacher_dir = root / "teachers" / name
        if not (teacher_dir / "metrics.json").is_file():
            tcfg = TrainConfig(epochs=entry.teacher_epochs, min_steps=0, batch_size=32, lr=entry.teacher_lr)
            train_teacher(dataset, entry.teacher_model, teacher_dir, train=tcfg, max_train=entry.teacher_max_train,
                          progress=progress)
        teacher = str(teacher_dir)
    else:
        teacher = entry.teacher
    cache = root / "teachers" / f"{name}.test_predictions.json"
    fingerprint = texts_fingerprint(dataset.split("test").texts)
    if cache.is_file():
        saved = json.loads(cache.read_text())
        if saved.get("teacher") == teacher and saved.get("test_sha256") == fingerprint:
            return teacher, saved
    own = Path(teacher) / "test_predictions.json"  # written by train_teacher for this very split
    saved = json.loads(own.read_text()) if own.is_file() else {}
    if saved.get("test_sha256") != fingerprint or "parameters" not in saved:  # the teacher is loaded only here
        clf = load_classifier(teacher, what="teacher")
        metrics, pred = evaluate_split(clf, dataset.split("test"), dataset.num_classes, TrainConfig(), progress=progress)
        saved = {"metrics": metrics, "predictions": pred, "n": len(pred), "parameters": clf.num_parameters()}
    saved = {**saved, "teacher": teacher, "test_sha256": fingerprint}
    atomic_write_json(cache, saved)
    return teacher, saved


def prepare_counterfactuals(cfg: SweepConfig, dataset, name: str, teacher: str, root: Path,
                            progress: bool = True) -> dict[int, Path]:
    """One counterfactual file per seed, for the largest k any cell needs (2k for ``augment``)."""
    from codistill.counterfactuals import Verifier, generate_counterfactuals
    from codistill.models import load_classifier

    needed = [int(k) for k in cfg.k if "replace" in cfg.cod] + [2 * int(k) for k in cfg.k if "augment" in cfg.cod]
    if not needed:
        return {}
    k_max = max(needed)
    files: dict[int, Path] = {}
    verifier = generator = None
    for seed in cfg.seeds:
        path = root / "counterfactuals" / name / f"{cfg.generator['name']}_k{k_max}_s{seed}.jsonl"
        files[seed] = path
        if path.is_file():
            continue
        if verifier is None:
            verifier = Verifier.from_classifier(load_classifier(teacher, what="teacher"))
            generator = _make_generator(cfg, root)
        generate_counterfactuals(dataset, verifier, generator, path, k=k_max, seed=seed,
                                 on_failure=cfg.on_failure, progress=progress)
    return files


def run_cell(cfg_dict: dict[str, Any], cell: Cell, entry_index: int, teacher: str, teacher_test: dict,
             cf_file: str | None, threads: int | None = None, progress: bool = True, dataset=None) -> dict[str, Any]:
    """Train and evaluate one cell. A worker process calls it with plain data and loads the dataset
    (entry ``entry_index`` of the config) itself; in-process callers pass the loaded ``dataset``."""
    import torch

    from codistill.distill import distill

    if threads:
        torch.set_num_threads(threads)
    cfg = _build(SweepConfig, cfg_dict, "sweep")
    dataset = dataset if dataset is not None else _load_entry(cfg.datasets[entry_index])
    root = Path(cfg.out)
    metrics = distill(
        dataset, teacher, cell.folder(root), k=cell.k, seed=cell.seed,
        student=StudentConfig(**cfg.student), method=DistillConfig(**{**cfg.distill, "method": cell.method}),
        train=TrainConfig(**cfg.train), counterfactuals=cf_file if cell.cod != "none" else None,
        cod=None if cell.cod == "none" else cell.cod,
        teacher_test=(teacher_test["metrics"], teacher_test["predictions"]), save_model=False, progress=progress)
    return metrics


def _run_in_pool(jobs: list[tuple], workers: int, done: Callable[[], None]) -> None:
    """``run_cell(*job)`` for every job in ``workers`` spawned processes. The first failure, an interrupt or
    a worker that dies (the OOM killer) stops the pool at once: the other workers are terminated instead of
    finishing their cells unwatched, and a dead worker raises instead of leaving the sweep waiting forever."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from concurrent.futures.process import BrokenProcessPool

    pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"))
    try:
        futures = [pool.submit(run_cell, *job) for job in jobs]
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


@contextlib.contextmanager
def _terminate_on_sigterm():
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


def run_sweep(cfg: SweepConfig, workers: int | None = None, progress: bool = True,
              stop_after: int | None = None) -> dict[str, Any]:
    """Run every unfinished cell of the grid; returns counts. ``stop_after`` ends after that many new
    cells (used to test resuming)."""
    from tqdm.auto import tqdm

    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    cfg_dict = _to_dict(cfg)
    atomic_write_text(root / "sweep.json", json.dumps(cfg_dict, indent=2) + "\n")
    context: dict[str, tuple[int, Any, str, dict, dict[int, Path]]] = {}
    names = []
    for i, entry in enumerate(cfg.datasets):
        dataset = _load_entry(entry)
        name = _dataset_name(entry, dataset)
        if name in context:
            raise ConfigError(f"sweep: two datasets are named '{name}'; give them distinct 'name's")
        names.append(name)
        teacher, teacher_test = prepare_teacher(entry, dataset, name, root, progress)
        cf_files = prepare_counterfactuals(cfg, dataset, name, teacher, root, progress)
        context[name] = (i, dataset, teacher, teacher_test, cf_files)
    cells = plan_cells(cfg, names)
    todo = [c for c in cells if not (c.folder(root) / "metrics.json").is_file()]
    if stop_after is not None:
        todo = todo[:stop_after]
    workers = workers or cfg.workers
    start = time.perf_counter()
    bar = tqdm(total=len(todo), desc="cells", disable=not progress)

    def args(c: Cell):
        index, _, teacher, teacher_test, cf_files = context[c.dataset]
        cf = str(cf_files[c.seed]) if c.cod != "none" else None
        return cfg_dict, c, index, teacher, teacher_test, cf

    if workers == 1:
        for c in todo:
            run_cell(*args(c), progress=progress, dataset=context[c.dataset][1])
            bar.update(1)
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with _terminate_on_sigterm():
            _run_in_pool([(*args(c), threads, False) for c in todo], workers, lambda: bar.update(1))
    bar.close()
    done = sum((c.folder(root) / "metrics.json").is_file() for c in cells)
    return {"cells": len(cells), "ran": len(todo), "finished": done, "seconds": time.perf_counter() - start}


def _to_dict(cfg: SweepConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["datasets"] = [asdict(e) for e in cfg.datasets]
    return d


# -- report -------------------------------------------------------------------------------------------


def _cells_table(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for c in cells:
        t = c["test"]
        rows.append({"dataset": c["dataset"], "method": c["method"], "cod": c["cod"] or "none",
                     "label": method_label(c["method"], c["cod"]), "k": c["k"], "seed": c["seed"],
                     "accuracy": t["accuracy"], "macro_f1": t["macro_f1"], "mcc": t["mcc"],
                     "agreement": t.get("agreement"), "n_originals": c["n_originals"],
                     "n_counterfactuals": c["n_counterfactuals"], "n_train": c["n_train"], "steps": c["steps"],
                     "train_seconds": c["train_seconds"]})
    return rows


def _plot(rows: list[dict[str, Any]], dataset: str, metric: str, path: Path, teacher_acc: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [r for r in rows if r["dataset"] == dataset and r[metric] is not None]
    stats = aggregate(data, ["label", "k"], lambda r: r[metric])
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for label in sorted({r["label"] for r in data}):
        ks = sorted(k for (lab, k) in stats if lab == label)
        means = [stats[(label, k)][0] * 100 for k in ks]
        stds = [stats[(label, k)][1] * 100 for k in ks]
        ax.plot(ks, means, marker="o", label=label, linestyle="--" if "+cod" not in label else "-")
        ax.fill_between(ks, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.15)
    if teacher_acc is not None and metric == "accuracy":
        ax.axhline(teacher_acc * 100, color="gray", linestyle=":", label="teacher")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (labelled examples)")
    ax.set_ylabel(f"test {metric.replace('_', ' ')} (%)")
    ax.set_title(f"{dataset}: {metric.replace('_', ' ')} vs k (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _dataset_notes(folder: Path) -> list[str]:
    """What loading did to a dataset's test split (carved, capped), from the first cell's resolved config."""
    for path in sorted(folder.glob("**/run_config.json")):
        return [n for n in json.loads(path.read_text())["dataset"].get("notes", []) if n.startswith("'test'")]
    return []


def build_report(run_dir: str | Path) -> dict[str, Any]:
    """Write ``report.md``, ``cells.csv``, ``summary.json`` and per-dataset PNG plots for a sweep folder.

    Tables: test accuracy mean ± std per method and k (like the paper's), teacher–student agreement, the
    paired per-seed difference CoD − baseline with a 95% t-interval and the number of seeds CoD won,
    the teacher's accuracy, and the quality of the counterfactual sets. Every number is recomputed from the
    cells' ``metrics.json`` files.
    """
    root = Path(run_dir)
    cells = read_cells(root / "cells")
    if not cells:
        raise ConfigError(f"{root}: no finished cells (cells/**/metrics.json) to report on")
    rows = _cells_table(cells)
    summary: dict[str, Any] = {"datasets": {}}
    md = [f"# codistill report: {root.name}", "",
          "Test accuracy, mean ± std over seeds (%). Fixed training budget; nothing selected on the test split. "
          "`+cod` = k/2 originals + their verified counterfactuals (same budget k); `+cod-augment` = k originals "
          "+ their counterfactuals (a larger training set).", ""]
    for dataset in sorted({r["dataset"] for r in rows}):
        data = [r for r in rows if r["dataset"] == dataset]
        ks = sorted({r["k"] for r in data})
        labels = sorted({r["label"] for r in data}, key=lambda s: (s.split("+")[0], s))
        teacher_file = root / "teachers" / f"{dataset}.test_predictions.json"
        teacher = json.loads(teacher_file.read_text()) if teacher_file.is_file() else None
        given = [c["teacher_test"]["accuracy"] for c in cells if c["dataset"] == dataset and c.get("teacher_test")]
        teacher_acc = teacher["metrics"]["accuracy"] if teacher else (given[0] if given else None)
        ds_summary: dict[str, Any] = {"teacher_accuracy": teacher_acc, "paired": {}}
        md += [f"## {dataset}", ""]
        if teacher_acc is not None:
            md += [f"Teacher test accuracy: {teacher_acc * 100:.1f}%." + (
                f" Teacher parameters: {teacher['parameters']:,}." if teacher else ""), ""]
        n_test = sorted({c["test"]["n"] for c in cells if c["dataset"] == dataset})
        notes = _dataset_notes(root / "cells" / dataset)
        ds_summary.update({"test_rows": n_test, "notes": notes})
        md += [f"Test rows: {', '.join(f'{n:,}' for n in n_test)}." + "".join(f" Note: {n}." for n in notes), ""]
        header = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for metric, title in (("accuracy", None), ("macro_f1", "Macro-F1 on test (%):"),
                              ("mcc", "Matthews correlation on test (× 100; CoLA's usual metric):"),
                              ("agreement", "Teacher–student agreement on test (%):")):
            stats = aggregate([r for r in data if r[metric] is not None], ["label", "k"], lambda r: r[metric])
            md += (["", title, ""] if title else []) + header
            ds_summary[metric] = {}
            for label in labels:
                md.append(f"| {label} | " + " | ".join(format_mean_std(stats.get((label, k), (0, 0, 0))) for k in ks)
                          + " |")
                ds_summary[metric][label] = {str(k): dict(zip(("mean", "std", "n"), stats[(label, k)]))
                                             for k in ks if (label, k) in stats}
        pairs = [(lab, lab.split("+")[0]) for lab in labels if "+cod" in lab and lab.split("+")[0] in labels]
        if pairs:
            md += ["", "Paired difference CoD − baseline in accuracy points, per seed: mean [95% CI] (seeds won):", "",
                   "| comparison | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
            for cod_label, base in pairs:
                cells_txt = []
                for k in ks:
                    a = {r["seed"]: r["accuracy"] for r in data if r["label"] == cod_label and r["k"] == k}
                    b = {r["seed"]: r["accuracy"] for r in data if r["label"] == base and r["k"] == k}
                    d = paired_difference(a, b)
                    ds_summary["paired"].setdefault(f"{cod_label} - {base}", {})[str(k)] = d
                    if d["n"] == 0:
                        cells_txt.append("-")
                    elif d["n"] == 1:
                        cells_txt.append(f"{d['mean'] * 100:+.1f} ({d['wins']}/1)")
                    else:
                        cells_txt.append(f"{d['mean'] * 100:+.1f} [{d['ci_low'] * 100:+.1f}, {d['ci_high'] * 100:+.1f}] "
                                         f"({d['wins']}/{d['n']})")
                md.append(f"| {cod_label} − {base} | " + " | ".join(cells_txt) + " |")
        cf_summaries = sorted((root / "counterfactuals" / dataset).glob("*.summary.json"))
        if cf_summaries:
            md += ["", "Counterfactual sets (one per seed, for the largest k; smaller k use their nested prefix):", "",
                   "| file | originals | flip rate | target prob | edited words mean / median | length ratio | seconds |",
                   "|---|---|---|---|---|---|---|"]
            ds_summary["counterfactuals"] = []
            for f in cf_summaries:
                s = json.loads(f.read_text())
                ds_summary["counterfactuals"].append({"file": f.name, **s})
                fmt = lambda v, p=2: "-" if v is None else f"{v:.{p}f}"  # noqa: E731
                md.append(f"| {f.name.replace('.summary.json', '')} | {s['originals']} | {fmt(s['flip_rate'])} | "
                          f"{fmt(s['mean_target_prob'])} | {fmt(s['edited_words_mean'])} / "
                          f"{fmt(s['edited_words_median'], 1)} | {fmt(s['length_ratio_mean'])} | {fmt(s['seconds'], 0)} |")
        for metric in ("accuracy", "agreement"):
            png = root / f"{dataset}_{metric}_vs_k.png"
            _plot(rows, dataset, metric, png, teacher_acc)
            md += ["", f"![{metric} vs k]({png.name})"]
        md.append("")
        summary["datasets"][dataset] = ds_summary
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted(rows, key=lambda r: (r["dataset"], r["label"], r["k"], r["seed"])))
    atomic_write_text(root / "cells.csv", buf.getvalue())
    atomic_write_json(root / "summary.json", summary)
    atomic_write_text(root / "report.md", "\n".join(md) + "\n")
    return summary


# -- the demo ---------------------------------------------------------------------------------------------

DEMO_TEACHER_ROWS = 2000
DEMO_EVAL_ROWS = 1000


def demo_config(out: str | Path = "runs/demo") -> SweepConfig:
    """The README's demo: on the embedded tweets, a MiniLM teacher fine-tuned for one epoch on a stratified
    2,000-row subset, edit-search counterfactuals, and KD vs KD+CoD at k = 8, 16, 32 with 3 seeds,
    3-layer pretrained MiniLM student; cells run in two processes. To fit 20 minutes on 2 CPU cores,
    teacher and students are evaluated on the same stratified 1,000-row subsets of validation and test."""
    return SweepConfig(
        out=str(out),
        datasets=[DatasetEntry(data="tweets", teacher_model="minilm", teacher_epochs=1,
                               teacher_max_train=DEMO_TEACHER_ROWS, max_eval=DEMO_EVAL_ROWS)],
        methods=["kd"], cod=["none", "replace"], k=[8, 16, 32], seeds=[0, 1, 2],
        generator={"name": "edits", "max_edits": 3}, student={"model": "minilm", "layers": 3}, workers=2,
    )
