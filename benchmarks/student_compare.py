"""Students of several sweeps side by side, paired on the same samples and seeds: each arm is one method label
(``kd``, ``kd+cod``, ``kd_con+cod``, ...) of one sweep folder, and every arm is compared with a reference arm
seed by seed (the sweeps share the dataset, teacher, k and seeds, so their samples are the same). An arm
``NAME=FOLDER:setfit`` (or the name another SetFit line was run under, e.g. ``setfit-3l``) reads
``benchmarks/setfit_line.py``'s results on the same samples. ``FOLDER@CONFIG`` (a sweep YAML or the start of
its hash) takes only that config's cells from a folder several sweeps share; a report's ``cells.csv`` is an
arm too (without parameter counts), e.g. one kept in ``benchmarks/results``.

    python benchmarks/student_compare.py --dataset sst2 --out benchmarks/results/student_heads_sst2 \
        --arm "cls kd=runs/heads_cls:kd" --arm "mean kd_con=runs/heads_mean:kd_con" ...

Writes ``compare.md`` (test accuracy, macro-F1, teacher agreement, validation accuracy and, for cells that
evaluated along training, the reference-protocol figure (the best validation evaluation, optimistic) as mean ±
std over seeds; the paired difference arm − reference with its 95% t-interval and seeds won, on test, on
validation and under the reference protocol), ``arms.csv`` (one row per arm, k and seed) and ``accuracy_vs_k.png``. Choose between arms on the
validation columns; the test columns are what the chosen arm is reported with.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from codistill.experiments.report import cell_rows, read_cells, split_source, sweep_cells
from codistill.experiments.stats import format_mean_std, format_paired, mean_std, paired_difference
from codistill.fileio import atomic_write_text

METRICS = (("accuracy", "Test accuracy"), ("macro_f1", "Test macro-F1"), ("agreement", "Teacher agreement on test"),
           ("validation_accuracy", "Validation accuracy"),
           ("reference_accuracy", "Reference protocol: best validation evaluation along training (optimistic)"))
PAIRED = (("accuracy", "test accuracy"), ("validation_accuracy", "validation accuracy"),
          ("reference_accuracy", "reference-protocol accuracy"))


def parse_arm(text: str) -> tuple[str, str, str]:
    """``NAME=SOURCE:LABEL`` -> (name, source, method label); the source is a sweep folder, ``FOLDER@CONFIG``
    or a report's cells.csv."""
    name, sep, rest = text.partition("=")
    folder, sep2, label = rest.rpartition(":")
    if not (sep and sep2 and name and folder and label):
        raise SystemExit(f"--arm '{text}': expected NAME=SWEEP_DIR:LABEL (e.g. 'mean kd=runs/heads_mean:kd')")
    return name.strip(), folder, label.strip()


def setfit_rows(folder: Path, name: str = "setfit") -> dict[tuple[int, int], dict]:
    """(k, seed) -> the result of the SetFit line ``name`` of ``benchmarks/setfit_line.py`` (its
    ``results.jsonl``; rows written before lines had names are ``setfit``)."""
    import json

    out = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("name", "setfit") != name:
            continue
        out[(r["k"], r["seed"])] = {"k": r["k"], "seed": r["seed"], "accuracy": r["test_accuracy"],
                                    "macro_f1": r.get("test_macro_f1"), "agreement": None,
                                    "validation_accuracy": r["validation_accuracy"], "train_seconds": r["train_seconds"],
                                    "student_parameters": r.get("parameters"), "teacher_parameters": None,
                                    "teacher_accuracy": None, "no_teacher": True}
    if not out:
        raise SystemExit(f"{folder}/results.jsonl: no SetFit line named '{name}'")
    return out


def _number(value: str):
    """A cells.csv field as the report wrote it: an int, a float, ``None`` for an empty field, or the text."""
    if value == "":
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def source_rows(source: str | Path, dataset: str) -> list[dict]:
    """The cell rows on ``dataset`` of a sweep folder, of one config in it (``FOLDER@CONFIG``), or of a report's
    ``cells.csv``, each with its parameter counts and teacher accuracy (``None`` from a cells.csv)."""
    if str(source).endswith(".csv") and Path(source).is_file():
        with open(source, newline="", encoding="utf-8") as f:
            rows = [{key: _number(value) for key, value in r.items()} for r in csv.DictReader(f)]
        return [{**r, "student_parameters": None, "teacher_parameters": None, "teacher_accuracy": None}
                for r in rows if r["dataset"] == dataset]
    folder, config = split_source(source)
    cells = sweep_cells(folder, config) if config else read_cells(folder / "cells")
    cells = [c for c in cells if c["dataset"] == dataset]
    params = {(c["k"], c["seed"], c["method"], c["cod"] or "none"):
              (c["student_parameters"], c["teacher_parameters"], (c.get("teacher_test") or {}).get("accuracy"))
              for c in cells}
    rows = cell_rows(cells)
    for row in rows:
        row["student_parameters"], row["teacher_parameters"], row["teacher_accuracy"] = \
            params[(row["k"], row["seed"], row["method"], row["cod"])]
    return rows


def arm_rows(source: str | Path, label: str, dataset: str) -> dict[tuple[int, int], dict]:
    """(k, seed) -> the cell row of ``label`` on ``dataset`` in ``source`` (:func:`source_rows`); a label
    starting ``setfit`` (``setfit``, ``setfit-3l``): that SetFit line's results in the folder (no teacher)."""
    if label.startswith("setfit"):
        return setfit_rows(Path(source), label)
    out = {(row["k"], row["seed"]): row for row in source_rows(source, dataset) if row["label"] == label}
    if not out:
        raise SystemExit(f"{source}: no finished cell labelled '{label}' on dataset '{dataset}'")
    return out


def _by_seed(rows: dict[tuple[int, int], dict], k: int, metric: str) -> dict[int, float]:
    return {s: r[metric] for (kk, s), r in rows.items() if kk == k and r.get(metric) is not None}


def recorded(arms: list[tuple[str, dict]], ks: list[int], metric: str) -> bool:
    """Whether any arm has ``metric`` at any of ``ks`` (a table of only dashes is left out)."""
    return any(_by_seed(rows, k, metric) for _, rows in arms for k in ks)


def tables(arms: list[tuple[str, dict]], ks: list[int]) -> str:
    """The markdown: one table per metric, then the paired differences against the first arm."""
    out = io.StringIO()
    head = "| arm | " + " | ".join(f"k={k}" for k in ks) + " |\n|---|" + "---|" * len(ks) + "\n"
    for metric, title in METRICS:
        if not recorded(arms, ks, metric):
            continue
        out.write(f"\n{title} (%), mean ± std over seeds:\n\n{head}")
        for name, rows in arms:
            cols = [format_mean_std(mean_std(list(_by_seed(rows, k, metric).values()))) for k in ks]
            out.write(f"| {name} | " + " | ".join(cols) + " |\n")
    ref_name, ref = arms[0]
    for metric, title in PAIRED:
        if not recorded(arms, ks, metric):
            continue
        out.write(f"\nPaired difference arm − {ref_name} in {title} points, per seed: mean [95% CI] (seeds won):\n\n{head}")
        for name, rows in arms[1:]:
            cols = []
            for k in ks:
                cols.append(format_paired(paired_difference(_by_seed(rows, k, metric), _by_seed(ref, k, metric))))
            out.write(f"| {name} | " + " | ".join(cols) + " |\n")
    return out.getvalue()


def plot(arms: list[tuple[str, dict]], ks: list[int], teacher: float | None, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, rows in arms:
        stats = [mean_std(list(_by_seed(rows, k, "accuracy").values())) for k in ks]
        ax.errorbar(ks, [100 * s[0] for s in stats], yerr=[100 * s[1] for s in stats], marker="o", capsize=3,
                    label=name)
    if teacher is not None:
        ax.axhline(100 * teacher, color="black", linestyle="--", linewidth=1, label=f"teacher {100 * teacher:.1f}")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (labelled examples)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def keep_k(arms: list[tuple[str, dict]], ks: list[int]) -> list[tuple[str, dict]]:
    """Each arm's rows at the k in ``ks`` only; an arm left with none is an error that names it."""
    kept = [(name, {(k, s): r for (k, s), r in rows.items() if k in ks}) for name, rows in arms]
    if empty := [name for name, rows in kept if not rows]:
        raise SystemExit(f"--k {' '.join(map(str, ks))}: no cells of arm(s) {', '.join(empty)} at these k")
    return kept


def reference_teacher(arms: list[tuple[str, dict]]) -> dict | None:
    """A row of the reference (first) arm that records its teacher; None when it has none (a SetFit line)."""
    return next((r for r in arms[0][1].values() if r.get("teacher_parameters")), None)


def header(dataset: str, arms: list[tuple[str, dict]]) -> list[str]:
    """The lines above the tables: the reference arm's teacher (every size ratio is against it, SetFit lines
    included, since they are the alternative to distilling from it) and each arm's size and seeds."""
    ref_name = arms[0][0]
    teacher = reference_teacher(arms)
    lines = [f"# Students compared on {dataset}, paired on the same samples and seeds\n"]
    if teacher is None:
        lines.append(f"The reference arm {ref_name} has no teacher; no size ratio is given.")
    else:
        accuracy = (f", test accuracy {100 * teacher['teacher_accuracy']:.2f}%"
                    if teacher.get("teacher_accuracy") is not None else "")
        lines.append(f"Teacher of the reference arm {ref_name}: {teacher['teacher_parameters']:,} parameters{accuracy}. "
                     "Every ratio below is against it.")
    teacher_params = teacher["teacher_parameters"] if teacher else None
    for name, rows in arms:
        seeds = sorted({s for _, s in rows})
        student = next((r["student_parameters"] for r in rows.values() if r["student_parameters"]), None)
        ratio = f", {teacher_params / student:.1f}× fewer than that teacher" if teacher_params and student else ""
        size = f"{student:,} parameters" if student else "parameters not recorded"
        untaught = ", trained without a teacher" if next(iter(rows.values())).get("no_teacher") else ""
        lines.append(f"- {name}: {size}{ratio}{untaught}; seeds {seeds[0]}–{seeds[-1]} ({len(seeds)}), "
                     f"{len(rows)} cells")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", action="append", required=True,
                    help="NAME=SOURCE:LABEL, SOURCE a sweep folder, FOLDER@CONFIG or a report's cells.csv "
                    "(or NAME=SETFIT_DIR:setfit); the first is the reference")
    ap.add_argument("--dataset", required=True, help="dataset name in the cells (e.g. sst2)")
    ap.add_argument("--out", type=Path, required=True, help="folder for compare.md, arms.csv and the plot")
    ap.add_argument("--k", type=int, nargs="+", help="only these k (default: every k any arm has)")
    args = ap.parse_args()
    arms = [(name, arm_rows(folder, label, args.dataset)) for name, folder, label in map(parse_arm, args.arm)]
    if args.k:
        arms = keep_k(arms, args.k)
    ks = sorted({k for _, rows in arms for k, _ in rows})
    lines = header(args.dataset, arms)
    md = "\n".join(lines) + "\n" + tables(arms, ks)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "compare.md", md)
    buf = io.StringIO()
    fields = ["arm", "k", "seed", "accuracy", "macro_f1", "agreement", "validation_accuracy", "reference_accuracy",
              "reference_step", "evaluations", "n_train", "steps",
              "train_seconds", "student_parameters"]
    writer = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    for name, rows in arms:
        for (k, seed), row in sorted(rows.items()):
            writer.writerow({**row, "arm": name})
    atomic_write_text(args.out / "arms.csv", buf.getvalue())
    teacher = reference_teacher(arms)
    plot(arms, ks, teacher and teacher.get("teacher_accuracy"), args.out / "accuracy_vs_k.png", f"{args.dataset}: students paired on samples and seeds")
    print(md)


if __name__ == "__main__":
    main()
