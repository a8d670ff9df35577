"""The ``codistill`` command line: a thin layer over the Python API (no logic of its own)."""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from codistill.config import DataConfig
from codistill.errors import CodistillError

app = typer.Typer(
    name="codistill",
    help="Few-shot distillation of text classifiers with counterfactual explanations (CoD).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Inspect datasets and draw k-shot samples.", no_args_is_help=True)
app.add_typer(data_app, name="data")

console = Console()


# Options shared by every command that reads a dataset: declared once, added to each command's signature
# by @data_options, and handed to the command as one dict `data_options`.
DATA_OPTIONS: dict = {}
_DATA_OPTION_PARAMS = [
    ("text_column", Optional[str], typer.Option(None, "--text-column", help="Text column(s), comma-separated (default: auto).")),
    ("label_column", Optional[str], typer.Option(None, "--label-column", help="Label column (default: auto).")),
    ("labels", Optional[str], typer.Option(None, "--labels", help="Class names in index order, comma-separated.")),
    ("label_map", Optional[str], typer.Option(None, "--label-map", help="Raw label to class name, e.g. '0:negative,4:positive'.")),
    ("drop_labels", Optional[str], typer.Option(None, "--drop-labels", help="Raw label values to drop, comma-separated.")),
    ("encoding", str, typer.Option("utf-8", "--encoding", help="Encoding of local files.")),
    ("split_seed", int, typer.Option(0, "--split-seed", help="Seed for carving missing validation/test splits.")),
]


def data_options(command):
    """Replace a command's ``data_options`` parameter by the shared dataset options (for typer), and
    collect their values back into one dict when the command runs."""
    signature = inspect.signature(command)
    params = [p for p in signature.parameters.values() if p.name != "data_options"]
    params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
               for name, annotation, default in _DATA_OPTION_PARAMS]

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        options = {name: kwargs.pop(name) for name, _, _ in _DATA_OPTION_PARAMS}
        return command(*args, data_options=options, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=params)
    return wrapper


def _csv_list(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _label_map(value: Optional[str]) -> Optional[dict[str, str]]:
    if value is None:
        return None
    pairs = {}
    for item in _csv_list(value) or []:
        raw, sep, name = item.partition(":")
        if not sep or not raw.strip() or not name.strip():
            raise CodistillError(f"--label-map: '{item}' is not RAW:NAME (e.g. '0:negative,4:positive')")
        pairs[raw.strip()] = name.strip()
    return pairs


def data_config(data: str, text_column: Optional[str], label_column: Optional[str], labels: Optional[str],
                label_map: Optional[str], drop_labels: Optional[str], encoding: str, split_seed: int) -> DataConfig:
    return DataConfig(
        source=data,
        text_column=text_column,
        label_column=label_column,
        label_names=_csv_list(labels),
        label_map=_label_map(label_map),
        drop_labels=_csv_list(drop_labels) or [],
        encoding=encoding,
        split_seed=split_seed,
    )


def _shorten(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


@data_app.command("show")
@data_options
def data_show(
    data: str = typer.Argument(..., help="'tweets', a registered name (sst2, cola, ...), a folder or a file."),
    examples: int = typer.Option(2, "--examples", min=0, help="Training examples shown per class."),
    data_options: dict = DATA_OPTIONS,
) -> None:
    """Print splits, sizes, class balance, text-length percentiles and a few examples."""
    from codistill.data import describe, load_dataset

    dataset = load_dataset(data_config(data, **data_options))
    info = describe(dataset)
    console.print(f"[bold]{dataset.name}[/bold]  source: {dataset.source}")
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
        counts = [f"{n:,} ({n / s['rows']:.1%})" for n in s["class_counts"].values()]
        table.add_row(split, f"{s['rows']:,}", *counts)
        lengths.add_row(split, *(
            " / ".join(f"{s[kind][key]:.0f}" for key in ("p5", "p50", "p95", "max")) for kind in ("chars", "words")
        ))
    console.print(table)
    console.print(lengths)
    train = dataset.splits.get("train") or next(iter(dataset.splits.values()))
    if examples:
        ex = Table(title="examples", show_lines=False)
        ex.add_column("label")
        ex.add_column("text", overflow="fold")
        for c, name in enumerate(dataset.label_names):
            shown = [t for t, y in zip(train.texts, train.labels) if y == c][:examples]
            for text in shown:
                ex.add_row(name, _shorten(text))
        console.print(ex)


@data_app.command("sample")
@data_options
def data_sample(
    data: str = typer.Argument(..., help="'tweets', a registered name, a folder or a file."),
    k: int = typer.Option(..., "--k", help="Total examples, k / (number of classes) per class."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed; samples of one seed are nested across k."),
    split: str = typer.Option("train", "--split", help="Split to sample from."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the sample to this .csv/.tsv/.jsonl file."),
    data_options: dict = DATA_OPTIONS,
) -> None:
    """Draw a balanced, seeded k-shot sample and print it or write it to a file."""
    from codistill.data import load_dataset, sample_from, write_labeled

    dataset = load_dataset(data_config(data, **data_options))
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


def _load(data: str, options: dict):
    from codistill.data import load_dataset

    return load_dataset(data_config(data, **options))


def _print_metrics(title: str, rows: dict[str, dict]) -> None:
    table = Table(title=title)
    table.add_column("split")
    for col in ("accuracy", "macro-F1", "MCC", "agreement"):
        table.add_column(col, justify="right")
    for split, m in rows.items():
        if not m:
            continue
        agree = f"{m['agreement']:.4f}" if "agreement" in m else "-"
        table.add_row(split, f"{m['accuracy']:.4f}", f"{m['macro_f1']:.4f}", f"{m['mcc']:.4f}", agree)
    console.print(table)


@app.command("teacher")
@data_options
def teacher_cmd(
    data: str = typer.Option("tweets", "--data", help="Dataset: 'tweets', a registered name, a folder or a file."),
    model: str = typer.Option("minilm", "--model", help="Hub name or local folder; 'minilm' = packaged all-MiniLM-L6-v2."),
    out: Path = typer.Option(..., "--out", help="Output folder (loads with transformers.pipeline)."),
    epochs: int = typer.Option(2, "--epochs"),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(5e-5, "--lr"),
    max_length: int = typer.Option(128, "--max-length"),
    max_train: Optional[int] = typer.Option(None, "--max-train", help="Cap training rows (stratified subset)."),
    seed: int = typer.Option(0, "--seed"),
    select_on: str = typer.Option("none", "--select-on", help="'none' or 'validation' (never test)."),
    data_options: dict = DATA_OPTIONS,
) -> None:
    """Fine-tune a teacher on the full training split and report validation/test accuracy."""
    from codistill.config import TrainConfig
    from codistill.distill import train_teacher

    dataset = _load(data, data_options)
    tcfg = TrainConfig(epochs=epochs, min_steps=0, batch_size=batch_size, lr=lr, max_length=max_length, seed=seed,
                       select_on=select_on)
    metrics = train_teacher(dataset, model, out, train=tcfg, max_train=max_train)
    console.print(f"teacher trained on {metrics['n_train']:,} rows in {metrics['train_seconds']:.0f}s; saved to {out}")
    _print_metrics("teacher", {s: metrics.get(s) for s in ("validation", "test")})


@app.command("distill")
@data_options
def distill_cmd(
    data: str = typer.Option("tweets", "--data", help="Dataset: 'tweets', a registered name, a folder or a file."),
    teacher: Optional[str] = typer.Option(None, "--teacher", help="Teacher folder or Hub name (not needed by finetune)."),
    out: Path = typer.Option(..., "--out", help="Output folder for the student, metrics.json and the log."),
    method: str = typer.Option("kd", "--method", help="finetune, kd, lwd or ted."),
    k: int = typer.Option(16, "--k", help="Few-shot budget: k labelled originals, k / classes per class."),
    seed: int = typer.Option(0, "--seed"),
    counterfactuals: Optional[Path] = typer.Option(None, "--counterfactuals", help="JSONL of counterfactual (or text,label) rows."),
    cod: bool = typer.Option(False, "--cod", help="CoD at budget k: k/2 originals + their counterfactuals "
                             "(from --counterfactuals, else generated with the edit search)."),
    cod_mode: str = typer.Option("replace", "--cod-mode", help="With --cod: 'replace' (k/2 + CFs) or 'augment' (k + CFs)."),
    student: str = typer.Option("minilm", "--student", help="Student Hub name or folder; 'minilm' = packaged MiniLM."),
    student_layers: Optional[int] = typer.Option(3, "--student-layers", help="Keep N evenly spaced layers (0 = all)."),
    student_init: str = typer.Option("pretrained", "--student-init", help="'pretrained' or 'teacher' (copy its layers)."),
    train_embeddings: bool = typer.Option(False, "--train-embeddings",
                                          help="Also train the student's word-embedding matrix (frozen by default)."),
    alpha: float = typer.Option(1.0, "--alpha", help="Weight of the KD term."),
    temperature: float = typer.Option(2.0, "--temperature", help="KD softmax temperature."),
    beta: float = typer.Option(1.0, "--beta", help="Weight of the LWD/TED term."),
    layer_map: Optional[str] = typer.Option(None, "--layer-map", help="STUDENT:TEACHER[:WEIGHT],... (default uniform)."),
    epochs: int = typer.Option(30, "--epochs"),
    min_steps: int = typer.Option(150, "--min-steps", help="Floor on optimizer steps."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps"),
    batch_size: int = typer.Option(8, "--batch-size"),
    grad_accum: int = typer.Option(1, "--grad-accum"),
    lr: float = typer.Option(5e-5, "--lr"),
    max_length: int = typer.Option(128, "--max-length"),
    select_on: str = typer.Option("none", "--select-on", help="'none' or 'validation' (never test)."),
    mixed_precision: str = typer.Option("auto", "--mixed-precision", help="no, fp16, bf16 or auto."),
    data_options: dict = DATA_OPTIONS,
) -> None:
    """Distill a teacher into a small student on a k-shot sample; write the student and metrics.json."""
    from codistill.config import DistillConfig, StudentConfig, TrainConfig, parse_layer_map
    from codistill.distill import distill

    dcfg = DistillConfig(method=method, alpha=alpha, temperature=temperature, beta=beta,
                         layer_map=parse_layer_map(layer_map))
    scfg = StudentConfig(model=student, layers=student_layers or None, init=student_init,
                         freeze_embeddings=not train_embeddings)
    tcfg = TrainConfig(epochs=epochs, min_steps=min_steps, max_steps=max_steps, batch_size=batch_size,
                       grad_accum=grad_accum, lr=lr, max_length=max_length, seed=seed, select_on=select_on,
                       mixed_precision=mixed_precision)
    dataset = _load(data, data_options)
    if cod and counterfactuals is None and teacher is not None:
        from codistill.counterfactuals import EditSearchGenerator, Verifier, generate_counterfactuals
        from codistill.models import load_classifier

        counterfactuals = out / "counterfactuals.jsonl"
        cf_k = k if cod_mode == "replace" else 2 * k  # augment: counterfactuals of all k originals
        s = generate_counterfactuals(dataset, Verifier.from_classifier(load_classifier(teacher, what="teacher")),
                                     EditSearchGenerator(), counterfactuals, k=cf_k, seed=seed)
        edited = "-" if s["edited_words_mean"] is None else f"{s['edited_words_mean']:.2f}"
        console.print(f"counterfactuals (edit search): {s['flipped']}/{s['originals']} flipped the teacher, "
                      f"{edited} words edited on average; {counterfactuals}")
    m = distill(dataset, teacher, out, k=k, seed=seed, student=scfg, method=dcfg, train=tcfg,
                counterfactuals=counterfactuals, cod=cod_mode if cod else None)
    from codistill.experiments import method_label

    console.print(
        f"{method_label(method, m['cod'])}: k={k}, seed={seed}, {m['n_originals']} originals + {m['n_counterfactuals']} counterfactuals, "
        f"{m['steps']} steps in {m['train_seconds']:.1f}s "
        f"({m['examples_per_second']:.1f} examples/s); saved to {out}"
    )
    _print_metrics(f"{dataset.name} test", {"student": m["test"], "teacher": m["teacher_test"]})


@app.command("counterfactuals")
@data_options
def counterfactuals_cmd(
    data: str = typer.Option("tweets", "--data", help="Dataset: 'tweets', a registered name, a folder or a file."),
    teacher: str = typer.Option(..., "--teacher", help="Teacher folder or Hub name: it verifies every candidate."),
    k: int = typer.Option(16, "--k", help="Budget k: counterfactuals for the k/2 originals CoD keeps."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (the same as for distill)."),
    generator: str = typer.Option("edits", "--generator", help="'edits' (offline search) or 'llm'."),
    out: Path = typer.Option(..., "--out", help="Output JSONL (one row per original); summary beside it."),
    on_failure: str = typer.Option("skip", "--on-failure", help="'skip' or 'keep-best' for originals with no flip."),
    max_edits: int = typer.Option(3, "--max-edits", help="edits: budget of word edits."),
    beam_width: int = typer.Option(4, "--beam-width", help="edits: beam width."),
    substitutes: int = typer.Option(8, "--substitutes",
                                    help="edits: teacher-chosen adjectives per label tried as swaps (0: none)."),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon", help="edits: JSON word -> antonyms (default WordNet)."),
    base_url: str = typer.Option("https://api.openai.com/v1", "--base-url", help="llm: OpenAI-compatible base URL."),
    model: str = typer.Option("gpt-4o", "--model", help="llm: model name."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="llm: env variable with the API key."),
    temperature: float = typer.Option(0.0, "--temperature", help="llm: sampling temperature."),
    concurrency: int = typer.Option(4, "--concurrency", help="llm: requests in flight."),
    max_attempts: int = typer.Option(3, "--max-attempts", help="llm: prompts per original (with feedback)."),
    max_changed_share: float = typer.Option(0.5, "--max-changed-share", help="llm: reject rewrites changing more words."),
    timeout: float = typer.Option(60.0, "--timeout", help="llm: seconds per request."),
    cache_dir: Optional[Path] = typer.Option(None, "--cache-dir", help="llm: answer cache (default: beside --out)."),
    data_options: dict = DATA_OPTIONS,
) -> None:
    """Generate counterfactuals for the CoD half of a k-shot sample, verified by the teacher."""
    from codistill.counterfactuals import (
        DictLexicon, EditSearchGenerator, LLMConfig, LLMGenerator, Verifier, generate_counterfactuals, summary_path)
    from codistill.models import load_classifier

    if generator == "edits":
        lex = DictLexicon.from_json(lexicon) if lexicon else None
        gen = EditSearchGenerator(lex, max_edits=max_edits, beam_width=beam_width, substitutes=substitutes)
    elif generator == "llm":
        cfg = LLMConfig(base_url=base_url, model=model, api_key_env=api_key_env, temperature=temperature,
                        concurrency=concurrency, max_attempts=max_attempts, max_changed_share=max_changed_share,
                        timeout=timeout, cache_dir=str(cache_dir or out.parent / ".llm_cache"))
        gen = LLMGenerator(cfg)
    else:
        raise CodistillError(f"--generator must be 'edits' or 'llm', got '{generator}'")
    dataset = _load(data, data_options)
    clf = load_classifier(teacher, what="teacher")
    if clf.model.config.num_labels != dataset.num_classes:
        raise CodistillError(f"the teacher has {clf.model.config.num_labels} labels but the dataset has {dataset.num_classes}")
    s = generate_counterfactuals(dataset, Verifier.from_classifier(clf), gen, out, k=k, seed=seed, on_failure=on_failure)
    table = Table(title=f"counterfactuals: {dataset.name}, k={k} ({s['originals']} originals), {s['generator']}")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def fmt(v):
        return "-" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))

    for key in ("flip_rate", "flipped", "used", "mean_target_prob", "edited_words_mean", "edited_words_median",
                "relative_edit_mean", "length_ratio_mean", "unchanged_share", "duplicate_share", "seconds"):
        table.add_row(key, fmt(s[key]))
    for key, value in s.get("llm", {}).items():
        if key not in ("base_url", "model"):
            table.add_row(f"llm {key}", fmt(value))
    console.print(table)
    console.print(f"wrote {out} and {summary_path(out)}")


@app.command("sweep")
def sweep_cmd(
    config: Path = typer.Argument(..., help="Sweep config (YAML): datasets, methods, cod, k, seeds, ..."),
    workers: Optional[int] = typer.Option(None, "--workers", help="Cells in parallel processes (default: the config's)."),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report when the sweep is done."),
) -> None:
    """Run a grid of distillation runs; resumable (finished cells are skipped)."""
    from codistill.experiments import SweepConfig, build_report, run_sweep

    cfg = SweepConfig.from_yaml(config)
    result = run_sweep(cfg, workers=workers)
    console.print(f"{result['ran']} cells run, {result['finished']}/{result['cells']} finished "
                  f"in {result['seconds']:.0f}s; results in {cfg.out}")
    if report and result["finished"]:
        build_report(cfg.out)
        console.print(f"report: {Path(cfg.out) / 'report.md'}")


@app.command("report")
def report_cmd(run_dir: Path = typer.Argument(..., help="A sweep folder.")) -> None:
    """Write report.md (tables, paired CoD - baseline differences), cells.csv and PNG plots."""
    from codistill.experiments import build_report

    build_report(run_dir)
    typer.echo((run_dir / "report.md").read_text())
    console.print(f"report: {run_dir / 'report.md'}; plots: "
                  + ", ".join(str(p) for p in sorted(run_dir.glob("*.png"))) + f"; cells: {run_dir / 'cells.csv'}")


@app.command("demo")
def demo(out: Path = typer.Option(Path("runs/demo"), "--out", help="Where the demo writes everything.")) -> None:
    """The one-command demo on the embedded tweets: teacher, counterfactuals, KD vs KD+CoD, report."""
    import time

    from codistill.experiments import build_report, demo_config, run_sweep

    start = time.perf_counter()
    cfg = demo_config(out)
    console.print("codistill demo: tweets (embedded), MiniLM teacher, 3-layer MiniLM student, "
                  "KD vs KD+CoD at k = 8, 16, 32 over 3 seeds")
    run_sweep(cfg)
    build_report(cfg.out)
    typer.echo((out / "report.md").read_text())
    console.print(f"done in {time.perf_counter() - start:.0f}s. report: {out / 'report.md'}; plots: "
                  + ", ".join(str(p) for p in sorted(out.glob("*.png"))))


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point: run the app, turning known errors into one line on stderr and exit status 2."""
    err = Console(stderr=True)
    try:
        app(args=argv, standalone_mode=False)
    except CodistillError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except NotImplementedError as exc:
        err.print(f"[red]not implemented:[/red] {exc}", highlight=False, soft_wrap=True)
        return 3
    except FileNotFoundError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except SystemExit as exc:  # typer/click usage errors and --help
        return int(exc.code or 0)
    except Exception as exc:  # click's own usage errors
        import click

        if isinstance(exc, click.exceptions.ClickException):
            exc.show()
            return exc.exit_code
        if isinstance(exc, click.exceptions.Abort):
            return 1
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
