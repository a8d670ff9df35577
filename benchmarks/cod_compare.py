"""Issue 6's benchmark tables: KD and LWD, each against itself + CoD, from a finished (or partial) sweep,
next to the paper's numbers.

    codistill sweep benchmarks/cod.yaml --workers 2
    python benchmarks/cod_compare.py runs/bench_cod > runs/bench_cod/compare.md

Reads the sweep's ``summary.json`` (written by ``codistill report``; rebuilt here from the cell files) and
prints, per dataset, baseline and k: the baseline's and baseline+CoD's test accuracy (mean ± std, seeds),
the paired per-seed difference with its 95% t-interval and the seeds CoD won, and, for KD only, the
paper's KD → KD+CoD (DeBERTa-v3-base teacher; Hamman et al. 2025, as quoted in ../shared/DESIGN.md §2)
and, for SST-2, this machine's prototype (DESIGN.md §4).
"""

from __future__ import annotations

import argparse

from codistill.experiments import build_report
from codistill.experiments.stats import format_paired

# test accuracy, KD -> KD+CoD, k = 8, 16, 32, 64 (cited, not measured here)
PAPER = {
    "sst2": [(61.7, 71.9), (71.2, 78.1), (75.7, 82.1), (82.0, 82.7)],
    "cola": [(69.3, 73.9), (70.7, 75.5), (72.1, 76.9), (74.7, 76.9)],
}
PROTOTYPE = {"sst2": [(56.1, 64.3), (60.8, 67.2), (66.0, 70.6), (68.4, 73.1)]}
KS = (8, 16, 32, 64)


def _cell(stats: dict | None, show_n: str = "y") -> str:
    if not stats or not stats.get("n"):
        return "not run"
    return f"{100 * stats['mean']:.1f} ± {100 * stats['std']:.1f}" + (f" (n={stats['n']})" if show_n == "y" else "")


def print_table(name: str, ds: dict, base: str) -> None:
    """One dataset's table for ``base`` vs ``base``+CoD; the paper and prototype columns (KD only) for kd."""
    cod = f"{base}+cod"
    acc, paired = ds["accuracy"], ds["paired"].get(f"{cod} - {base}", {})
    if base not in acc:
        return
    teacher = ds.get("teacher_accuracy")
    b = base.upper()
    print(f"### {name}, {b} (teacher {100 * teacher:.1f}% test accuracy; test rows {ds.get('test_rows')})\n")
    cols = ["k", b, f"{b}+CoD", f"CoD − {b}, points [95% CI] (seeds won)"]
    cited = base == "kd"
    if cited:
        cols.append("paper KD → KD+CoD")
        if name in PROTOTYPE:
            cols.append("prototype KD → KD+CoD")
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for i, k in enumerate(KS):
        key = str(k)
        p = paired.get(key)
        diff = format_paired(p)
        row = [str(k), _cell(acc.get(base, {}).get(key)), _cell(acc.get(cod, {}).get(key)), diff]
        if cited:
            row.append("{:.1f} → {:.1f}".format(*PAPER[name][i]) if name in PAPER else "—")
            if name in PROTOTYPE:
                row.append("{:.1f} → {:.1f}".format(*PROTOTYPE[name][i]))
        print("| " + " | ".join(row) + " |")
    mcc = ds.get("mcc", {})
    print("\nMatthews correlation × 100: " + "; ".join(
        f"k={k} {b} {_cell(mcc.get(base, {}).get(str(k)), 'n')} / {b}+CoD "
        f"{_cell(mcc.get(cod, {}).get(str(k)), 'n')}" for k in KS if str(k) in mcc.get(base, {})) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--baseline", action="append", help="kd, lwd, ... (repeatable; default: kd and lwd)")
    args = ap.parse_args()
    summary = build_report(args.run_dir)
    for name, ds in summary["datasets"].items():
        for base in args.baseline or ["kd", "lwd"]:
            print_table(name, ds, base)


if __name__ == "__main__":
    main()
