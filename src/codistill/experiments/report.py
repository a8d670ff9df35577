"""A sweep's report: one summary computed from the cells of the sweep's current config, then written as
``summary.json``, ``report.md`` (tables like the paper's), ``cells.csv`` (one row per cell) and PNG plots.

Only the cells that one entry of ``sweep.json``'s history lists are read (the last one, or the config asked
for), so a report never mixes configs; it names that config's hash. A folder without ``sweep.json`` (cells
written by hand) is reported whole.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from codistill import cod as cod_rules
from codistill.counterfactuals.rows import summary_path
from codistill.errors import ConfigError
from codistill.experiments.artifacts import config_hash, read_json
from codistill.experiments.grid import SweepConfig, method_label
from codistill.experiments.stats import aggregate, format_mean_std, format_paired, paired_difference
from codistill.fileio import atomic_write_json, atomic_write_text

METRICS = (("accuracy", None), ("macro_f1", "Macro-F1 on test (%):"),
           ("mcc", "Matthews correlation on test (× 100; CoLA's usual metric):"),
           ("agreement", "Teacher–student agreement on test (%):"),
           ("reference_accuracy", ("Reference protocol, the figure the CoD paper's code reports: the best of the "
                                   "validation evaluations along training, chosen and scored on the validation split "
                                   "(optimistic; validation accuracy, %):")),
           ("final_validation_accuracy", "Validation accuracy of the final weights (%), the same runs:"),
           ("selection_bias", "Selection bias: reference figure − final weights' validation accuracy (points):"))
# the figures compared CoD − baseline per seed: our protocol (final weights, test) and the reference protocol
PAIRED = (("accuracy", "paired"), ("reference_accuracy", "paired_reference"))


def read_cells(root: str | Path, pattern: str = "**/metrics.json") -> list[dict[str, Any]]:
    """Every completed cell under ``root`` (a ``metrics.json`` exists only once a run has finished)."""
    return [read_json(p) for p in sorted(Path(root).glob(pattern))]


def folder_dataset(folder: str) -> str:
    """The sweep's name of a cell folder's dataset (``cells/<dataset>/...``), which names its teacher and
    counterfactual files too."""
    return Path(folder).relative_to("cells").parts[0]


def _sweep_cells(root: Path, folders: list[str]) -> list[dict[str, Any]]:
    """The finished cells among a sweep's cell folders, each named by :func:`folder_dataset`, not by the
    data's own name."""
    cells = []
    for folder in folders:
        path = root / folder / "metrics.json"
        if path.is_file():
            cells.append({**read_json(path), "dataset": folder_dataset(folder)})
    return cells


def split_source(source: str | Path) -> tuple[Path, str | None]:
    """``FOLDER`` or ``FOLDER@CONFIG`` (a sweep YAML or the start of a config hash, as :func:`current_entry`
    reads it) as (folder, config). A folder whose own name holds ``@`` is a folder; otherwise the last ``@``
    splits."""
    if Path(source).is_dir():
        return Path(source), None
    folder, sep, config = str(source).rpartition("@")
    return (Path(folder), config) if sep else (Path(source), None)


def current_entry(root: Path, config: str | Path | None = None) -> dict[str, Any] | None:
    """The config of ``sweep.json``'s history a report describes (``None`` when the folder has no sweep.json):
    the last one run, or ``config``: a sweep's YAML file (the entry its config made) or the start of an
    entry's hash. A config the folder never ran is an error that lists the ones it did."""
    path = root / "sweep.json"
    if not path.is_file():
        if config is not None:
            raise ConfigError(f"{path}: not found, so no sweep config can be chosen in {root}")
        return None
    history = read_json(path).get("history")
    if not history:
        raise ConfigError(f"{path}: no sweep recorded in it (expected a 'history' list)")
    if config is None:
        return history[-1]
    if Path(config).is_file():
        wanted, what = config_hash(SweepConfig.from_yaml(config).to_dict()), f"the config of {config}"
    else:
        wanted, what = str(config).strip().lower(), f"a config hash starting '{config}'"
    latest = {e.get("hash", ""): e for e in history}  # a config run again later: its latest entry
    found = [h for h in latest if wanted and h.startswith(wanted)]
    if len(found) == 1:
        return latest[found[0]]
    listed = "; ".join(f"{h[:12]} (last run {e.get('last_run')}, {len(e.get('cells', {}))} cells)"
                       for h, e in latest.items())
    raise ConfigError(f"{path}: {'no sweep of' if not found else 'more than one config matches'} {what}; "
                      f"this folder ran: {listed}")


def cell_rows(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per cell (what ``cells.csv`` holds)."""
    rows = []
    for c in cells:
        t = c["test"]
        rows.append({"dataset": c["dataset"], "method": c["method"], "cod": c["cod"] or "none",
                     "label": method_label(c["method"], c["cod"]), "k": c["k"], "seed": c["seed"],
                     "accuracy": t["accuracy"], "macro_f1": t["macro_f1"], "mcc": t["mcc"],
                     "agreement": t.get("agreement"),
                     "validation_accuracy": (c.get("validation") or {}).get("accuracy"),
                     **_reference_columns(c.get("reference")), "n_originals": c["n_originals"],
                     "n_counterfactuals": c["n_counterfactuals"], "n_train": c["n_train"], "steps": c["steps"],
                     "train_seconds": c["train_seconds"], "eval_seconds": c.get("eval_seconds", 0.0),
                     **_endpoint_columns(c.get("teacher_info"))})
    return sorted(rows, key=lambda r: (r["dataset"], r["label"], r["k"], r["seed"]))


ENDPOINT_COLUMNS = (("teacher_texts", "texts"), ("teacher_requests", "requests"),
                    ("teacher_tokens", None), ("teacher_seconds", "seconds"))


def _endpoint_columns(info: dict[str, Any] | None) -> dict[str, Any]:
    """What an endpoint teacher did inside a cell (:func:`codistill.teachers.describe_teacher`): texts it
    answered (cached or not), requests sent, tokens and seconds; empty for a classifier teacher."""
    if not info or info.get("kind") != "endpoint":
        return {}
    return {"teacher_texts": info["texts"], "teacher_requests": info["requests"],
            "teacher_tokens": info["prompt_tokens"] + info["completion_tokens"], "teacher_seconds": info["seconds"]}


def _reference_columns(reference: dict[str, Any] | None) -> dict[str, Any]:
    """A cell's reference-protocol figures (:func:`codistill.evaluate.reference_protocol`) as flat columns."""
    r = reference or {}
    return {"reference_accuracy": r.get("validation_accuracy"), "reference_step": r.get("step"),
            "evaluations": r.get("evaluations"), "final_validation_accuracy": r.get("final_validation_accuracy"),
            "selection_bias": r.get("selection_bias")}


def _teacher_files(root: Path, dataset: str, entry: dict | None) -> list[dict[str, Any]]:
    """The teacher's test-prediction files the sweep recorded for ``dataset`` (one per teacher: an endpoint
    teacher with in-context examples has one per seed)."""
    rel = ((entry or {}).get("artifacts", {}).get(dataset, {}) or {}).get("teacher_predictions")
    rels = [rel] if isinstance(rel, str) else (rel or [])
    return [read_json(root / r) for r in rels if (root / r).is_file()]


def _teacher(root: Path, dataset: str, entry: dict | None, cells: list[dict]) -> tuple[float | None, int | None]:
    files = _teacher_files(root, dataset, entry)  # recorded in sweep.json by the sweep that made the cells
    if files:
        return sum(f["metrics"]["accuracy"] for f in files) / len(files), files[0].get("parameters")
    given = [c["teacher_test"]["accuracy"] for c in cells if c["dataset"] == dataset and c.get("teacher_test")]
    return (given[0] if given else None), None


def _endpoint_labelling(root: Path, dataset: str, entry: dict | None) -> list[dict[str, Any]]:
    """What the endpoint teacher's sweep-level work cost: labelling the test split (per teacher) and
    verifying each counterfactual file (with its proxy's fit)."""
    out = [{"what": f"test split ({f['n']} texts)", **{k: (f.get("teacher_info") or {}).get(k)
                                                         for k in ("requests", "prompt_tokens", "completion_tokens",
                                                                   "seconds")}}
           for f in _teacher_files(root, dataset, entry)]
    for s in _counterfactual_sets(root, dataset, entry):
        if s.get("teacher_cost"):
            out.append({"what": f"counterfactuals {s['file'].replace('.summary.json', '')} ({s['originals']} "
                                f"originals)", **s["teacher_cost"]})
    return out


def _counterfactual_sets(root: Path, dataset: str, entry: dict | None) -> list[dict[str, Any]]:
    files = ((entry or {}).get("artifacts", {}).get(dataset, {}) or {}).get("counterfactuals")
    paths = [summary_path(root / f) for f in files] if files is not None else \
        sorted((root / "counterfactuals" / dataset).glob("*.summary.json"))
    return [{"file": p.name, **read_json(p)} for p in paths if p.is_file()]


def _notes(root: Path, folders: list[str]) -> list[str]:
    """What loading did to a dataset's splits (drawn from another split, carved, capped), from the resolved
    config of the first of its cell ``folders`` that has one."""
    for folder in folders:
        path = root / folder / "run_config.json"
        if path.is_file():
            return list(read_json(path)["dataset"].get("notes", []))
    return []


def _entry_folders(root: Path, entry: dict[str, Any] | None) -> list[str]:
    """The cell folders of a sweep ``entry``; every finished cell folder under ``root`` without one."""
    return list(entry["cells"]) if entry is not None else \
        [str(p.parent.relative_to(root)) for p in sorted((root / "cells").glob("**/metrics.json"))]


def sweep_cells(root: str | Path, config: str | Path | None = None) -> list[dict[str, Any]]:
    """The finished cells of the sweep's current config in ``root`` (or of ``config``, as :func:`current_entry`
    reads it), each named by its sweep's dataset name: what a report of that config is made from."""
    root = Path(root)
    return _sweep_cells(root, _entry_folders(root, current_entry(root, config)))


def summarize(root: Path, config: str | Path | None = None) -> dict[str, Any]:
    """Every number of the report, from the cells of the sweep's current config (or ``config``, as
    :func:`current_entry` reads it)."""
    entry = current_entry(root, config)
    folders = _entry_folders(root, entry)
    cells = _sweep_cells(root, folders)
    if not cells:
        raise ConfigError(f"{root}: no finished cells (cells/**/metrics.json) to report on")
    rows = cell_rows(cells)
    summary: dict[str, Any] = {
        "config_hash": entry["hash"] if entry else None,
        "config": entry["config"] if entry else None,
        "cells_planned": len(entry["cells"]) if entry else len(cells), "cells_finished": len(cells),
        "datasets": {}, "rows": rows}
    for dataset in sorted({r["dataset"] for r in rows}):
        data = [r for r in rows if r["dataset"] == dataset]
        ks = sorted({r["k"] for r in data})
        labels = sorted({r["label"] for r in data}, key=lambda s: (s.split("+")[0], s))
        teacher_acc, teacher_params = _teacher(root, dataset, entry, cells)
        ds: dict[str, Any] = {"teacher_accuracy": teacher_acc, "teacher_parameters": teacher_params, "ks": ks,
                              "teacher_validation_accuracy": _teacher_validation(cells, dataset),
                              "labels": labels, "paired": {}, "paired_reference": {},
                              "test_rows": sorted({c["test"]["n"] for c in cells if c["dataset"] == dataset}),
                              "notes": _notes(root, [f for f in folders if folder_dataset(f) == dataset]),
                              "warnings": sorted({w for c in cells if c["dataset"] == dataset
                                                  for w in c.get("warnings", [])}),
                              "counterfactuals": _counterfactual_sets(root, dataset, entry)}
        endpoint = [r for r in data if "teacher_requests" in r]
        if endpoint:
            ds["endpoint_cost"] = {}
            for column, _ in ENDPOINT_COLUMNS:
                stats = aggregate(endpoint, ["label", "k"], lambda r: r[column])
                ds["endpoint_cost"][column] = {label: {str(k): stats[(label, k)][0] for k in ks if (label, k) in stats}
                                               for label in labels}
            ds["endpoint_labelling"] = _endpoint_labelling(root, dataset, entry)
        for metric, _ in METRICS:
            stats = aggregate([r for r in data if r[metric] is not None], ["label", "k"], lambda r: r[metric])
            ds[metric] = {label: {str(k): dict(zip(("mean", "std", "n"), stats[(label, k)]))
                                  for k in ks if (label, k) in stats} for label in labels}
        pairs = [(c, c.split("+")[0]) for c in labels if "+cod" in c and c.split("+")[0] in labels]
        pairs += [(c, c[: c.rindex("-")]) for c in labels  # several CFs per original, or a second round, vs CoD
                  if c.endswith(("+cod-multi", "+cod-rounds")) and c[: c.rindex("-")] in labels]
        for metric, where in PAIRED:
            for cod_label, base in pairs:
                for k in ks:
                    a = {r["seed"]: r[metric] for r in data if r["label"] == cod_label and r["k"] == k
                         and r[metric] is not None}
                    b = {r["seed"]: r[metric] for r in data if r["label"] == base and r["k"] == k
                         and r[metric] is not None}
                    if a and b:
                        ds[where].setdefault(f"{cod_label} - {base}", {})[str(k)] = paired_difference(a, b)
        summary["datasets"][dataset] = ds
    return summary


def _teacher_validation(cells: list[dict], dataset: str) -> float | None:
    given = [c["teacher_validation"]["accuracy"] for c in cells if c["dataset"] == dataset and c.get("teacher_validation")]
    return given[0] if given else None


def _fmt(v, p: int = 2) -> str:
    return "-" if v is None else f"{v:.{p}f}"


def _mode_legend() -> str:
    """What each CoD label in the tables trains on, read from :data:`codistill.cod.MODES` (the default first)."""
    modes = sorted(cod_rules.MODES, key=lambda m: m != cod_rules.DEFAULT_MODE)
    return "; ".join(f"`{method_label('', m)}`" + (" (the default)" if m == cod_rules.DEFAULT_MODE else "")
                     + f" = {cod_rules.MODES[m]}" for m in modes) + "."


def render_markdown(summary: dict[str, Any], title: str) -> str:
    """``report.md`` from a :func:`summarize` summary."""
    md = [f"# codistill report: {title}", "",
          "Test accuracy, mean ± std over seeds (%). Fixed training budget; nothing selected on the test split. "
          + _mode_legend(), ""]
    if summary["config_hash"]:
        md += [f"Config: `{summary['config_hash'][:12]}` (one entry of sweep.json's history, the last unless "
               "`codistill report --config` chose another; every table below comes "
               f"from its {summary['cells_finished']} of {summary['cells_planned']} cells, and only from them).", ""]
    for dataset, ds in summary["datasets"].items():
        ks, labels = ds["ks"], ds["labels"]
        md += [f"## {dataset}", ""]
        if ds["teacher_accuracy"] is not None:
            md += [f"Teacher test accuracy: {ds['teacher_accuracy'] * 100:.1f}%." + (
                f" Teacher validation accuracy: {ds['teacher_validation_accuracy'] * 100:.1f}%."
                if ds.get("teacher_validation_accuracy") is not None else "") + (
                f" Teacher parameters: {ds['teacher_parameters']:,}." if ds["teacher_parameters"] else ""), ""]
        md += [f"Test rows: {', '.join(f'{n:,}' for n in ds['test_rows'])}." + "".join(f" Note: {n}." for n in ds["notes"]), ""]
        md += [f"Warning: {w}." for w in ds["warnings"]] + ([""] if ds["warnings"] else [])
        header = ["| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for metric, title in METRICS:
            if title and not any(ds[metric].values()):  # e.g. no validation curve was recorded
                continue
            md += (["", title, ""] if title else []) + header
            for label in labels:
                cells = []
                for k in ks:
                    s = ds[metric].get(label, {}).get(str(k))
                    cells.append(format_mean_std((s["mean"], s["std"], s["n"]) if s else (0, 0, 0)))
                md.append(f"| {label} | " + " | ".join(cells) + " |")
        for where, what in (("paired", "test accuracy of the final weights"),
                            ("paired_reference", "the reference protocol's figure (best validation accuracy)")):
            if not ds.get(where):
                continue
            md += ["", f"Paired difference CoD − baseline in points of {what}, per seed: mean [95% CI] (seeds won):",
                   "", "| comparison | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
            for name, by_k in ds[where].items():
                texts = [format_paired(by_k.get(str(k))) for k in ks]
                md.append(f"| {name.replace(' - ', ' − ')} | " + " | ".join(texts) + " |")
        if ds["counterfactuals"]:
            md += ["", "Counterfactual sets (one per seed, for the largest k; smaller k use their nested prefix). "
                   "Fluency: perplexity ratio to the original under the LM (median; share ≤ 1.5); validity: share "
                   "of flips whose target the judge also predicts; distinct: distinct edits / edits.", "",
                   "| file | originals | flip rate | target prob | edited words mean / median | length ratio | "
                   "fluency median (≤ 1.5) | validity | distinct | edit kinds | seconds |",
                   "|---|---|---|---|---|---|---|---|---|---|---|"]
            for s in ds["counterfactuals"]:
                kinds = ", ".join(f"{k} {v}" for k, v in (s.get("edit_kinds") or {}).items()) or "-"
                md.append(f"| {s['file'].replace('.summary.json', '')} | {s['originals']} | {_fmt(s['flip_rate'])} | "
                          f"{_fmt(s['mean_target_prob'])} | {_fmt(s['edited_words_mean'])} / "
                          f"{_fmt(s['edited_words_median'], 1)} | {_fmt(s['length_ratio_mean'])} | "
                          f"{_fmt(s.get('fluency_ratio_median'))} ({_fmt(s.get('fluency_share_le_1_5'))}) | "
                          f"{_fmt(s.get('validity'))} | {_fmt(s.get('distinct_edit_share'))} | {kinds} | "
                          f"{_fmt(s['seconds'], 0)} |")
            quality = ds["counterfactuals"][0].get("quality") or {}
            md += ["", f"LM for fluency: {quality.get('lm') or 'none'}; judge: {quality.get('judge') or 'none'}.", "",
                   f"Pairs from {ds['counterfactuals'][0]['file'].replace('.summary.json', '')} (original → "
                   "counterfactual):", ""]
            for e in ds["counterfactuals"][0].get("examples", []):
                notes = [f"fluency ×{e['fluency_ratio']:.2f}" if e.get("fluency_ratio") is not None else "",
                         {True: "judge agrees", False: "judge disagrees", None: ""}[e.get("judge_agrees")]]
                md.append(f"- *{e['label']} → {e['target']}*: {_md_text(e['text'])} → **{_md_text(e['counterfactual'])}**"
                          + (f" ({', '.join(n for n in notes if n)})" if any(notes) else ""))
        if ds.get("endpoint_cost"):
            md += ["", "Endpoint teacher, per student (mean over seeds): texts it answered for the training rows "
                   "(cached or not) / requests sent / tokens / seconds. The test split and the counterfactual files "
                   "are labelled once per sweep (below), so a cell's requests depend on what earlier cells cached.",
                   "", "| method | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
            cost = ds["endpoint_cost"]
            for label in labels:
                texts = []
                for k in ks:
                    got = [cost[c].get(label, {}).get(str(k)) for c, _ in ENDPOINT_COLUMNS]
                    texts.append("-" if got[0] is None else
                                 f"{got[0]:.0f} / {got[1]:.0f} / {got[2]:,.0f} / {got[3]:.0f} s")
                md.append(f"| {label} | " + " | ".join(texts) + " |")
            md += ["", "| labelled once | requests | prompt tokens | completion tokens | seconds |", "|---|---|---|---|---|"]
            for e in ds.get("endpoint_labelling", []):
                md.append(f"| {e['what']} | {_fmt(e.get('requests'), 0)} | {_fmt(e.get('prompt_tokens'), 0)} | "
                          f"{_fmt(e.get('completion_tokens'), 0)} | {_fmt(e.get('seconds'), 0)} |")
        for metric in ("accuracy", "agreement"):
            md += ["", f"![{metric} vs k]({plot_name(dataset, metric)})"]
        md.append("")
    return "\n".join(md) + "\n"


def _md_text(text: str) -> str:
    """A text safe inside a Markdown list item (no line breaks, no emphasis or table marks)."""
    return " ".join(text.split()).replace("|", "\\|").replace("*", "\\*").replace("_", "\\_")


def plot_name(dataset: str, metric: str) -> str:
    return f"{dataset}_{metric}_vs_k.png"


def plot(ds: dict[str, Any], dataset: str, metric: str, path: Path) -> None:
    """Mean ± std of ``metric`` against k per method, from a dataset's summary. Uses matplotlib's object
    API with the Agg canvas, so a notebook's backend is left alone."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, by_k in ds[metric].items():
        ks = sorted(int(k) for k in by_k)
        means = [by_k[str(k)]["mean"] * 100 for k in ks]
        stds = [by_k[str(k)]["std"] * 100 for k in ks]
        ax.plot(ks, means, marker="o", label=label, linestyle="--" if "+cod" not in label else "-")
        ax.fill_between(ks, [m - s for m, s in zip(means, stds)], [m + s for m, s in zip(means, stds)], alpha=0.15)
    if ds["teacher_accuracy"] is not None and metric == "accuracy":
        ax.axhline(ds["teacher_accuracy"] * 100, color="gray", linestyle=":", label="teacher")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (labelled examples)")
    ax.set_ylabel(f"test {metric.replace('_', ' ')} (%)")
    ax.set_title(f"{dataset}: {metric.replace('_', ' ')} vs k (mean ± std over seeds)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def build_report(run_dir: str | Path, config: str | Path | None = None) -> dict[str, Any]:
    """Write ``report.md``, ``cells.csv``, ``summary.json`` and per-dataset PNG plots for a sweep folder, on the
    cells of its last config or of ``config`` (a sweep YAML or the start of a config hash: :func:`current_entry`).

    Tables: test accuracy mean ± std per method and k (like the paper's), macro-F1, MCC, teacher–student
    agreement, the paired per-seed difference CoD − baseline with a 95% t-interval and the number of seeds
    CoD won, the teacher's accuracy, and the quality of the counterfactual sets. Returns the summary.
    """
    root = Path(run_dir)
    summary = summarize(root, config)
    rows = summary.pop("rows")
    for dataset, ds in summary["datasets"].items():
        for metric in ("accuracy", "agreement"):
            plot(ds, dataset, metric, root / plot_name(dataset, metric))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(root / "cells.csv", buf.getvalue())
    atomic_write_json(root / "summary.json", json.loads(json.dumps(summary, default=str)))
    atomic_write_text(root / "report.md", render_markdown(summary, root.name))
    return summary
