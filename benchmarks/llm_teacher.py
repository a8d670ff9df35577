"""An LLM as the teacher, in numbers: the LLM's accuracy zero-shot and with in-context examples, the students a
sweep distilled from it, and what each side costs: LLM requests, tokens and seconds to build a student, against
the student's latency per text (PyTorch fp32 and ONNX int8) and the LLM's, on the same CPU.

    python benchmarks/llm_teacher.py --sweep runs/llm_sst2_qwen --examples 0,4 \
        --out benchmarks/results/llm_sst2_qwen

The sweep (e.g. ``benchmarks/llm_teacher/sst2_qwen.yaml``) names the endpoint teacher, its options and the
evaluation subset (``max_eval``); the teacher is evaluated here on the same test subset with each number of
in-context examples (the first rows of seed ``--seed``'s sample, as a run of that seed would show it; the
endpoint must be serving). ``--teacher-only CONFIG`` evaluates only the teacher, from the sweep's config file
(the sweep need not have run; answers are cached in its folder), and puts its rows into an existing
``OUT/llm_teacher.json`` in place of those with the same number of examples:

    python benchmarks/llm_teacher.py --teacher-only benchmarks/llm_teacher/sst2_qwen.yaml --examples 0,4 \
        --out benchmarks/results/llm_sst2_qwen
 Zero-shot answers come from the sweep's cache when the sweep asked them. The
student timed is the sweep's kept student (``save_models``) of ``--time-cell`` (label, k, seed). Writes
llm_teacher.json and llm_teacher.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from codistill.config import RunConfig
from codistill.experiments import SweepConfig, build_report
from codistill.experiments.report import current_entry
from codistill.experiments.runner import load_entry
from codistill.fileio import atomic_write_json, atomic_write_text
from codistill.teachers import describe_teacher, evaluate_teacher, in_context_rows, load_teacher

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving import latencies, percentile  # noqa: E402  (the serving benchmark's timing, one rule)


def teacher_accuracy(entry, root: Path, dataset, examples: int, seed: int, k: int) -> dict:
    """The endpoint teacher with ``examples`` in-context examples on the test subset: accuracy and cost (its
    answers cached with the sweep's at ``root``)."""
    options = {**entry.llm_options(root), "examples": examples}
    run = RunConfig(teacher=entry.teacher, k=k, seed=seed, llm_teacher=options)
    teacher = load_teacher(entry.teacher, dataset.label_names, llm_options=options,
                           examples=in_context_rows(dataset, run), seed=seed)
    start = time.perf_counter()
    metrics, _ = evaluate_teacher(teacher, dataset.split("test"), dataset.num_classes)
    info = describe_teacher(teacher)
    return {"examples": examples, "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
            "n": metrics["n"], "wall_seconds": time.perf_counter() - start,
            **{key: info[key] for key in ("requests", "cache_hits", "prompt_tokens", "completion_tokens", "seconds",
                                          "estimate", "unmatched_mass")}}


def student_latency(folder: Path, texts: list[str], max_length: int, threads: int) -> dict:
    """Batch-1 latency (p50, ms) of a kept student in PyTorch fp32 and exported to ONNX int8."""
    from codistill.export import export_onnx
    from codistill.predict import load_predictor

    out = {}
    int8 = folder.parent / (folder.name + "-onnx-int8")
    if not (int8 / "model.onnx").is_file():
        export_onnx(folder, int8, int8=True, max_length=max_length, check_texts=texts[:64])
    for name, path in (("pytorch fp32", folder), ("onnx int8", int8)):
        predictor = load_predictor(path, max_length, threads=threads)
        latencies(predictor, texts[:10])  # warm-up
        out[name] = percentile(latencies(predictor, texts), 50) * 1000
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", help="the sweep folder (its sweep.json names teacher and data)")
    p.add_argument("--teacher-only", metavar="CONFIG",
                   help="the sweep's config file: evaluate the teacher alone and update OUT/llm_teacher.json")
    p.add_argument("--examples", default="0,4", help="in-context example counts to evaluate, comma-separated")
    p.add_argument("--seed", type=int, default=0, help="whose sample the in-context examples come from")
    p.add_argument("--time-cell", default="kd+cod,64,0", help="LABEL,K,SEED of the kept student to time")
    p.add_argument("--latency-texts", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--traffic", type=int, default=10_000, help="texts a day, for the yearly LLM calls saved")
    p.add_argument("--out", required=True)
    a = p.parse_args()
    if a.teacher_only:
        return teacher_only(a)
    if not a.sweep:
        p.error("--sweep or --teacher-only is required")
    root = Path(a.sweep)
    entry_cfg = current_entry(root)
    cfg = SweepConfig(**entry_cfg["config"])
    entry = cfg.datasets[0]
    dataset = load_entry(entry)
    summary = build_report(root)
    ds_name = entry.name or dataset.name
    ds = summary["datasets"][ds_name]
    k_max = max(cfg.k)
    teachers = [teacher_accuracy(entry, root, dataset, int(n), a.seed, k_max) for n in a.examples.split(",")]
    # the LLM's own latency per text: its seconds per request when it answered the test subset uncached
    labelled = [e for e in ds.get("endpoint_labelling", []) if e["what"].startswith("test split") and e.get("requests")]
    llm_seconds = [e["seconds"] / e["requests"] for e in labelled]
    llm_seconds += [t["seconds"] / t["requests"] for t in teachers if t["requests"]]
    label, k, seed = a.time_cell.split(",")
    cell = next(f for f in entry_cfg["cells"] if f"/{label}/k{k}_s{seed}-" in f)
    test = dataset.split("test").texts
    latency = student_latency(root / cell, test[: a.latency_texts], cfg.train.get("max_length", 128), a.threads)
    llm_ms = statistics.median(llm_seconds) * 1000 if llm_seconds else None
    cost = ds.get("endpoint_cost", {})
    cf_files = []
    for f in ds.get("counterfactuals", []):
        flipped = round(f["flip_rate"] * f["originals"])
        requests = (f.get("teacher_cost") or {}).get("requests")
        rows = [json.loads(line) for line in (root / "counterfactuals" / ds_name /
                                               f["file"].replace(".summary.json", ".jsonl")).read_text().splitlines()]
        judged = sum(c["probs"] is not None for r in rows for c in r["candidates"])  # candidates the LLM judged
        agreed = sum(c["reason"] == "flipped" for r in rows for c in r["candidates"])
        cf_files.append({"file": f["file"], "originals": f["originals"], "flipped": flipped, "requests": requests,
                         "requests_per_counterfactual": requests / flipped if requests is not None and flipped else None,
                         "judge_texts_per_original": judged / len(rows) if rows else None,
                         "proxy_agreement": (f.get("proxy") or {}).get("agreement"),
                         "judge_agreed": agreed / judged if judged else None,
                         "seconds": (f.get("teacher_cost") or {}).get("seconds")})
    # what one student costs built alone: KD asks the LLM about its k rows; CoD about its k/2 originals, the
    # proxy's rows and the candidates judged (an upper bound: the proxy's rows may include originals)
    judged = [f["judge_texts_per_original"] for f in cf_files if f["judge_texts_per_original"] is not None]
    proxy_rows = next(((f.get("proxy") or {}).get("rows", 0) for f in ds.get("counterfactuals", [])), 0)
    students = []
    for lab in ds["labels"]:
        for kk in ds["ks"]:
            acc = ds["accuracy"].get(lab, {}).get(str(kk))
            agr = ds["agreement"].get(lab, {}).get(str(kk))
            if not acc:
                continue
            texts = cost.get("teacher_texts", {}).get(lab, {}).get(str(kk))
            build = (proxy_rows + kk // 2 * (1 + statistics.mean(judged)) if "+cod" in lab and judged else kk)
            students.append({"label": lab, "k": kk, "accuracy": acc, "agreement": agr, "teacher_texts": texts,
                             "build_requests": build,
                             "of_teacher": acc["mean"] / ds["teacher_accuracy"] if ds["teacher_accuracy"] else None})
    result = {"sweep": str(root), "config_hash": summary["config_hash"], "teacher": entry.teacher,
              "test_rows": ds["test_rows"], "teachers": teachers, "students": students,
              "llm_ms_per_text": llm_ms, "student_ms_per_text": latency, "time_cell": a.time_cell,
              "counterfactual_files": cf_files,
              "traffic_per_day": a.traffic}
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "llm_teacher.json", result)
    atomic_write_text(out / "llm_teacher.md", render(result))
    print(render(result))


def teacher_only(a) -> None:
    """The teacher rows alone, from the sweep's config file, merged into an existing result by example count."""
    cfg = SweepConfig.from_yaml(a.teacher_only)
    out = Path(a.out) / "llm_teacher.json"
    if not out.is_file():
        raise SystemExit(f"{out}: no result to update (run with --sweep first)")
    result = json.loads(out.read_text(encoding="utf-8"))
    entry = cfg.datasets[0]
    dataset = load_entry(entry)
    if [len(dataset.split("test"))] != result["test_rows"]:
        raise SystemExit(f"{a.teacher_only}: its test subset has {len(dataset.split('test'))} rows, "
                         f"{out} was measured on {result['test_rows']}")
    fresh = [teacher_accuracy(entry, Path(cfg.out), dataset, int(n), a.seed, max(cfg.k)) for n in a.examples.split(",")]
    counts = {t["examples"] for t in fresh}
    result["teachers"] = sorted([t for t in result["teachers"] if t["examples"] not in counts] + fresh,
                                key=lambda t: t["examples"])
    atomic_write_json(out, result)
    atomic_write_text(out.with_suffix(".md"), render(result))
    print(render(result))


def render(r: dict) -> str:
    md = [f"# {r['teacher']} as the teacher ({r['sweep']}, config `{r['config_hash'][:12]}`)", "",
          f"Test subset: {', '.join(str(n) for n in r['test_rows'])} sentences (stratified, seed 'eval-test').", "",
          "| teacher | accuracy | macro-F1 | requests sent | prompt tokens | seconds |", "|---|---|---|---|---|---|"]
    for t in r["teachers"]:
        md.append(f"| {t['examples']} in-context examples | {t['accuracy'] * 100:.1f} | {t['macro_f1'] * 100:.1f} | "
                  f"{t['requests']} (+{t['cache_hits']} cached) | {t['prompt_tokens']:,} | {t['seconds']:.0f} |")
    md += ["", "| student | k | accuracy | agreement | of the teacher's accuracy | LLM texts it trains on | "
           "LLM requests to build it alone |", "|---|---|---|---|---|---|---|"]
    for s in r["students"]:
        agr = s["agreement"]
        md.append(f"| {s['label']} | {s['k']} | {s['accuracy']['mean'] * 100:.1f} ± {s['accuracy']['std'] * 100:.1f} | "
                  + (f"{agr['mean'] * 100:.1f} ± {agr['std'] * 100:.1f}" if agr else "-")
                  + f" | {s['of_teacher'] * 100:.0f}% | {s['teacher_texts']:.0f} | {s['build_requests']:.0f} |")
    lat = r["student_ms_per_text"]
    md += ["", f"Latency per text, batch 1, same CPU: the LLM {r['llm_ms_per_text']:.0f} ms (seconds per request "
           f"while it labelled uncached texts); the student ({r['time_cell']}) "
           + ", ".join(f"{name} {ms:.1f} ms ({r['llm_ms_per_text'] / ms:,.0f}× faster)" for name, ms in lat.items())
           + ".", "",
           "| counterfactual file | originals | flipped | LLM requests (proxy fit included) | per counterfactual | "
           "candidates judged per original | share the LLM agreed flip | proxy agreement on its own rows | seconds |",
           "|---|---|---|---|---|---|---|---|---|"]
    for f in r["counterfactual_files"]:
        md.append(f"| {f['file'].replace('.summary.json', '')} | {f['originals']} | {f['flipped']} | {f['requests']} | "
                  + " | ".join("-" if f[key] is None else f"{f[key]:.{d}f}" for key, d in
                               (("requests_per_counterfactual", 1), ("judge_texts_per_original", 1),
                                ("judge_agreed", 2), ("proxy_agreement", 2), ("seconds", 0))) + " |")
    md += ["",
           f"At {r['traffic_per_day']:,} texts a day, the LLM would answer {r['traffic_per_day'] * 365:,} requests a "
           "year; a student needs the requests above once."]
    return "\n".join(md) + "\n"


if __name__ == "__main__":
    main()
