"""Benchmark of the offline edit-search generator (issue 5): flip rate, edit size and speed.

    python benchmarks/counterfactuals.py --data ../shared/data/sst2 --teacher runs/teacher_sst2 --originals 64

Writes the counterfactual file and its summary under --out and prints the figures recorded in
benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from codistill.counterfactuals.edits import EditSearchConfig, EditSearchGenerator
from codistill.counterfactuals.generate import generate_counterfactuals
from codistill.counterfactuals.verify import Verifier
from codistill.data import load_dataset
from codistill.models import load_classifier


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/sst2")
    ap.add_argument("--teacher", default="runs/teacher_sst2")
    ap.add_argument("--originals", type=int, default=64, help="originals = k/2")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--max-edits", type=int, default=3)
    ap.add_argument("--out", default="runs/bench_cf")
    args = ap.parse_args()
    dataset = load_dataset(args.data)
    verifier = Verifier.from_classifier(load_classifier(args.teacher, what="teacher"))
    for seed in (int(s) for s in args.seeds.split(",")):
        out = Path(args.out) / f"edits_k{2 * args.originals}_s{seed}.jsonl"
        generator = EditSearchGenerator(EditSearchConfig(max_edits=args.max_edits))
        s = generate_counterfactuals(dataset, verifier, generator, out, k=2 * args.originals, seed=seed)
        keys = ("originals", "flip_rate", "edited_words_mean", "edited_words_median", "relative_edit_mean",
                "length_ratio_mean", "mean_target_prob", "unchanged_share", "duplicate_share", "seconds",
                "counterfactuals_per_second", "texts_scored")
        print(json.dumps({k: s[k] for k in keys}, indent=2))
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        for r in rows[:8]:
            print(f"  [{r['label_name']} -> {r['target_name']}{'' if r['flipped'] else ', NOT flipped'}] "
                  f"{r['text']}\n      => {r['counterfactual']}")


if __name__ == "__main__":
    main()
