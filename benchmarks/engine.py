"""Benchmark of the distillation engine (issue 4): finetune / KD / LWD / TED on a few-shot budget.

    python benchmarks/engine.py --data ../shared/data/sst2 --teacher runs/teacher_sst2 --out runs/bench_engine

Trains the teacher first (``codistill teacher``'s defaults) when the folder has no model. Each cell writes
its own metrics.json, so an interrupted run resumes. Prints and writes ``summary.md`` / ``summary.json`` /
``cells.csv`` / ``accuracy_vs_k.png``: test accuracy (mean ± std over seeds) per method and k, the
teacher's accuracy, student vs teacher inference speed-up and parameter ratio, and per-step time ratios.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import torch

from codistill.config import DistillConfig, StudentConfig, TrainConfig
from codistill.data import load_dataset
from codistill.distill import distill, evaluate_split, train_teacher
from codistill.evaluate import predict_logits
from codistill.experiments import aggregate, format_mean_std, read_cells
from codistill.fileio import atomic_write_json, atomic_write_text
from codistill.models import load_classifier, make_student


def inference_seconds(clf, texts, repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time to predict ``texts`` (batch 64, eval mode)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predict_logits(clf.model, clf.tokenizer, texts, batch_size=64)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data/sst2")
    ap.add_argument("--teacher", default="runs/teacher_sst2")
    ap.add_argument("--out", default="runs/bench_engine")
    ap.add_argument("--methods", default="finetune,kd,lwd,ted")
    ap.add_argument("--ks", default="8,16,32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--student-layers", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--min-steps", type=int, default=50)
    ap.add_argument("--lr", type=float, default=5e-5)
    args = ap.parse_args()

    out = Path(args.out)
    dataset = load_dataset(args.data)
    teacher_dir = Path(args.teacher)
    if not (teacher_dir / "metrics.json").is_file():
        train_teacher(dataset, "minilm", teacher_dir)
    teacher = load_classifier(str(teacher_dir), what="teacher")
    tcfg = TrainConfig(epochs=args.epochs, min_steps=args.min_steps, lr=args.lr)
    teacher_test = evaluate_split(teacher, dataset.split("test"), dataset.num_classes, tcfg)
    print(f"teacher test accuracy {teacher_test[0]['accuracy']:.4f}")

    methods = args.methods.split(",")
    ks = [int(k) for k in args.ks.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    for k in ks:
        for seed in seeds:
            for method in methods:
                cell = out / "cells" / f"{method}_k{k}_s{seed}"
                if (cell / "metrics.json").is_file():
                    continue
                m = distill(dataset, teacher_dir, cell, k=k, seed=seed,
                            student=StudentConfig(layers=args.student_layers), method=DistillConfig(method=method),
                            train=tcfg, teacher_test=teacher_test, save_model=False)
                print(f"{method:9s} k={k:<3d} seed={seed}  acc={m['test']['accuracy']:.4f}  "
                      f"steps={m['steps']}  {m['train_seconds']:.1f}s")

    cells = read_cells(out / "cells")
    acc = aggregate(cells, ["method", "k"], lambda c: c["test"]["accuracy"])
    agree = aggregate(cells, ["method", "k"], lambda c: c["test"]["agreement"])
    step_time = aggregate(cells, ["method"], lambda c: c["train_seconds"] / c["steps"])
    cache_time = aggregate(cells, ["method"], lambda c: c["teacher_cache_seconds"])

    # speed and size: the teacher vs the student architecture on 512 test texts
    texts = dataset.split("test").texts[:512]
    torch.manual_seed(0)
    student, info = make_student("minilm", args.student_layers, "pretrained", dataset.label_names)
    t_teacher, t_student = inference_seconds(teacher, texts), inference_seconds(student, texts)
    ft_step = step_time[("finetune",)][0] if ("finetune",) in step_time else float("nan")
    summary = {
        "data": args.data, "teacher": str(teacher_dir), "teacher_test": teacher_test[0],
        "teacher_parameters": teacher.num_parameters(), "student_parameters": info["parameters"],
        "parameter_ratio": teacher.num_parameters() / info["parameters"],
        "inference_speedup": t_teacher / t_student,
        "seconds_per_step": {m[0]: v[0] for m, v in step_time.items()},
        "step_time_ratio_vs_finetune": {m[0]: v[0] / ft_step for m, v in step_time.items()},
        "teacher_cache_seconds": {m[0]: v[0] for m, v in cache_time.items()},
        "accuracy": {f"{m}@{k}": {"mean": v[0], "std": v[1], "n": v[2]} for (m, k), v in acc.items()},
        "agreement": {f"{m}@{k}": {"mean": v[0], "std": v[1], "n": v[2]} for (m, k), v in agree.items()},
        "config": {"student_layers": args.student_layers, "epochs": args.epochs, "min_steps": args.min_steps,
                   "lr": args.lr, "seeds": seeds, "threads": torch.get_num_threads()},
    }
    atomic_write_json(out / "summary.json", summary)

    lines = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(format_mean_std(acc.get((method, k), (0, 0, 0))) for k in ks) + " |")
    lines.append("")
    lines.append("Teacher–student agreement on test (%):")
    lines.append("")
    lines.append("| method | " + " | ".join(f"k={k}" for k in ks) + " |")
    lines.append("|---|" + "---|" * len(ks))
    for method in methods:
        lines.append(f"| {method} | " + " | ".join(format_mean_std(agree.get((method, k), (0, 0, 0))) for k in ks) + " |")
    table = "\n".join(lines)
    atomic_write_text(out / "summary.md", table + "\n")
    print(table)
    print(json.dumps({k: summary[k] for k in ("parameter_ratio", "inference_speedup", "step_time_ratio_vs_finetune",
                                               "teacher_cache_seconds")}, indent=2))

    with open(out / "cells.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["method", "k", "seed", "accuracy", "macro_f1", "mcc", "agreement", "steps", "train_seconds"])
        for c in cells:
            t = c["test"]
            writer.writerow([c["method"], c["k"], c["seed"], t["accuracy"], t["macro_f1"], t["mcc"], t["agreement"],
                             c["steps"], c["train_seconds"]])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for method in methods:
        means = [acc[(method, k)][0] * 100 for k in ks if (method, k) in acc]
        stds = [acc[(method, k)][1] * 100 for k in ks if (method, k) in acc]
        xs = [k for k in ks if (method, k) in acc]
        ax.plot(xs, means, marker="o", label=method)
        ax.fill_between(xs, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.15)
    ax.axhline(teacher_test[0]["accuracy"] * 100, color="gray", linestyle="--", label="teacher")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (labelled examples)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{dataset.name}: {args.student_layers}-layer student, mean ± std over {len(seeds)} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_k.png", dpi=120)


if __name__ == "__main__":
    main()
