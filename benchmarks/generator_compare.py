"""Issue 12's outcome table: CoD with one counterfactual generator against CoD with another, paired on the
same samples and seeds (two sweeps that differ only in ``generator``, or, for issue 13, plain CoD against
CoD ``multi``), and the quality of their sets.

    codistill sweep benchmarks/cod_generators/sst2_edits.yaml
    codistill sweep benchmarks/cod_generators/sst2_edits_lm.yaml
    python benchmarks/generator_compare.py runs/cod_gen_sst2_edits runs/cod_gen_sst2_edits_lm > compare.md

Per dataset, method and k: each generator's test accuracy and teacher agreement (mean ± std over seeds)
and the paired per-seed difference (second − first) with its 95% t-interval and the seeds it won. Then the
counterfactual sets' flip rate, edited words, fluency, validity and seconds, averaged over the seeds' files.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from codistill.experiments.report import cell_rows, read_cells
from codistill.experiments.stats import format_mean_std, format_paired, mean_std, paired_difference
from codistill.fileio import read_json

QUALITY = ("flip_rate", "edited_words_median", "fluency_ratio_median", "fluency_share_le_1_5", "validity",
           "distinct_edit_share", "seconds")


def _rows(root: Path) -> dict[tuple, dict]:
    return {(r["dataset"], r["method"], r["k"], r["seed"]): r for r in cell_rows(read_cells(root / "cells"))}


def _quality(root: Path) -> dict[str, float | None]:
    sets = [read_json(p) for p in sorted((root / "counterfactuals").glob("*/*.summary.json"))]
    out = {}
    for key in QUALITY:
        vals = [s[key] for s in sets if s.get(key) is not None]
        out[key] = statistics.fmean(vals) if vals else None
    out["originals"] = sum(s["originals"] for s in sets)
    out["files"] = len(sets)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("first", type=Path, help="sweep with the reference generator")
    ap.add_argument("second", type=Path, help="sweep with the generator compared to it")
    args = ap.parse_args()
    a, b = _rows(args.first), _rows(args.second)
    name_a, name_b = args.first.name, args.second.name
    print(f"Paired: {name_b} − {name_a}, same samples and seeds (accuracy and agreement in points).\n")
    print("| dataset | method | k | metric | " + f"{name_a} | {name_b} | difference [95% CI] (seeds won) |")
    print("|---|---|---|---|---|---|---|")
    groups = sorted({key[:3] for key in a} & {key[:3] for key in b})
    for dataset, method, k in groups:
        for metric in ("accuracy", "agreement"):
            xa = {s: r[metric] for (d, m, kk, s), r in a.items() if (d, m, kk) == (dataset, method, k)}
            xb = {s: r[metric] for (d, m, kk, s), r in b.items() if (d, m, kk) == (dataset, method, k)}
            seeds = sorted(set(xa) & set(xb))  # means over the seeds both sweeps finished
            xa, xb = {s: xa[s] for s in seeds}, {s: xb[s] for s in seeds}
            p = paired_difference(xb, xa)
            ci = format_paired(p)
            labels = sorted({r["label"] for rows in (a, b) for key, r in rows.items() if key[:3] == (dataset, method, k)})
            print(f"| {dataset} | {' vs '.join(labels)} | {k} | {metric} | {format_mean_std(mean_std(list(xa.values())))} | "
                  f"{format_mean_std(mean_std(list(xb.values())))} | {ci} |")
    print("\nCounterfactual sets (mean over the seeds' files):\n")
    print("| sweep | files | originals | " + " | ".join(QUALITY) + " |")
    print("|---|---|---|" + "---|" * len(QUALITY))
    for root in (args.first, args.second):
        q = _quality(root)
        print(f"| {root.name} | {q['files']} | {q['originals']} | "
              + " | ".join("-" if q[k] is None else f"{q[k]:.3f}" for k in QUALITY) + " |")


if __name__ == "__main__":
    main()
