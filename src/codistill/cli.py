"""The ``codistill`` command line: a thin layer over the Python API (no logic of its own)."""

from __future__ import annotations

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


# Options shared by every command that reads a dataset ----------------------------------------------
TextColumnOpt = typer.Option(None, "--text-column", help="Text column(s), comma-separated (default: auto).")
LabelColumnOpt = typer.Option(None, "--label-column", help="Label column (default: auto).")
LabelsOpt = typer.Option(None, "--labels", help="Class names in index order, comma-separated.")
LabelMapOpt = typer.Option(None, "--label-map", help="Raw label to class name, e.g. '0:negative,4:positive'.")
DropLabelsOpt = typer.Option(None, "--drop-labels", help="Raw label values to drop, comma-separated.")
EncodingOpt = typer.Option("utf-8", "--encoding", help="Encoding of local files.")
SplitSeedOpt = typer.Option(0, "--split-seed", help="Seed for carving missing validation/test splits.")


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
def data_show(
    data: str = typer.Argument(..., help="'tweets', a registered name (sst2, cola, ...), a folder or a file."),
    examples: int = typer.Option(2, "--examples", min=0, help="Training examples shown per class."),
    text_column: Optional[str] = TextColumnOpt,
    label_column: Optional[str] = LabelColumnOpt,
    labels: Optional[str] = LabelsOpt,
    label_map: Optional[str] = LabelMapOpt,
    drop_labels: Optional[str] = DropLabelsOpt,
    encoding: str = EncodingOpt,
    split_seed: int = SplitSeedOpt,
) -> None:
    """Print splits, sizes, class balance, text-length percentiles and a few examples."""
    from codistill.data import describe, load_dataset

    cfg = data_config(data, text_column, label_column, labels, label_map, drop_labels, encoding, split_seed)
    dataset = load_dataset(cfg)
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
def data_sample(
    data: str = typer.Argument(..., help="'tweets', a registered name, a folder or a file."),
    k: int = typer.Option(..., "--k", help="Total examples, k / (number of classes) per class."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed; samples of one seed are nested across k."),
    split: str = typer.Option("train", "--split", help="Split to sample from."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the sample to this .csv/.tsv/.jsonl file."),
    text_column: Optional[str] = TextColumnOpt,
    label_column: Optional[str] = LabelColumnOpt,
    labels: Optional[str] = LabelsOpt,
    label_map: Optional[str] = LabelMapOpt,
    drop_labels: Optional[str] = DropLabelsOpt,
    encoding: str = EncodingOpt,
    split_seed: int = SplitSeedOpt,
) -> None:
    """Draw a balanced, seeded k-shot sample and print it or write it to a file."""
    from codistill.data import load_dataset, sample_from, write_labeled

    cfg = data_config(data, text_column, label_column, labels, label_map, drop_labels, encoding, split_seed)
    dataset = load_dataset(cfg)
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


@app.command("demo")
def demo() -> None:
    """The one-command demo: teacher, counterfactuals, KD vs KD+CoD on the embedded tweets (not built yet)."""
    raise NotImplementedError(
        "the demo pipeline (teacher -> counterfactuals -> KD vs KD+CoD) is not built yet; "
        "try `codistill data show tweets`"
    )


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
