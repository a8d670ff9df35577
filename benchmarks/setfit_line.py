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
already there for the same ``--name``, model and iterations, so an interrupted run resumes. SetFit's
published recipe: 20 pair iterations per example, one epoch, batch 16, body lr 2e-5, a logistic-regression
head.

`cut` (codistill's environment) writes a sentence-transformers folder whose encoder keeps ``--layers``
evenly spaced blocks, the cut codistill's students get, so SetFit can be measured at the student's depth:

    .venv/bin/python benchmarks/setfit_line.py cut --model minilm --layers 3 --out runs/minilm3_st
    .venv-setfit/bin/python benchmarks/setfit_line.py run --samples runs/setfit_sst2 --model runs/minilm3_st \
        --name setfit-3l
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


def cut(args) -> None:
    import shutil

    from transformers import AutoModel

    from codistill.models import resolve_model_path, shrink_layers

    source = Path(resolve_model_path(args.model))
    if not (source / "modules.json").is_file():
        raise SystemExit(f"--model {args.model}: {source} is not a sentence-transformers folder (no modules.json)")
    out = Path(args.out)
    if out.exists():
        raise SystemExit(f"--out {out}: exists; remove it first")
    weights = {"model.safetensors", "pytorch_model.bin", "config.json", "onnx", "openvino"}  # top level only
    shutil.copytree(source, out, ignore=lambda folder, names: [n for n in names if Path(folder) == source
                                                               and n in weights])
    body = AutoModel.from_pretrained(source)
    total = body.config.num_hidden_layers
    kept = shrink_layers(body, args.layers)
    body.save_pretrained(out)
    print(f"{out}: {source.name} with blocks {kept} of {total} kept "
          f"({sum(p.numel() for p in body.parameters()):,} parameters)")


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
        done = {(r.get("name", "setfit"), r["model"], r["iterations"], r["k"], r["seed"])
                for r in map(json.loads, results.read_text().splitlines())}
    evals = {split: read_rows(folder / f"{split}.csv") for split in ("validation", "test")}
    for k in meta["k"]:
        for seed in meta["seeds"]:
            if (args.name, args.model, args.iterations, k, seed) in done:
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
            row = {"name": args.name, "k": k, "seed": seed, "model": args.model, "iterations": args.iterations,
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
    r.add_argument("--name", default="setfit", help="the line's name in results.jsonl (student_compare's arm label)")
    c = sub.add_parser("cut", help="a sentence-transformers folder with fewer layers (codistill's environment)")
    c.add_argument("--model", default="minilm", help="a sentence-transformers folder or a registered name")
    c.add_argument("--layers", type=int, required=True)
    c.add_argument("--out", required=True)
    args = ap.parse_args()
    {"prepare": prepare, "run": run, "cut": cut}[args.command](args)


if __name__ == "__main__":
    main()
