"""The ceiling a frozen encoder sets: a student's sentence embeddings (mean of the last layer over real
tokens) or its [CLS] states, frozen, with scikit-learn's logistic regression on the k-shot sample, scored on
the test split. No teacher and no fine-tuning: what the pretrained features alone give.

    python benchmarks/linear_probe.py --data ../shared/data/sst2 --layers 3 --k 16 64 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch


def embed(clf, texts, pooling: str, batch_size: int = 64) -> np.ndarray:
    from codistill.losses import masked_mean_pool

    out = []
    model = clf.model.eval()
    for start in range(0, len(texts), batch_size):
        batch = clf.tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
        with torch.no_grad():
            last = model(**batch, output_hidden_states=True).hidden_states[-1]
        out.append((last[:, 0] if pooling == "cls" else masked_mean_pool(last, batch["attention_mask"])).numpy())
    return np.concatenate(out)


def main() -> None:
    from sklearn.linear_model import LogisticRegression

    from codistill.data import load_dataset, sample_from
    from codistill.models import make_student

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True)
    ap.add_argument("--student", default="minilm")
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--k", type=int, nargs="+", default=[16, 64])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = ap.parse_args()
    dataset = load_dataset(args.data)
    test = dataset.split("test")
    clf, _ = make_student(args.student, args.layers, "pretrained", dataset.label_names)
    test_features = {p: embed(clf, test.texts, p) for p in ("mean", "cls")}
    for k in args.k:
        for seed in args.seeds:
            sample = sample_from(dataset, k, seed).as_split()
            for pooling in ("mean", "cls"):
                head = LogisticRegression(max_iter=2000).fit(embed(clf, sample.texts, pooling), sample.labels)
                print(json.dumps({"layers": args.layers, "k": k, "seed": seed, "pooling": pooling,
                                  "test_accuracy": head.score(test_features[pooling], test.labels)}))


if __name__ == "__main__":
    main()
