"""The CoD paper's table beside ours, in its layout: for each dataset the paper's KD → KD + CoD row and ours
under both protocols, from sweeps whose cells recorded a validation curve (``train.eval_points``):

- *reference protocol*: the best of the validation evaluations along training, scored on the split it was
  chosen on, which is what the paper's code reports (optimistic);
- *our protocol*: the final weights on the test split, nothing selected.

Each sweep is one recipe (``--sweep NAME=FOLDER``, e.g. ``reference=runs/paper_sst2_reference``; the folder's last
config, or the one named after ``@``: ``FOLDER@SWEEP.yaml`` or ``FOLDER@HASH``, as ``codistill report --config``); a recipe's
datasets may come from several folders (one ``--sweep`` each, with the same NAME); a dataset is matched with
the paper's by its name in the sweep (``--paper-name`` maps others). Where a sweep also ran codistill's
default CoD mode, its rows follow the paper mode's. The paired CoD − KD
differences (95% t-interval, seeds won) and the selection bias (reference figure − the final weights' own
validation accuracy) come from the sweeps' reports. A recipe may also be given by the ``summary.json`` of a
sweep reported earlier (``--sweep reference=benchmarks/results/paper_table/reference_paper_sst2_reference_summary.json``,
which the script writes for every folder), so a table can be rebuilt when only some of its sweeps are at hand.

    python benchmarks/paper_table.py --sweep reference=runs/paper_sst2_reference \
        --sweep default=runs/paper_sst2_default --sweep default=runs/paper_cola --out benchmarks/results/paper_table
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

import yaml

from codistill import cod as cod_rules
from codistill.experiments import build_report
from codistill.experiments.report import split_source
from codistill.experiments.stats import format_paired
from codistill.experiments.grid import method_label
from codistill.fileio import atomic_write_text

PAPER = Path(__file__).resolve().parent / "paper_table" / "paper.yaml"
ROWS = (("reference_accuracy", "paired_reference", "reference protocol (best validation evaluation)"),
        ("accuracy", "paired", "our protocol (final weights, test)"))
PLOT_LINK = re.compile(r"\]\(([^()/]+\.png)\)")  # a report's links to the plots beside it


# the CoD arms a table shows, each against KD: the paper's mode (the paper's row is that mode), then the default
# when it differs; named by the labels the sweeps give them
KD = method_label("kd", None)
ARMS = tuple(dict.fromkeys((cod_rules.PAPER_MODE, cod_rules.DEFAULT_MODE)))


def _arm(mode: str) -> tuple[str, str]:
    """A CoD arm's label in the sweeps and its name in the table."""
    name = "KD + CoD" + ("" if mode == cod_rules.PAPER_MODE else f" {mode}")
    return method_label("kd", mode), name + (" (the default)" if mode == cod_rules.DEFAULT_MODE else "")


def _pair(ds: dict, metric: str, k: int, label: str) -> str:
    kd, cod = (ds[metric].get(arm, {}).get(str(k)) for arm in (KD, label))
    if not kd or not cod:
        return "-"
    return f"{kd['mean'] * 100:.1f} → {cod['mean'] * 100:.1f}"


def _diff(ds: dict, where: str, k: int, label: str) -> str:
    return format_paired((ds.get(where) or {}).get(f"{label} - {KD}", {}).get(str(k)))


def _bias(ds: dict, k: int, label: str) -> str:
    parts = [ds["selection_bias"].get(arm, {}).get(str(k)) for arm in (KD, label)]
    if not all(parts):
        return "-"
    return " / ".join(f"{p['mean'] * 100:+.1f}" for p in parts)


def load_summary(source: str | Path) -> dict:
    """A sweep's summary: built from its folder (``FOLDER[@CONFIG]``: :func:`split_source`), or read from the
    summary.json a report wrote earlier."""
    folder, config = split_source(source)
    return json.loads(folder.read_text(encoding="utf-8")) if folder.is_file() else build_report(folder, config)


def merge_recipe(name: str, sources: list[str | Path]) -> dict:
    """One recipe's datasets from several sweeps (e.g. one folder per dataset); a dataset in two of them is
    refused rather than one silently hiding the other."""
    datasets: dict[str, dict] = {}
    for source in sources:
        for dataset, ds in load_summary(source)["datasets"].items():
            if dataset in datasets:
                raise SystemExit(f"--sweep {name}={source}: dataset '{dataset}' is already in another sweep of "
                                 f"recipe '{name}'")
            datasets[dataset] = ds
    return {"datasets": datasets}


def paper_table(sweeps: dict[str, list[str | Path]], paper: dict, names: dict[str, str]) -> str:
    """The Markdown table: per dataset, the paper's row, then per sweep (recipe) its KD → KD + CoD and CoD − KD
    under both protocols, its selection bias, and the teachers' accuracies."""
    summaries = {name: merge_recipe(name, sources) for name, sources in sweeps.items()}
    datasets = sorted({d for s in summaries.values() for d in s["datasets"]})
    md = ["# The CoD paper's table and ours", "",
          "Accuracy (%), KD → KD + CoD, mean over seeds; CoD − KD per seed: mean [95% CI] (seeds won). The "
          "reference protocol is what the paper's code reports (the best of the validation evaluations along "
          "training, on the split it was chosen on: optimistic); ours is the final weights on the test split. "
          "Selection bias: reference figure − the final weights' validation accuracy, KD / KD + CoD (points). "
          f"KD + CoD is the paper's mode ({cod_rules.MODES[cod_rules.PAPER_MODE]})"
          + ("" if cod_rules.DEFAULT_MODE == cod_rules.PAPER_MODE else
             f"; KD + CoD {cod_rules.DEFAULT_MODE}, codistill's default, is "
             f"{cod_rules.MODES[cod_rules.DEFAULT_MODE]}") + ".", ""]
    for dataset in datasets:
        key = names.get(dataset, dataset)
        ks = sorted({int(k) for s in summaries.values() if dataset in s["datasets"] for k in s["datasets"][dataset]["ks"]})
        md += [f"## {dataset}", ""]
        teacher = [f"paper: {paper['teacher']} {paper['teacher_accuracy'][key] * 100:.1f}%"
                   if key in paper["teacher_accuracy"] else "paper: -"]
        for name, s in summaries.items():
            ds = s["datasets"].get(dataset)
            if ds and ds["teacher_accuracy"] is not None:
                val = ds.get("teacher_validation_accuracy")
                teacher.append(f"{name}: {ds['teacher_accuracy'] * 100:.1f}% test"
                               + (f", {val * 100:.1f}% validation" if val is not None else ""))
        md += ["Teacher accuracy: " + "; ".join(teacher) + ".", "",
               "| recipe | protocol | | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|---|---|" + "---|" * len(ks)]
        cited = paper["kd_vs_cod"].get(key, {})
        if cited:
            md.append(f"| paper ({paper['student']}) | its code's | KD → KD + CoD | " + " | ".join(
                f"{cited[k][0] * 100:.1f} → {cited[k][1] * 100:.1f}" if k in cited else "-" for k in ks) + " |")
        for name, s in summaries.items():
            ds = s["datasets"].get(dataset)
            if not ds:
                continue
            seeds = max((v["n"] for by_k in ds["accuracy"].values() for v in by_k.values()), default=0)
            arms = [arm for arm in map(_arm, ARMS) if arm[0] in ds["labels"]]
            for metric, where, protocol in ROWS:
                if not any(ds[metric].values()):
                    continue
                for i, (label, arm) in enumerate(arms):
                    md.append(f"| {name} ({seeds} seeds) | {protocol} | KD → {arm} | "
                              if i == 0 else f"| | | KD → {arm} | ")
                    md[-1] += " | ".join(_pair(ds, metric, k, label) for k in ks) + " |"
                    md.append(f"| | | {arm} − KD | " + " | ".join(_diff(ds, where, k, label) for k in ks) + " |")
            if any(ds["selection_bias"].values()):
                for label, arm in arms:
                    md.append(f"| | selection bias | KD / {arm} | " + " | ".join(_bias(ds, k, label) for k in ks) + " |")
        md.append("")
    return "\n".join(md) + "\n"


def copy_results(prefix: str, folder: Path, out: Path) -> None:
    """A sweep folder's summary, cells and report in ``out`` as ``PREFIX_<file>``, with the plots the report
    links, renamed alike (the links follow)."""
    for what in ("summary.json", "cells.csv"):
        atomic_write_text(out / f"{prefix}_{what}", (folder / what).read_text(encoding="utf-8"))
    report = (folder / "report.md").read_text(encoding="utf-8")
    plots = {name for name in PLOT_LINK.findall(report) if (folder / name).is_file()}
    for name in plots:
        shutil.copyfile(folder / name, out / f"{prefix}_{name}")
    report = PLOT_LINK.sub(lambda m: f"]({prefix}_{m.group(1)})" if m.group(1) in plots else m.group(0), report)
    atomic_write_text(out / f"{prefix}_report.md", report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="append", required=True,
                        help="NAME=SWEEP_FOLDER[@CONFIG] or NAME=SUMMARY.json (repeat a NAME for its other "
                             "folders; CONFIG: a sweep YAML or hash, default the folder's last)")
    parser.add_argument("--paper-name", action="append", default=[], help="OURS=PAPERS (a dataset's name in paper.yaml)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sweeps: dict[str, list[str]] = {}
    for item in args.sweep:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--sweep '{item}': expected NAME=SWEEP_FOLDER")
        sweeps.setdefault(name, []).append(folder)
    names = {}
    for item in args.paper_name:
        ours, sep, theirs = item.partition("=")
        if not sep or not ours or not theirs:
            raise SystemExit(f"--paper-name '{item}': expected OURS=PAPERS (e.g. yelp=yelp)")
        names[ours] = theirs
    paper = yaml.safe_load(PAPER.read_text(encoding="utf-8"))
    table = paper_table(sweeps, paper, names)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "paper_table.md", table)
    for name, folders in sweeps.items():
        for source in folders:
            folder = split_source(source)[0]
            if folder.is_file():  # a summary reported earlier: nothing more to copy
                continue
            copy_results(f"{name}_{folder.name}", folder, args.out)
    print(table)


if __name__ == "__main__":
    main()
