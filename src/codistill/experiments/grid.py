"""A sweep's configuration and its cells: datasets × methods × CoD mode × k × seeds, and the demo preset."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from codistill import cod as cod_rules
from codistill.config import (
    DEFAULT_FLUENCY_LM,
    METHODS,
    TEACHER_TRAIN,
    CounterfactualUse,
    DistillConfig,
    RunConfig,
    StudentConfig,
    TrainConfig,
    build_config,
    check_types,
    read_yaml_mapping,
    recipe_section,
)
from codistill.counterfactuals.registry import default_generator, generator_config
from codistill.errors import ConfigError

COD_CHOICES = ("none", *cod_rules.MODES)  # "none": the baseline on k originals
EXECUTORS = ("local", "ray")


def method_label(method: str, cod: str | None) -> str:
    """How a run is named in tables (and in a sweep's cell folders): ``kd``, ``kd+cod`` (the paper's CoD,
    :data:`codistill.cod.PAPER_MODE`, whichever mode is the default), ``kd+cod-multi`` (the
    same k/2 originals with several counterfactuals each), ``kd+cod-rounds`` (CoD and a student-aware second
    round), ``kd+cod-augment`` (all k originals plus their counterfactuals), ``kd+extra`` (rows
    added by hand)."""
    if cod in (None, "none", "extra"):
        return method + ("+extra" if cod == "extra" else "")
    if cod not in cod_rules.MODES:
        raise ConfigError(f"unknown cod mode {cod!r} (choose from {', '.join(cod_rules.MODES)})")
    return method + ("+cod" if cod == cod_rules.PAPER_MODE else f"+cod-{cod}")


@dataclass
class DatasetEntry:
    """One dataset of a sweep: where its data is, and its teacher (a folder or Hub name, or how to train it).

    Attributes:
        data: as for ``--data`` (``tweets``, a folder, a file, a registered name).
        teacher: a teacher folder/Hub name, or an LLM behind an OpenAI-compatible endpoint (``llm:MODEL`` or a
            ``.yaml``/``.json`` spec, with ``llm_teacher`` options); ``None`` trains one with ``teacher_model``
            into the sweep folder.
        teacher_model: backbone to fine-tune when training the teacher.
        teacher_epochs, teacher_lr, teacher_max_train: its epochs, learning rate and a cap on its training
            rows (stratified).
        max_eval: evaluate on a stratified subset of this many validation and test rows (fixed, seed 0,
            the same for the teacher and every cell; recorded in the dataset's notes). ``None``: all rows.
        name: short name in reports (default: the dataset's own name).
        judge: a classifier over the same labels, independent of the teacher (another backbone or training
            data), that scores the validity of the counterfactuals (``None``: validity is not measured).
        options: extra :class:`~codistill.config.DataConfig` fields (text_column, label_names, ...).
        llm_teacher: options of an endpoint teacher, fields of :class:`~codistill.llm_teacher.LLMTeacherConfig`
            (``base_url``, ``examples``, ``max_requests``, ...); its answers are cached in the sweep's
            ``llm_cache`` unless ``cache_dir`` says otherwise, and its in-context examples are the first rows of
            each seed's sample (:func:`codistill.teachers.in_context_rows`).
    """

    data: str
    teacher: str | None = None
    teacher_model: str = "minilm"
    teacher_epochs: int = TEACHER_TRAIN.epochs
    teacher_lr: float = TEACHER_TRAIN.lr
    teacher_max_train: int | None = None
    max_eval: int | None = None
    name: str | None = None
    judge: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    llm_teacher: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_types(self, "datasets[]")
        if self.teacher_epochs < 1:
            raise ConfigError(f"datasets[].teacher_epochs must be >= 1, got {self.teacher_epochs}")
        if self.max_eval is not None and self.max_eval < 2:
            raise ConfigError(f"datasets[].max_eval must be >= 2, got {self.max_eval}")
        if self.name is not None:
            check_dataset_name(self.name)
        from codistill.teachers import check_llm_options

        try:
            check_llm_options(self.teacher, self.llm_teacher)
        except ConfigError as exc:
            raise ConfigError(f"datasets[].llm_teacher: {exc}") from None

    @property
    def endpoint(self) -> bool:
        """Whether the teacher is an LLM behind an endpoint."""
        from codistill.teachers import is_endpoint_teacher

        return is_endpoint_teacher(self.teacher)

    def llm_options(self, root: str | Path) -> dict[str, Any] | None:
        """The endpoint teacher's options as every cell and artifact of the sweep at ``root`` uses them: its
        answers cached under ``root/llm_cache`` unless given (``None`` for a classifier teacher)."""
        if not self.endpoint:
            return None
        return {"cache_dir": str(Path(root) / "llm_cache"), **self.llm_teacher}


def check_dataset_name(name: str) -> str:
    """A dataset's name in a sweep names folders (cells, teachers, counterfactuals), so it must be one plain
    folder name that stays inside the sweep's folder."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", name) or ".." in name:
        raise ConfigError(f"datasets[].name: {name!r} is not a plain folder name (letters, digits, '.', '_', '+', "
                          "'-'; no '/' or '..'): give the dataset a 'name' of that kind")
    return name


def _int_list(value: Any, key: str, example: str) -> list[int]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"sweep.{key}: expected a list of integers, got {value!r} (e.g. {key}: {example})")
    if not value:
        raise ConfigError(f"sweep.{key}: needs at least one value (e.g. {key}: {example})")
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"sweep.{key}: expected a list of integers, got {v!r} in {value!r}")
    return [int(v) for v in value]


@dataclass
class SweepConfig:
    """A grid: every dataset × method × cod mode × k × seed is one cell.

    Attributes:
        out: the sweep folder (cells, teachers, counterfactuals, report, sweep.json).
        datasets: :class:`DatasetEntry` list.
        methods: among finetune, kd, lwd, ted.
        cod: among ``none`` (baseline on k originals), ``replace`` (CoD: k/2 originals + counterfactuals),
            ``multi`` (the k/2 originals + up to the generator's ``per_original`` counterfactuals each),
            ``augment`` (k originals + counterfactuals of all k), ``rounds`` (CoD, then a second round of
            edits that flip the first student and that the teacher labels otherwise, searched by
            ``generator`` with the student in the teacher's place).
        k: budgets; seeds: sampling/training seeds.
        generator: ``{"name": "edits", "max_edits": 3, "beam_width": 4, "lexicon": null}`` or
            ``{"name": "llm", "base_url": ..., "model": ..., ...}`` (fields of :class:`LLMConfig`).
        on_failure: ``skip`` or ``keep-best`` for originals without a flipping counterfactual.
        allow_empty_counterfactuals: let CoD cells train when none of their originals has a usable
            counterfactual (by default the sweep stops before training any cell).
        cf: how CoD cells use their counterfactuals, fields of :class:`~codistill.config.CounterfactualUse`
            (``hard_labels``, ``max_target_prob``, ``rebalance``); baseline cells, and their keys, ignore it.
        fluency_lm: the causal LM that scores the counterfactuals' fluency (``smollm2``, a folder, a Hub
            name; ``None``: not measured).
        recipe: a named recipe (:data:`~codistill.config.RECIPES`: ``default``, or ``reference``, the CoD
            paper's code) that ``train``, ``distill`` and ``student`` start from; their own options override it.
        student, train, distill: fields of :class:`StudentConfig`, :class:`TrainConfig`,
            :class:`DistillConfig` (method excluded).
        save_models: keep each cell's student (``save_pretrained`` in its folder, to export, serve or score
            later); off by default for disk. Not part of a cell's key: cells finished before keep no weights.
        workers: cells run in parallel processes (each with its share of the CPU threads).
        executor: ``local`` (a process pool on this machine) or ``ray`` (Ray tasks; ``pip install
            'codistill[ray]'``).
        ray_address: the Ray cluster to join (``None``: start a local one; ``auto``: the running one).
        cpus_per_cell, gpus_per_cell: resources a Ray task asks for.
    """

    out: str
    datasets: list[DatasetEntry]
    methods: list[str] = field(default_factory=lambda: ["kd"])
    cod: list[str] = field(default_factory=lambda: ["none", cod_rules.DEFAULT_MODE])
    k: list[int] = field(default_factory=lambda: [8, 16, 32, 64, 128, 512])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    generator: dict[str, Any] = field(default_factory=default_generator)
    on_failure: str = cod_rules.ON_FAILURE[0]
    allow_empty_counterfactuals: bool = RunConfig.allow_empty_counterfactuals
    cf: dict[str, Any] = field(default_factory=dict)
    fluency_lm: str | None = DEFAULT_FLUENCY_LM
    recipe: str | None = None
    student: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    distill: dict[str, Any] = field(default_factory=dict)
    save_models: bool = False
    workers: int = 1
    executor: str = "local"
    ray_address: str | None = None
    cpus_per_cell: float = 1.0
    gpus_per_cell: float = 0.0

    def __post_init__(self) -> None:
        self.k = _int_list(self.k, "k", "[8, 16, 32]")
        self.seeds = _int_list(self.seeds, "seeds", "[0, 1, 2]")
        if not isinstance(self.datasets, list):
            raise ConfigError(f"sweep.datasets: expected a list of datasets, got {self.datasets!r}")
        check_types(self, "sweep")
        self.datasets = [d if isinstance(d, DatasetEntry) else build_config(DatasetEntry, d, "datasets[]")
                         for d in self.datasets]
        if not self.datasets:
            raise ConfigError("sweep.datasets: needs at least one dataset")
        for m in self.methods:
            if m not in METHODS:
                raise ConfigError(f"sweep.methods: unknown method '{m}' (choose from {', '.join(METHODS)})")
        for c in self.cod:
            if c not in COD_CHOICES:
                raise ConfigError(f"sweep.cod: unknown cod mode '{c}' (choose from {', '.join(COD_CHOICES)})")
        if any(k < 1 for k in self.k):
            raise ConfigError(f"sweep.k: every k must be >= 1, got {self.k}")
        if "multi" in self.cod and int(self.generator.get("per_original", 1)) < 2:
            raise ConfigError("sweep.cod: 'multi' trains on several counterfactuals per original; give the "
                              "generator per_original >= 2 (e.g. generator: {name: edits, per_original: 3})")
        cod_rules.check_on_failure(self.on_failure, "sweep.on_failure")
        if self.cf_use() != CounterfactualUse() and self.counterfactual_k() is None:
            raise ConfigError("sweep.cf: only CoD cells use it, and sweep.cod has no CoD mode")
        if self.workers < 1:
            raise ConfigError("sweep.workers: must be >= 1")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"sweep.executor: must be 'local' or 'ray', got '{self.executor}'")
        # the recipe's options under the sweep's own, so cells and their keys see the resolved values
        self.train = recipe_section(self.recipe, "train", self.train, "sweep.recipe")
        self.student = recipe_section(self.recipe, "student", self.student, "sweep.recipe")
        self.distill = recipe_section(self.recipe, "distill", self.distill, "sweep.recipe")
        # validate the nested option groups now, not in the middle of a sweep
        build_config(StudentConfig, self.student, "student")
        build_config(TrainConfig, self.train, "train")
        if "method" in self.distill:
            raise ConfigError("distill.method: set the methods with the sweep's 'methods' list")
        build_config(DistillConfig, {**self.distill, "method": "lwd"}, "distill")
        generator_config(self.generator, default_cache_dir=str(Path(self.out) / "llm_cache"), where="generator")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SweepConfig":
        return build_config(cls, read_yaml_mapping(path, str(path), "the sweep config"), str(path))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["datasets"] = [asdict(e) for e in self.datasets]
        if not d["cf"]:  # a sweep that never set it keeps the config hash it had before the option existed
            d.pop("cf")
        return d

    def cf_use(self) -> CounterfactualUse:
        """How the CoD cells use their counterfactuals (``cf`` validated)."""
        return build_config(CounterfactualUse, self.cf, "sweep.cf")

    def counterfactual_k(self) -> int | None:
        """The k the counterfactual files are generated for: the largest any cell needs (None: no CoD)."""
        needed = [cod_rules.counterfactual_budget(k, c) for k in self.k for c in self.cod if c != "none"]
        return max(needed) if needed else None


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

    def folder(self, root: Path, key: str) -> Path:
        """The cell's folder, named by the hash of everything that made it."""
        return root / "cells" / self.dataset / self.label / f"k{self.k}_s{self.seed}-{key[:12]}"


def plan_cells(cfg: SweepConfig, names: Sequence[str]) -> list[Cell]:
    """All cells, smallest k first (so a partial sweep already covers every method at small k)."""
    return [Cell(name, method, cod, int(k), int(seed))
            for k in sorted(cfg.k) for name in names for seed in cfg.seeds for method in cfg.methods
            for cod in cfg.cod]


# -- the demo -----------------------------------------------------------------------------------------------

DEMO_OUT = "runs/demo"
DEMO_TEACHER_ROWS = 2000
DEMO_EVAL_ROWS = 1000


def demo_config(out: str | Path = DEMO_OUT) -> SweepConfig:
    """The README's demo: on the embedded tweets, a MiniLM teacher fine-tuned for one epoch on a stratified
    2,000-row subset, edit-search counterfactuals, and KD vs KD+CoD at k = 8, 16, 32 with 3 seeds,
    3-layer pretrained MiniLM student; cells run in two processes. To fit 20 minutes on 2 CPU cores,
    teacher and students are evaluated on the same stratified 1,000-row subsets of validation and test."""
    return SweepConfig(
        out=str(out),
        datasets=[DatasetEntry(data="tweets", teacher_model="minilm", teacher_epochs=1,
                               teacher_max_train=DEMO_TEACHER_ROWS, max_eval=DEMO_EVAL_ROWS)],
        methods=["kd"], cod=["none", cod_rules.DEFAULT_MODE], k=[8, 16, 32], seeds=[0, 1, 2],
        generator={"name": "edits", "max_edits": 3}, student={"model": "minilm", "layers": 3}, workers=2,
    )
