"""The CoD paper's table beside ours, in its layout: for each dataset the paper's KD → KD + CoD row and ours
under both protocols, from sweeps whose cells recorded a validation curve (``train.eval_points``):

- *reference protocol*: the best of the validation evaluations along training, scored on the split it was
  chosen on, which is what the paper's code reports (optimistic);
- *our protocol*: the final weights on the test split, nothing selected.

Each sweep is one recipe (``--sweep NAME=FOLDER``, e.g. ``reference=runs/paper_sst2_reference``); a dataset
is matched with the paper's by its name in the sweep (``--paper-name`` maps others). The paired CoD − KD
differences (95% t-interval, seeds won) and the selection bias (reference figure − the final weights' own
validation accuracy) come from the sweeps' reports. A recipe may also be given by the ``summary.json`` of a
sweep reported earlier (``--sweep reference=benchmarks/results/paper_table_sst2/reference_summary.json``), so a
table can be rebuilt when only one of its sweeps is at hand.

    python benchmarks/paper_table.py --sweep reference=runs/paper_sst2_reference \
        --sweep default=runs/paper_sst2_default --out benchmarks/results/paper_table
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import yaml

from codistill.experiments import build_report
from codistill.fileio import atomic_write_text

PAPER = Path(__file__).resolve().parent / "paper_table" / "paper.yaml"
ROWS = (("reference_accuracy", "paired_reference", "reference protocol (best validation evaluation)"),
        ("accuracy", "paired", "our protocol (final weights, test)"))


def _pair(ds: dict, metric: str, k: int) -> str:
    kd, cod = (ds[metric].get(label, {}).get(str(k)) for label in ("kd", "kd+cod"))
    if not kd or not cod:
        return "-"
    return f"{kd['mean'] * 100:.1f} → {cod['mean'] * 100:.1f}"


def _diff(ds: dict, where: str, k: int) -> str:
    d = (ds.get(where) or {}).get("kd+cod - kd", {}).get(str(k))
    if not d or not d["n"]:
        return "-"
    if d["n"] == 1:
        return f"{d['mean'] * 100:+.1f} (1 seed)"
    return f"{d['mean'] * 100:+.1f} [{d['ci_low'] * 100:+.1f}, {d['ci_high'] * 100:+.1f}] ({d['wins']}/{d['n']})"


def _bias(ds: dict, k: int) -> str:
    parts = [ds["selection_bias"].get(label, {}).get(str(k)) for label in ("kd", "kd+cod")]
    if not all(parts):
        return "-"
    return " / ".join(f"{p['mean'] * 100:+.1f}" for p in parts)


def load_summary(source: Path) -> dict:
    """A sweep's summary: built from its folder, or read from the summary.json a report wrote earlier."""
    return json.loads(source.read_text(encoding="utf-8")) if source.is_file() else build_report(source)


def paper_table(sweeps: dict[str, Path], paper: dict, names: dict[str, str]) -> str:
    """The Markdown table: per dataset, the paper's row, then per sweep (recipe) its KD → KD + CoD and CoD − KD
    under both protocols, its selection bias, and the teachers' accuracies."""
    summaries = {name: load_summary(source) for name, source in sweeps.items()}
    datasets = sorted({d for s in summaries.values() for d in s["datasets"]})
    md = ["# The CoD paper's table and ours", "",
          "Accuracy (%), KD → KD + CoD, mean over seeds; CoD − KD per seed: mean [95% CI] (seeds won). The "
          "reference protocol is what the paper's code reports (the best of the validation evaluations along "
          "training, on the split it was chosen on: optimistic); ours is the final weights on the test split. "
          "Selection bias: reference figure − the final weights' validation accuracy, KD / KD + CoD (points).", ""]
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
            for metric, where, protocol in ROWS:
                if not any(ds[metric].values()):
                    continue
                md.append(f"| {name} ({seeds} seeds) | {protocol} | KD → KD + CoD | "
                          + " | ".join(_pair(ds, metric, k) for k in ks) + " |")
                md.append("| | | CoD − KD | " + " | ".join(_diff(ds, where, k) for k in ks) + " |")
            if any(ds["selection_bias"].values()):
                md.append("| | selection bias | KD / KD + CoD | " + " | ".join(_bias(ds, k) for k in ks) + " |")
        md.append("")
    return "\n".join(md) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="append", required=True,
                        help="NAME=SWEEP_FOLDER or NAME=SUMMARY.json (one per recipe)")
    parser.add_argument("--paper-name", action="append", default=[], help="OURS=PAPERS (a dataset's name in paper.yaml)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    sweeps = {}
    for item in args.sweep:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise SystemExit(f"--sweep '{item}': expected NAME=SWEEP_FOLDER")
        sweeps[name] = Path(folder)
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
    for name, folder in sweeps.items():
        if folder.is_file():  # a summary reported earlier: nothing more to copy
            continue
        atomic_write_text(args.out / f"{name}_summary.json", json.dumps(
            json.loads((folder / "summary.json").read_text()), indent=1) + "\n")
        atomic_write_text(args.out / f"{name}_cells.csv", (folder / "cells.csv").read_text())
    print(table)


if __name__ == "__main__":
    main()
