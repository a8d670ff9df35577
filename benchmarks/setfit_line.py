"""The SetFit line: the `setfit` package (contrastive fine-tuning of a sentence-transformer, then a logistic
regression head; no teacher) on exactly the k-shot samples codistill's baseline cells train on.

SetFit pins its own dependencies, so it runs in an environment of its own and never imports codistill;
codistill writes the samples first:

    # 1. in codistill's environment: the samples (the baseline's k originals per seed), validation and test
    .venv/bin/python benchmarks/setfit_line.py prepare --data ../shared/data/sst2 --k 8 16 32 64 \
        --seeds 0 1 2 --out runs/setfit_sst2
    # 2. in a SetFit environment (python -m venv .venv-setfit; pip install torch==2.13.0 setfit):
    .venv-setfit/bin/python benchmarks/setfit_line.py run --samples runs/setfit_sst2 \
        --model "$(.venv/bin/python -c 'from codistill.models import resolve_model_path; print(resolve_model_path("minilm"))')"

`run` appends one JSON line per (k, seed) to ``results.jsonl`` in the samples folder and skips the pairs
already there, so an interrupted run resumes. SetFit's published recipe: 20 pair iterations per example,
one epoch, batch 16, body lr 2e-5, a logistic-regression head.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path


def write_rows(path: Path, texts, labels) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))


def read_rows(path: Path) -> tuple[list[str], list[int]]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [int(r["label"]) for r in rows]


def prepare(args) -> None:
    from codistill.data import load_dataset, sample_from

    dataset = load_dataset(args.data)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("validation", "test"):
        rows = dataset.split(split)
        write_rows(out / f"{split}.csv", rows.texts, rows.labels)
    for k in args.k:
        for seed in args.seeds:
            sample = sample_from(dataset, k, seed)
            write_rows(out / f"train_k{k}_s{seed}.csv", sample.texts, sample.labels)
    (out / "dataset.json").write_text(json.dumps({"data": args.data, "name": dataset.name,
                                                  "label_names": dataset.label_names, "k": args.k,
                                                  "seeds": args.seeds}, indent=1))
    print(f"wrote {len(args.k) * len(args.seeds)} samples, validation and test of {dataset.name} to {out}")


def run(args) -> None:
    import numpy as np
    import torch
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from sklearn.metrics import f1_score

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = Path(args.samples)
    meta = json.loads((folder / "dataset.json").read_text())
    results = folder / "results.jsonl"
    done = set()
    if results.is_file():
        done = {(r["k"], r["seed"]) for r in map(json.loads, results.read_text().splitlines())}
    evals = {split: read_rows(folder / f"{split}.csv") for split in ("validation", "test")}
    for k in meta["k"]:
        for seed in meta["seeds"]:
            if (k, seed) in done:
                continue
            texts, labels = read_rows(folder / f"train_k{k}_s{seed}.csv")
            model = SetFitModel.from_pretrained(args.model)
            targs = TrainingArguments(num_iterations=args.iterations, num_epochs=1, batch_size=16,
                                      body_learning_rate=2e-5, seed=seed, show_progress_bar=False,
                                      output_dir=str(folder / "checkpoints"), save_strategy="no")
            trainer = Trainer(model=model, args=targs,
                              train_dataset=Dataset.from_dict({"text": texts, "label": labels}))
            start = time.perf_counter()
            trainer.train()
            seconds = time.perf_counter() - start
            head = model.model_head
            row = {"k": k, "seed": seed, "model": args.model, "iterations": args.iterations,
                   "train_seconds": round(seconds, 1),
                   "parameters": sum(p.numel() for p in model.model_body.parameters())
                   + int(head.coef_.size + head.intercept_.size)}
            for split, (eval_texts, eval_labels) in evals.items():
                pred = np.asarray(model.predict(eval_texts, batch_size=64)).astype(int)
                row[f"{split}_accuracy"] = float((pred == np.asarray(eval_labels)).mean())
                row[f"{split}_macro_f1"] = float(f1_score(eval_labels, pred, average="macro"))
                row[f"{split}_n"] = len(eval_labels)
            with open(results, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"k={k} seed={seed}: test {row['test_accuracy']:.4f}, validation "
                  f"{row['validation_accuracy']:.4f} ({seconds:.0f} s)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the samples (codistill's environment)")
    p.add_argument("--data", required=True)
    p.add_argument("--k", type=int, nargs="+", default=[8, 16, 32, 64])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", required=True)
    r = sub.add_parser("run", help="train and score SetFit on them (a SetFit environment)")
    r.add_argument("--samples", required=True)
    r.add_argument("--model", required=True, help="a sentence-transformers folder or Hub name")
    r.add_argument("--iterations", type=int, default=20)
    r.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    prepare(args) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    main()
