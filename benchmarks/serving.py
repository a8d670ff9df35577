"""Serving benchmark (issue 14): what a distilled student costs to run, against its teacher.

    python benchmarks/serving.py --teacher mpnet=runs/teacher_mpnet --student minilm-3=runs/kd3 \
        --student minilm-6=runs/kd6 --data ../shared/data/sst2 --out benchmarks/results/serving_sst2_mpnet \
        --models runs/serving_models

Rows: the teacher (PyTorch fp32, and ONNX int8 to tell what distillation buys from what export buys) and
each student (PyTorch fp32, ONNX fp32, ONNX int8). The ONNX folders are made with ``codistill export``'s
code. For each: parameters, size on disk, latency at batch 1 (p50 / p95, one text per call, tokenization
included, as a server answering single requests pays it) and throughput at batch 64 on 1 and 2 threads,
accuracy and agreement with the teacher on the whole test split. All figures come from one run, in rounds
that visit every model in turn so that a noisy neighbour hurts all rows alike; the table gives ratios to
the teacher (PyTorch fp32). Writes serving.json, serving.csv, serving.md and serving.png.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from codistill.data import load_dataset
from codistill.evaluate import accuracy, agreement
from codistill.export import export_onnx
from codistill.fileio import atomic_write_json, atomic_write_text
from codistill.models import load_classifier
from codistill.predict import EXPORT_MANIFEST, ONNX_FILE, load_predictor


def disk_bytes(folder: Path) -> int:
    """Bytes of the weights: the safetensors / bin files, or the ONNX file(s)."""
    names = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin") or p.name.startswith(ONNX_FILE)]
    return sum(p.stat().st_size for p in names)


def named(spec: str, default: str) -> tuple[str, Path]:
    """``NAME=FOLDER`` or ``FOLDER`` -> (name, folder)."""
    name, sep, folder = spec.partition("=")
    return (name, Path(folder)) if sep else (default, Path(spec))


def parameters(folder: Path) -> int:
    """Parameters of the model (of its PyTorch original for an ONNX folder, from the export manifest)."""
    if (folder / ONNX_FILE).is_file():
        return int(json.loads((folder / EXPORT_MANIFEST).read_text())["parameters"])
    return load_classifier(str(folder)).num_parameters()


def latencies(predictor, texts: list[str]) -> list[float]:
    """Seconds per call for each text alone (batch 1)."""
    out = []
    for text in texts:
        start = time.perf_counter()
        predictor.forward([text])
        out.append(time.perf_counter() - start)
    return out


def throughput(predictor, texts: list[str], batch_size: int) -> float:
    """Texts per second predicting ``texts`` in batches of ``batch_size``."""
    start = time.perf_counter()
    predictor.logits(texts, batch_size)
    return len(texts) / (time.perf_counter() - start)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def plot(rows: list[dict], threads: list[int], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    names = [r["model"] for r in rows]
    x = np.arange(len(rows))
    width = 0.8 / len(threads)
    for ax, key, title in ((fig.add_subplot(1, 2, 1), "p50_ms", "latency at batch 1, p50 (ms, lower is better)"),
                           (fig.add_subplot(1, 2, 2), "throughput", "throughput at batch 64 (texts/s)")):
        for j, t in enumerate(threads):
            values = [r[f"{key}_t{t}"] for r in rows]
            bars = ax.bar(x + (j - (len(threads) - 1) / 2) * width, values, width, label=f"{t} thread{'s' * (t > 1)}")
            ax.bar_label(bars, fmt="%.1f" if key == "p50_ms" else "%.0f", fontsize=7)
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", required=True, help="the teacher's folder, or NAME=FOLDER to label its rows")
    ap.add_argument("--student", required=True, action="append",
                    help="a student folder written by codistill distill, or NAME=FOLDER; repeat for several")
    ap.add_argument("--data", default="../shared/data/sst2")
    ap.add_argument("--out", default="benchmarks/results/serving_sst2", help="where the tables and plot go")
    ap.add_argument("--models", default="runs/serving_models", help="where the ONNX exports go (large; not results)")
    ap.add_argument("--latency-texts", type=int, default=150, help="test texts timed one by one per round")
    ap.add_argument("--throughput-texts", type=int, default=640, help="test texts timed at batch 64 per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--max-length", type=int, default=128)
    args = ap.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tn, teacher = named(args.teacher, "teacher")
    students = [named(spec, f"student {i + 1}" if len(args.student) > 1 else "student") for i, spec in enumerate(args.student)]
    test = load_dataset(args.data)["test"]
    models = {f"{tn} (pytorch fp32)": teacher}
    exports = {}
    for name, source, int8 in [(tn, teacher, True)] + [(sn, s, q) for sn, s in students for q in (False, True)]:
        precision = "int8" if int8 else "fp32"
        folder = Path(args.models) / f"{name.replace(' ', '_')}-onnx-{precision}"
        report = export_onnx(source, folder, int8=int8, max_length=args.max_length, check_texts=test.texts[:256])
        exports[f"{name} (onnx {precision})"] = report
        print(f"exported {name} ({precision}): max |p_onnx - p_torch| = {report.max_abs_diff:.2e}, same class on "
              f"{report.agreement:.1%} of 256 test texts, {report.onnx_bytes / 2**20:.1f} MiB, {report.seconds:.0f}s")
    models[f"{tn} (onnx int8)"] = Path(exports[f"{tn} (onnx int8)"].out)
    for sn, source in students:
        models[f"{sn} (pytorch fp32)"] = source
        models[f"{sn} (onnx fp32)"] = Path(exports[f"{sn} (onnx fp32)"].out)
        models[f"{sn} (onnx int8)"] = Path(exports[f"{sn} (onnx int8)"].out)
    threads = [int(t) for t in args.threads.split(",")]
    rng = random.Random(0)
    lat_texts = rng.sample(test.texts, args.latency_texts)
    thr_texts = rng.sample(test.texts, args.throughput_texts)

    # quality: the whole test split, predictions kept for agreement with the teacher
    preds = {}
    for name, folder in models.items():
        predictor = load_predictor(folder, args.max_length, threads=max(threads))
        preds[name] = predictor.logits(test.texts, 64, progress=True).argmax(-1).tolist()
    teacher_pred = preds[f"{tn} (pytorch fp32)"]

    # speed: per thread count, rounds visiting every model in turn
    lat: dict = {(n, t): [] for n in models for t in threads}
    thr: dict = {(n, t): [] for n in models for t in threads}
    for t in threads:
        predictors = {n: load_predictor(f, args.max_length, threads=t) for n, f in models.items()}
        for n, p in predictors.items():  # warm-up: first calls allocate
            latencies(p, lat_texts[:10])
            p.logits(thr_texts[:128], 64)
        for r in range(args.rounds):
            for n, p in predictors.items():
                torch.set_num_threads(t)
                lat[(n, t)] += latencies(p, lat_texts)
                thr[(n, t)].append(throughput(p, thr_texts, 64))
            print(f"threads {t}, round {r + 1}/{args.rounds} done")

    rows = []
    for name, folder in models.items():
        row = {"model": name, "parameters": parameters(folder), "disk_mb": disk_bytes(folder) / 2**20,
               "accuracy": accuracy(test.labels, preds[name]), "agreement": agreement(preds[name], teacher_pred)}
        for t in threads:
            row[f"p50_ms_t{t}"] = 1000 * percentile(lat[(name, t)], 50)
            row[f"p95_ms_t{t}"] = 1000 * percentile(lat[(name, t)], 95)
            row[f"throughput_t{t}"] = statistics.median(thr[(name, t)])
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["size_ratio"] = base["disk_mb"] / row["disk_mb"]
        row["params_ratio"] = base["parameters"] / row["parameters"]
        for t in threads:
            row[f"speedup_b1_t{t}"] = base[f"p50_ms_t{t}"] / row[f"p50_ms_t{t}"]
            row[f"speedup_b64_t{t}"] = row[f"throughput_t{t}"] / base[f"throughput_t{t}"]

    info = {"teacher": str(teacher), "students": {n: str(f) for n, f in students}, "data": args.data, "test_rows": len(test),
            "latency_texts": args.latency_texts, "throughput_texts": args.throughput_texts, "rounds": args.rounds,
            "threads": threads, "max_length": args.max_length, "torch": torch.__version__,
            "exports": {k: {"max_abs_diff": v.max_abs_diff, "agreement": v.agreement} for k, v in exports.items()},
            "rows": rows}
    atomic_write_json(out / "serving.json", info)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "serving.csv", buf.getvalue())
    shown = ", ".join(f"{n} `{f}`" for n, f in students)
    lines = [f"Teacher ({tn}) `{teacher}`; students: {shown}; test split of `{args.data}` ({len(test):,} rows). "
             f"Latency: {args.latency_texts} test texts one at a time x {args.rounds} rounds; throughput: "
             f"{args.throughput_texts} texts at batch 64, median of {args.rounds} rounds. Ratios are to the teacher.",
             ""]
    head = ["model", "params (M)", "disk (MB)", "accuracy", "agreement"]
    for t in threads:
        head += [f"b1 p50 / p95 ms ({t}t)", f"b1 speed-up ({t}t)", f"b64 texts/s ({t}t)", f"b64 speed-up ({t}t)"]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], f"{r['parameters'] / 1e6:.1f} ({r['params_ratio']:.2f}x)",
                 f"{r['disk_mb']:.1f} ({r['size_ratio']:.1f}x)", f"{100 * r['accuracy']:.2f}", f"{100 * r['agreement']:.2f}"]
        for t in threads:
            cells += [f"{r[f'p50_ms_t{t}']:.2f} / {r[f'p95_ms_t{t}']:.2f}", f"{r[f'speedup_b1_t{t}']:.1f}x",
                      f"{r[f'throughput_t{t}']:.0f}", f"{r[f'speedup_b64_t{t}']:.1f}x"]
        lines.append("| " + " | ".join(cells) + " |")
    atomic_write_text(out / "serving.md", "\n".join(lines) + "\n")
    plot(rows, threads, out / "serving.png")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
