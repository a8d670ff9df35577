"""Do codistill's ONNX exports load in optimum? Loads each folder with ``ORTModelForSequenceClassification``
and ``pipeline`` and compares their class probabilities with the ones ``codistill predict`` wrote.

optimum-onnx pins transformers < 4.58, so this runs in its own environment, not codistill's:

    make optimum-venv
    .venv-optimum/bin/python benchmarks/optimum_check.py EXPORT_DIR PREDS.jsonl [EXPORT_DIR PREDS.jsonl ...]

PREDS.jsonl is ``codistill predict EXPORT_DIR --data FILE --out PREDS.jsonl`` (it holds each text and its
probabilities). Prints one JSON line per folder; exits 1 when a probability differs by more than --tolerance.
This script imports neither codistill nor anything but optimum, transformers and numpy.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def check(folder: Path, preds: Path, tolerance: float) -> dict:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline

    rows = [json.loads(line) for line in preds.read_text().splitlines() if line.strip()]
    texts = [r["text"] for r in rows]
    names = list(rows[0]["probabilities"])
    expected = np.array([[r["probabilities"][n] for n in names] for r in rows])
    model = ORTModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    direct = []
    for text in texts:  # one at a time: no padding question
        logits = model(**tokenizer([text], return_tensors="pt")).logits.detach().numpy()[0]
        direct.append(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())
    direct = np.array(direct)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer, top_k=None)
    via_pipeline = np.array([[{d["label"]: d["score"] for d in out}[n] for n in names] for out in classify(texts)])
    report = {"folder": str(folder), "rows": len(rows), "labels": names,
              "ort_model_max_abs_diff": float(np.abs(direct - expected).max()),
              "pipeline_max_abs_diff": float(np.abs(via_pipeline - expected).max()),
              "same_class": float(np.mean(via_pipeline.argmax(-1) == expected.argmax(-1)))}
    report["ok"] = max(report["ort_model_max_abs_diff"], report["pipeline_max_abs_diff"]) <= tolerance
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+", help="EXPORT_DIR PREDS.jsonl, repeated")
    ap.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed probability difference")
    args = ap.parse_args()
    if len(args.pairs) % 2:
        ap.error("give EXPORT_DIR PREDS.jsonl pairs")
    ok = True
    for folder, preds in zip(args.pairs[::2], args.pairs[1::2]):
        report = check(Path(folder), Path(preds), args.tolerance)
        ok &= report["ok"]
        print(json.dumps(report))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
