"""Issue 12's generator table: the quality of counterfactual files, pooled over the files of one generator
(e.g. the three seeds of the demo's tweets), from rows already scored for fluency and validity.

    codistill counterfactuals --data tweets --teacher TEACHER --k 32 --seed 0 --generator edits --lm smollm2 \\
        --judge JUDGE --out runs/cfq/tweets_lm_s0.jsonl        # and seeds 1, 2; and without --lm
    python benchmarks/cf_quality_table.py "edit search=runs/cfq/tweets_plain_s*.jsonl" \\
        "LM-guided=runs/cfq/tweets_lm_s*.jsonl"

Each argument is NAME=GLOB. The rows of every file are pooled and summarized with the library's own
``quality_summary``; seconds are summed from the files' summaries.
"""

from __future__ import annotations

import argparse
import glob

from codistill.counterfactuals.metrics import quality_summary
from codistill.counterfactuals.quality import read_rows
from codistill.counterfactuals.rows import summary_path
from codistill.fileio import read_json


def _f(v, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sets", nargs="+", help="NAME=GLOB of counterfactual files")
    args = ap.parse_args()
    print("| generator | files | originals | flip rate | edited words (median) | fluency ratio median | "
          "share ≤ 1.5 | validity (judge) | distinct edits | edit kinds | s per original |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for spec in args.sets:
        name, pattern = spec.split("=", 1)
        files = sorted(glob.glob(pattern))
        if not files:
            raise SystemExit(f"{pattern}: no files")
        rows = [r for f in files for r in read_rows(f)]
        s = quality_summary(rows)
        seconds = sum(read_json(summary_path(f)).get("seconds", 0.0) for f in files)
        kinds = ", ".join(f"{k} {v}" for k, v in s["edit_kinds"].items())
        print(f"| {name} | {len(files)} | {s['originals']} | {_f(s['flip_rate'])} ({s['flipped']}) | "
              f"{_f(s['edited_words_median'], 1)} | {_f(s['fluency_ratio_median'])} | {_f(s['fluency_share_le_1_5'])} | "
              f"{_f(s['validity'])} | {_f(s['distinct_edit_share'])} | {kinds} | {seconds / len(rows):.2f} |")


if __name__ == "__main__":
    main()
