"""Which CoD recipe to adopt: every CoD arm of one or more sweep folders against the KD arm with the same
options, paired per seed and chosen on the validation split (test only confirms, with ``--test``).

    python benchmarks/cod_recipe.py runs/paper_sst2_default [more folders] \
        --out benchmarks/results/cod_recipe_sst2 [--test]

An arm is the finished cells (``cells/**/metrics.json``) that differ only in k and seed: the same run options
(``cell_recipe["run"]`` without k, seed and train.seed), dataset, data, teacher key and, for CoD, counterfactual
generator and on_failure. It is named by its label (``kd``, ``kd+cod``, ``kd+cod-augment``) and the options in
which it differs from its dataset's reference arm (the KD arm with the most cells). A CoD arm is paired with
the KD arm of the same options but cod, cf and generator (``augment`` also with that KD arm at 2k: a
counterfactual priced against a human label). Writes cod_recipe.json and cod_recipe.md in ``--out``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import statistics
import sys
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from codistill.config import CounterfactualUse
from codistill.experiments.artifacts import read_json
from codistill.experiments.grid import method_label
from codistill.experiments.report import folder_dataset
from codistill.experiments.stats import format_paired, mean_std, paired_difference
from codistill.fileio import atomic_write_json, atomic_write_text

MIN_SEEDS = 3  # paired seeds a candidate needs at every k
LABEL_KEYS = ("cod", "distill.method")  # what an arm's label already says
UNPAIRED_KEYS = ("cod", "cf", "counterfactuals", "generator", "allow_empty_counterfactuals")  # what a CoD arm
# may differ in from its KD arm (options that only CoD cells read)
COUNTS = (("n_counterfactuals", "used"), ("counterfactuals_skipped", "skipped"),
          ("counterfactuals_far_from_boundary", "far from the boundary"),
          ("counterfactuals_rebalanced", "rebalanced away"))
RULE = (f"Choice rule: among the CoD arms paired with a KD arm that have at least {MIN_SEEDS} paired seeds at every "
        "k of the reference KD arm that a CoD arm was run at, the winner has the largest *worst* paired validation "
        "mean over those k (never below KD at any budget), ties broken by the mean over k. Augment arms are ranked "
        "against KD at the same k; test is never used for choosing.")


def fail(message: str) -> None:
    print(f"cod_recipe.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def read_folder(folder: Path) -> list[dict[str, Any]]:
    """The finished cells of a sweep folder; one line and exit 2 for a folder missing or without any."""
    if not folder.is_dir():
        fail(f"{folder}: no such folder")
    cells = []
    for path in sorted(folder.glob("cells/**/metrics.json")):
        # named by the sweep's name of its dataset (its cell folder), as the sweep's report names it
        cell = {**read_json(path), "dataset": folder_dataset(str(path.parent.relative_to(folder)))}
        if not cell.get("cell_recipe") or not cell.get("validation"):
            fail(f"{path}: no cell_recipe or validation scores (a cell from an older codistill?)")
        cells.append(cell)
    if not cells:
        fail(f"{folder}: no finished cell (cells/**/metrics.json)")
    return cells


def signature(cell: dict[str, Any]) -> dict[str, Any]:
    """What makes a cell's arm: its run options but k and seeds, its data and teacher and, for CoD, its
    counterfactual file's generator and on_failure."""
    recipe = cell["cell_recipe"]
    run = {key: v for key, v in recipe["run"].items() if key not in ("k", "seed")}
    run["train"] = {key: v for key, v in run["train"].items() if key != "seed"}
    file = (recipe.get("counterfactuals") or {}).get("file")
    made = {"counterfactuals": {"generator": file["generator"], "on_failure": file["on_failure"]}} if file else {}
    return {"dataset": cell["dataset"], "data": recipe["data"], "teacher": recipe["teacher"], **run, **made}


def _key(d: dict[str, Any]) -> str:
    return json.dumps(d, sort_keys=True)


def is_baseline(arm: dict[str, Any]) -> bool:
    return arm["signature"]["cod"] in (None, "none")


def group_arms(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cells with the same signature form an arm (a cell found in two folders counts once)."""
    arms: dict[str, dict[str, Any]] = {}
    seen = set()
    for cell in cells:
        if cell.get("cell_key") in seen:
            continue
        seen.add(cell.get("cell_key"))
        sig = signature(cell)
        arms.setdefault(_key(sig), {"signature": sig, "method": cell["method"], "cells": []})["cells"].append(cell)
    return list(arms.values())


def most_cells(arms: list[dict[str, Any]]) -> dict[str, Any]:
    """The arm with the most cells; ties go to the first signature in sorted order."""
    return min(arms, key=lambda a: (-len(a["cells"]), _key(a["signature"])))


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict of dotted keys (``{"cf": {"hard_labels": False}}`` -> ``cf.hard_labels``)."""
    out = {}
    for key, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = v
    return out


def differences(sig: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """The leaf options in which ``sig`` differs from ``reference`` (one the reference lacks counts), but those
    its label names."""
    ref = flatten(reference)
    return {key: v for key, v in flatten(sig).items() if key not in LABEL_KEYS and (key not in ref or ref[key] != v)}


def _short(v: Any) -> str:
    return v[:12] if isinstance(v, str) and len(v) > 24 else str(v)  # a hash (teacher key) by its prefix


def name_arms(arms: list[dict[str, Any]]) -> dict[str, Any]:
    """Name one dataset's arms by their label and :func:`differences` from the reference arm (the KD arm with the
    most cells), completed for CoD options by their defaults and the generator of the CoD arm with the most
    cells; returns the reference arm."""
    reference = most_cells([a for a in arms if is_baseline(a)] or arms)
    naming = {**reference["signature"], "cf": asdict(CounterfactualUse())}
    cod_arms = [a for a in arms if not is_baseline(a)]
    if cod_arms:
        naming["counterfactuals"] = most_cells(cod_arms)["signature"].get("counterfactuals")
    for arm in arms:
        arm["label"] = method_label(arm["method"], arm["signature"]["cod"])
        arm["differences"] = differences(arm["signature"], naming)
        options = ", ".join(f"{key}={_short(v)}" for key, v in arm["differences"].items())
        arm["name"] = arm["label"] + (f" [{options}]" if options else "")
    names = Counter(a["name"] for a in arms)
    for arm in arms:  # the same name only where a difference hides in a shortened value
        if names[arm["name"]] > 1:
            arm["name"] += f" #{hashlib.sha256(_key(arm['signature']).encode()).hexdigest()[:6]}"
    return reference


def accuracies(arm: dict[str, Any], split: str) -> dict[int, dict[int, float]]:
    """k -> seed -> accuracy on ``split``."""
    out: dict[int, dict[int, float]] = {}
    for cell in arm["cells"]:
        out.setdefault(cell["k"], {})[cell["seed"]] = cell[split]["accuracy"]
    return out


def pair(arms: list[dict[str, Any]]) -> None:
    """Set each CoD arm's ``baseline``: the KD arm with its options but cod, cf and generator (``None``: none)."""
    def options(arm: dict[str, Any]) -> str:
        return _key({key: v for key, v in arm["signature"].items() if key not in UNPAIRED_KEYS})

    kd = {options(a): a for a in arms if is_baseline(a)}
    for arm in arms:
        arm["baseline"] = None if is_baseline(arm) else kd.get(options(arm))


def paired_rows(arms: list[dict[str, Any]], split: str) -> list[dict[str, Any]]:
    """CoD − KD per paired CoD arm and k on ``split``, against its KD arm at k (and at 2k for ``augment``)."""
    rows = []
    for arm in arms:
        if arm["baseline"] is None:
            continue
        a, b = accuracies(arm, split), accuracies(arm["baseline"], split)
        for factor in (1, 2) if arm["signature"]["cod"] == "augment" else (1,):
            by_k = {k: paired_difference(a[k], b[factor * k]) for k in sorted(a)
                    if factor * k in b and set(a[k]) & set(b[factor * k])}
            rows.append({"arm": arm["name"], "baseline": arm["baseline"]["name"], "factor": factor, "by_k": by_k})
    return rows


def choose(rows: list[dict[str, Any]], ks: list[int]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ranking of the candidates by :data:`RULE` (winner first) and the arms left out, with why."""
    ranking, excluded = [], []
    for row in rows:
        if row["factor"] != 1:
            continue
        seeds = {k: row["by_k"][k]["n"] if k in row["by_k"] else 0 for k in ks}
        short = ", ".join(f"{k} ({n})" for k, n in seeds.items() if n < MIN_SEEDS)
        if short or not ks:
            excluded.append({"arm": row["arm"], "reason": f"fewer than {MIN_SEEDS} paired seeds at k = {short}"
                             if short else "no k at which the reference KD arm and a CoD arm both ran"})
            continue
        means = [row["by_k"][k]["mean"] for k in ks]
        ranking.append({"arm": row["arm"], "worst": min(means), "mean": statistics.fmean(means)})
    ranking.sort(key=lambda r: (-r["worst"], -r["mean"], r["arm"]))
    return ranking, excluded


def summarize(folders: list[Path], test: bool) -> dict[str, Any]:
    cells = [c for folder in folders for c in read_folder(folder)]
    arms = group_arms(cells)
    result: dict[str, Any] = {"folders": [str(f) for f in folders], "cells": sum(len(a["cells"]) for a in arms),
                              "rule": RULE, "test": test, "datasets": {}}
    for dataset in sorted({a["signature"]["dataset"] for a in arms}):
        mine = [a for a in arms if a["signature"]["dataset"] == dataset]
        reference = name_arms(mine)
        mine.sort(key=lambda a: (not is_baseline(a), a["name"]))
        pair(mine)
        paired = {split: paired_rows(mine, split) for split in ("validation", "test") if split == "validation" or test}
        run_ks = {c["k"] for a in mine if not is_baseline(a) for c in a["cells"]}
        ks = sorted({c["k"] for c in reference["cells"]} & run_ks) if is_baseline(reference) else []
        ranking, excluded = choose(paired["validation"], ks)
        excluded += [{"arm": a["name"], "reason": "no KD arm with the same options (unpaired)"}
                     for a in mine if not is_baseline(a) and a["baseline"] is None]
        result["datasets"][dataset] = {
            "reference": reference["name"], "ks": ks, "paired": paired, "ranking": ranking, "excluded": excluded,
            "winner": ranking[0]["arm"] if ranking else None,
            "arms": [{"name": a["name"], "label": a["label"], "differences": a["differences"],
                      "baseline": a["baseline"] and a["baseline"]["name"], "cells": len(a["cells"]),
                      **{split: {k: dict(zip(("mean", "std", "n"), mean_std(list(v.values()))))
                                 for k, v in sorted(accuracies(a, split).items())} for split in paired},
                      "counterfactuals": {k: {key: mean_std([c.get(key) for c in a["cells"] if c["k"] == k])[0]
                                              for key, _ in COUNTS}
                                          for k in sorted({c["k"] for c in a["cells"]})} if not is_baseline(a) else {},
                      "train_seconds": {k: mean_std([c["train_seconds"] for c in a["cells"] if c["k"] == k])[0]
                                        for k in sorted({c["k"] for c in a["cells"]})},
                      "signature": a["signature"]} for a in mine]}
    return result


def _points(p: dict[str, Any]) -> str:
    return format_paired(p, digits=2)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in rows)]


def _paired_table(rows: list[dict[str, Any]], ks: list[int]) -> list[str]:
    return _table(["arm", "against", *(f"k={k}" for k in ks)],
                  [[r["arm"], r["baseline"] + (" at 2k" if r["factor"] == 2 else ""),
                    *(_points(r["by_k"][k]) if k in r["by_k"] else "-" for k in ks)] for r in rows])


def _accuracy_table(arms: list[dict[str, Any]], split: str, ks: list[int]) -> list[str]:
    return _table(["arm", "cells", *(f"k={k}" for k in ks)],
                  [[a["name"], str(a["cells"]), *(f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f} ({s['n']})"
                                                  if (s := a[split].get(k)) else "-" for k in ks)] for a in arms])


def render(result: dict[str, Any]) -> str:
    md = ["# CoD recipes against KD, chosen on validation", "",
          f"Folders: {', '.join(result['folders'])} ({result['cells']} finished cells).", "", result["rule"]]
    for dataset, ds in result["datasets"].items():
        arms = ds["arms"]
        ks = sorted({k for a in arms for k in a["validation"]})
        md += ["", f"## {dataset}", "",
               (f"Reference arm: `{ds['reference']}`. Every arm is named by its label, then the options in which it "
                "differs from the reference arm (CoD options: from their defaults and the generator of the CoD arm "
                "with the most cells)."), "", "### Validation accuracy (%), mean ± std (seeds)", ""]
        md += _accuracy_table(arms, "validation", ks)
        md += ["", "### CoD − KD on validation (points): mean [95% CI] (seeds won/paired)", ""]
        md += _paired_table(ds["paired"]["validation"], ks)
        md += ["", f"### Choice at k = {', '.join(map(str, ds['ks'])) or '(none)'}", ""]
        md += _table(["rank", "arm", "worst paired mean over k", "mean over k"],
                     [[str(i), r["arm"], f"{100 * r['worst']:+.2f}", f"{100 * r['mean']:+.2f}"]
                      for i, r in enumerate(ds["ranking"], 1)])
        md += [""] + [f"- not a candidate: {e['arm']}: {e['reason']}" for e in ds["excluded"]]
        md += [""] * bool(ds["excluded"]) + [f"Winner: **{ds['winner']}**." if ds["winner"] else "No candidate: no winner."]
        cod = [a for a in arms if a["counterfactuals"]]
        md += ["", f"### Counterfactuals per cell (mean): {' / '.join(name for _, name in COUNTS)}", ""]
        md += _table(["arm", *(f"k={k}" for k in ks)],
                     [[a["name"], *(" / ".join(f"{c[key]:.1f}" for key, _ in COUNTS)
                                    if (c := a["counterfactuals"].get(k)) else "-" for k in ks)] for a in cod])
        md += ["", "### Training seconds per cell (mean)", ""]
        md += _table(["arm", *(f"k={k}" for k in ks)],
                     [[a["name"], *(f"{a['train_seconds'][k]:.0f}" if k in a["train_seconds"] else "-" for k in ks)]
                      for a in arms])
        if "test" in ds["paired"]:
            md += ["", ("### Confirmation on test, never used for choosing: CoD − KD (points), mean [95% CI] "
                        "(seeds won/paired)"), ""]
            md += _paired_table(ds["paired"]["test"], ks)
            md += ["", "### Test accuracy (%), mean ± std (seeds)", ""] + _accuracy_table(arms, "test", ks)
    return "\n".join(md) + "\n"


def finite(obj: Any) -> Any:
    """NaN (a CI from one seed, a mean of none) as null, so the JSON is valid."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite(v) for v in obj]
    return obj


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path, help="sweep folders (their cells/**/metrics.json)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--test", action="store_true", help="also the paired table on test, as the confirmation")
    a = p.parse_args(argv)
    result = summarize(a.folders, a.test)
    atomic_write_json(a.out / "cod_recipe.json", finite(result))
    atomic_write_text(a.out / "cod_recipe.md", render(result))
    print(render(result))


if __name__ == "__main__":
    main()
