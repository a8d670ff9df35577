"""Benchmark of the distillation engine (issue 4): finetune / KD / LWD / TED on a few-shot budget.

    python benchmarks/engine.py --data ../shared/data/sst2 --teacher runs/teacher_sst2 --out runs/bench_engine

A sweep (``codistill.experiments``: the same grid, artifacts keyed by config, resume and report as
``codistill sweep``) without CoD, plus what a grid does not measure: student vs teacher inference speed-up
and parameter ratio, and seconds per training step per method. Writes the sweep's report and
``speed.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from codistill.evaluate import predict_logits
from codistill.experiments import SweepConfig, build_report, run_sweep
from codistill.experiments.runner import load_entry
from codistill.experiments.stats import aggregate
from codistill.fileio import atomic_write_json
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
    ap.add_argument("--teacher", default=None, help="a teacher folder (default: train one in the sweep folder)")
    ap.add_argument("--out", default="runs/bench_engine")
    ap.add_argument("--methods", default="finetune,kd,lwd,ted")
    ap.add_argument("--ks", default="8,16,32,64")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--student-layers", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--min-steps", type=int, default=50)
    ap.add_argument("--lr", type=float, default=5e-5)
    args = ap.parse_args()

    cfg = SweepConfig(out=args.out, datasets=[{"data": args.data, "teacher": args.teacher}],
                      methods=args.methods.split(","), cod=["none"], k=[int(k) for k in args.ks.split(",")],
                      seeds=[int(s) for s in args.seeds.split(",")], student={"layers": args.student_layers},
                      train={"epochs": args.epochs, "min_steps": args.min_steps, "lr": args.lr})
    run_sweep(cfg)
    summary = build_report(args.out)
    print(Path(args.out, "report.md").read_text())

    entry = json.loads(Path(args.out, "sweep.json").read_text())["history"][-1]
    cells = [json.loads(Path(args.out, f, "metrics.json").read_text()) for f in entry["cells"]]
    step_time = aggregate(cells, ["method"], lambda c: c["train_seconds"] / c["steps"])
    dataset = load_entry(cfg.datasets[0])
    teacher = load_classifier(next(iter(entry["artifacts"].values()))["teacher"], what="teacher")
    texts = dataset.split("test").texts[:512]
    torch.manual_seed(0)
    student, info = make_student("minilm", args.student_layers, "pretrained", dataset.label_names)
    t_teacher, t_student = inference_seconds(teacher, texts), inference_seconds(student, texts)
    ft = step_time.get(("finetune",), (float("nan"),))[0]
    speed = {"teacher_parameters": teacher.num_parameters(), "student_parameters": info["parameters"],
             "parameter_ratio": teacher.num_parameters() / info["parameters"],
             "inference_speedup": t_teacher / t_student,
             "seconds_per_step": {m[0]: v[0] for m, v in step_time.items()},
             "step_time_ratio_vs_finetune": {m[0]: v[0] / ft for m, v in step_time.items()},
             "threads": torch.get_num_threads(), "config_hash": summary["config_hash"]}
    atomic_write_json(Path(args.out) / "speed.json", speed)
    print(json.dumps(speed, indent=2))


if __name__ == "__main__":
    main()
