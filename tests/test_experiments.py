"""Grids and reports: aggregation, a tiny sweep end to end, resuming, report numbers, example configs."""

from __future__ import annotations

import csv
import json
import math
import statistics
from pathlib import Path

import pytest
import yaml

from conftest import load_benchmark, synthetic_rows, write_csv

from codistill.errors import ConfigError
from codistill.experiments import SweepConfig, build_report, read_cells, run_sweep
from codistill.experiments.grid import method_label
from codistill.experiments.stats import aggregate, format_mean_std, format_paired, mean_std, paired_difference

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_mean_std_sample_std() -> None:
    mean, std, n = mean_std([0.5, 0.7, 0.9])
    assert n == 3 and math.isclose(mean, 0.7) and math.isclose(std, 0.2)
    assert mean_std([0.4]) == (0.4, 0.0, 1)
    assert mean_std([])[2] == 0 and math.isnan(mean_std([])[0])


def test_aggregate_groups_and_format(tmp_path: Path) -> None:
    cells = [{"method": "kd", "k": 8, "seed": s, "test": {"accuracy": a}} for s, a in enumerate([0.6, 0.7])]
    cells.append({"method": "kd", "k": 16, "seed": 0, "test": {"accuracy": 0.8}})
    for i, c in enumerate(cells):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "metrics.json").write_text(json.dumps(c))
    (tmp_path / "unfinished").mkdir()  # no metrics.json: not a finished cell
    read = read_cells(tmp_path)
    assert len(read) == 3
    stats = aggregate(read, ["method", "k"], lambda c: c["test"]["accuracy"])
    assert stats[("kd", 8)][2] == 2 and stats[("kd", 16)][2] == 1
    assert format_mean_std(stats[("kd", 8)]) == "65.0 ± 7.1"
    assert format_mean_std(stats[("kd", 16)]) == "80.0 ± 0.0"
    assert format_mean_std((float("nan"), float("nan"), 0)) == "-"


def test_paired_difference_t_interval() -> None:
    d = paired_difference({0: 0.7, 1: 0.8, 2: 0.75}, {0: 0.6, 1: 0.7, 2: 0.75, 3: 0.9})
    assert d["seeds"] == [0, 1, 2] and d["wins"] == 2
    assert d["mean"] == pytest.approx(0.2 / 3)
    sd = math.sqrt(((0.1 - d["mean"]) ** 2 * 2 + d["mean"] ** 2) / 2)
    assert d["ci_high"] - d["mean"] == pytest.approx(4.302653 * sd / math.sqrt(3), rel=1e-5)
    assert format_paired(d) == f"+6.7 [{d['ci_low'] * 100:+.1f}, {d['ci_high'] * 100:+.1f}] (2/3)"
    # one pair has no interval (not "[+nan, +nan]"); no pair is a dash
    assert format_paired(paired_difference({0: 0.7}, {0: 0.75, 1: 0.9}), digits=2) == "-5.00 (0/1)"
    assert format_paired(paired_difference({0: 0.7}, {1: 0.75})) == "-" == format_paired(None)


def test_method_labels(monkeypatch: pytest.MonkeyPatch) -> None:
    import codistill.cod as cod_rules
    for default in ("replace", "augment"):  # the paper's mode keeps the plain label whichever is the default
        monkeypatch.setattr(cod_rules, "DEFAULT_MODE", default)
        assert [method_label("kd", c) for c in (None, "none", "replace", "augment", "extra")] == \
            ["kd", "kd", "kd+cod", "kd+cod-augment", "kd+extra"]


def test_report_legend_reads_the_modes_default_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import codistill.cod as cod_rules
    from codistill.experiments.report import _mode_legend
    for default, label in (("augment", "+cod-augment"), ("replace", "+cod")):
        monkeypatch.setattr(cod_rules, "DEFAULT_MODE", default)
        legend = _mode_legend()
        assert legend.startswith(f"`{label}` (the default) = {cod_rules.MODES[default]}")
        assert legend.count("(the default)") == 1
        assert all(f"`{method_label('', m)}`" in legend for m in cod_rules.MODES)


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown method 'kdd'"):
        SweepConfig(out="x", datasets=[{"data": "tweets"}], methods=["kdd"])
    with pytest.raises(ConfigError, match="unknown cod mode"):
        SweepConfig(out="x", datasets=[{"data": "tweets"}], cod=["half"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("out: x\ndatasets: [{data: tweets}]\nseedz: [1]\n")
    with pytest.raises(ConfigError, match="unknown option\\(s\\) seedz"):
        SweepConfig.from_yaml(bad)
    bad.write_text("out: x\ndatasets: [{data: tweets, techer: y}]\n")
    with pytest.raises(ConfigError, match="datasets\\[\\]: unknown option\\(s\\) techer"):
        SweepConfig.from_yaml(bad)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        SweepConfig(out="x", datasets=[{"data": "tweets"}], train={"epochs": 0})


# -- a tiny sweep end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grid_setup(tmp_path_factory, tiny_teacher: Path, tiny_student: Path, tiny_lm: Path) -> dict:
    root = tmp_path_factory.mktemp("grid")
    folder = root / "toy"
    write_csv(folder / "train.csv", synthetic_rows(80, seed=1))
    write_csv(folder / "test.csv", synthetic_rows(24, seed=3))
    lexicon = root / "lexicon.json"
    lexicon.write_text(json.dumps({"great": ["awful"], "lovely": ["dull"], "superb": ["dreadful"], "fine": ["poor"],
                                   "excellent": ["terrible"], "wonderful": ["boring"]}))
    base = {
        "datasets": [{"data": str(folder), "teacher_model": str(tiny_teacher), "teacher_epochs": 8,
                      "teacher_lr": 2e-3,
                      "options": {"label_names": ["negative", "positive"]}, "judge": str(tiny_teacher)}],
        "methods": ["kd", "finetune"], "cod": ["none", "replace"], "k": [4, 8], "seeds": [0, 1],
        "generator": {"name": "edits", "lexicon": str(lexicon)}, "on_failure": "keep-best",
        "fluency_lm": str(tiny_lm),
        # a student copied from the teacher (2 of its 4 layers, fresh head) learns the toy task from a few rows
        "student": {"model": str(tiny_student), "layers": 2, "init": "teacher"},
        "train": {"epochs": 3, "min_steps": 8, "batch_size": 4, "lr": 2e-3, "max_length": 32, "eval_batch_size": 16,
                  "probe_steps": 0},
    }
    # the same teacher trained once, for the sweeps that do not test teacher training ("given")
    from codistill.config import teacher_train_config
    from codistill.data import load_dataset
    from codistill.runs import train_teacher

    entry = base["datasets"][0]
    teacher = root / "teacher"
    train_teacher(load_dataset(str(folder), **entry["options"]), str(tiny_teacher), teacher,
                  train=teacher_train_config(epochs=entry["teacher_epochs"], lr=entry["teacher_lr"]), progress=False)
    given = {**base, "datasets": [{**{k: v for k, v in entry.items() if not k.startswith("teacher_")},
                                   "teacher": str(teacher)}]}
    return {"root": root, "base": base, "given": given}


def _comparable(summary: dict) -> dict:
    out = {}
    for name, ds in summary["datasets"].items():
        out[name] = {k: ds[k] for k in ("teacher_accuracy", "accuracy", "macro_f1", "agreement", "paired")}
    return out


def test_tiny_sweep_resume_report_and_plots(grid_setup: dict) -> None:
    root, base = grid_setup["root"], grid_setup["base"]
    full = SweepConfig(out=str(root / "full"), **base)
    result = run_sweep(full, progress=False)
    assert result == {**result, "cells": 16, "ran": 16, "finished": 16}
    assert run_sweep(full, progress=False)["ran"] == 0  # everything finished: nothing runs again
    # the folder kept without weights (benchmarks/keep_state.py) and carried elsewhere: the teacher is keyed by
    # its recipe, so it is trained again there and every finished cell is still reused
    moved = root / "moved"
    assert load_benchmark("keep_state").keep_state(Path(full.out), moved) > 16
    assert not list((moved / "teachers").glob("toy-*/")) and not list(moved.rglob("*.safetensors"))
    assert run_sweep(SweepConfig(out=str(moved), **base), progress=False)["ran"] == 0
    teacher_dir, = (moved / "teachers").glob("toy-*/")
    assert (teacher_dir / "metrics.json").is_file()

    # interrupted after 5 cells, then resumed: same report as the uninterrupted sweep
    part = SweepConfig(out=str(root / "part"), **base)
    first = run_sweep(part, progress=False, stop_after=5)
    assert first["finished"] == 5
    planned = list(json.loads((Path(part.out) / "sweep.json").read_text())["history"][-1]["cells"])
    unfinished = Path(part.out) / planned[5]
    assert not (unfinished / "metrics.json").exists()
    unfinished.mkdir(parents=True, exist_ok=True)
    (unfinished / "train_log.jsonl").write_text("{}\n")  # a killed cell leaves files but no metrics.json
    second = run_sweep(part, progress=False)
    assert second["ran"] == 11 and second["finished"] == 16
    s_full, s_part = build_report(full.out), build_report(part.out)
    assert _comparable(s_full) == _comparable(s_part)

    # the report's numbers equal a recomputation from the cell files
    cells = read_cells(Path(full.out) / "cells")
    for label, method, cod in (("kd", "kd", None), ("kd+cod", "kd", "replace")):
        accs = [c["test"]["accuracy"] for c in cells if c["method"] == method and c["cod"] == cod and c["k"] == 8]
        reported = s_full["datasets"]["toy"]["accuracy"][label]["8"]
        assert reported["n"] == 2 and reported["mean"] == pytest.approx(sum(accs) / 2)
    paired = s_full["datasets"]["toy"]["paired"]["kd+cod - kd"]["4"]
    by = {(c["cod"], c["seed"]): c["test"]["accuracy"] for c in cells if c["method"] == "kd" and c["k"] == 4}
    assert paired["diffs"] == pytest.approx([by[("replace", s)] - by[(None, s)] for s in (0, 1)])
    cod_cells = [c for c in cells if c["cod"] == "replace"]
    assert all(c["n_originals"] == c["k"] // 2 for c in cod_cells)

    assert s_full["datasets"]["toy"]["teacher_accuracy"] > 0.8  # a teacher that learned the toy task
    report = (Path(full.out) / "report.md").read_text()
    assert "| kd+cod |" in report and "kd+cod − kd" in report and "Macro-F1 on test" in report and "Teacher test accuracy" in report
    assert "Matthews correlation on test" in report
    teacher_dir, = (Path(full.out) / "teachers").glob("toy-*/")
    teacher_params = json.loads((teacher_dir / "metrics.json").read_text())["parameters"]
    assert f"Teacher parameters: {teacher_params:,}." in report
    mccs = [c["test"]["mcc"] for c in cells if c["method"] == "kd" and c["cod"] is None and c["k"] == 8]
    assert s_full["datasets"]["toy"]["mcc"]["kd"]["8"]["mean"] == pytest.approx(sum(mccs) / 2)
    assert "Counterfactual sets" in report
    assert f"LM for fluency: {base['fluency_lm']}; judge: {base['datasets'][0]['judge']}." in report
    cf_summaries = sorted((Path(full.out) / "counterfactuals" / "toy").glob("*.summary.json"))
    first = json.loads(cf_summaries[0].read_text())
    rows = [json.loads(line) for line in cf_summaries[0].with_name(
        cf_summaries[0].name.replace(".summary.json", ".jsonl")).read_text().splitlines()]
    ratios = [r["fluency_ratio"] for r in rows if r["flipped"] and r.get("fluency_ratio") is not None]
    assert ratios and first["fluency_ratio_median"] == pytest.approx(statistics.median(ratios))
    assert first["validity"] is not None
    assert f"{first['fluency_ratio_median']:.2f} (" in report
    assert report.count("→ **") == len(first["examples"]) > 0    # the pairs of the first set, to read
    for png in ("toy_accuracy_vs_k.png", "toy_agreement_vs_k.png"):
        data = (Path(full.out) / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with open(Path(full.out) / "cells.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16 and {r["label"] for r in rows} == {"kd", "kd+cod", "finetune", "finetune+cod"}
    by_cell = {(c["method"], c["cod"] or "", str(c["k"]), str(c["seed"])): c for c in cells}
    for r in rows:  # what a recipe is chosen on, as the cell measured it
        cell = by_cell[(r["method"], r["cod"] if r["cod"] not in ("none", "None") else "", r["k"], r["seed"])]
        assert float(r["validation_accuracy"]) == pytest.approx(cell["validation"]["accuracy"], abs=1e-4)
    # counterfactuals were generated once per seed, for the largest k
    assert sorted(p.name.split("-")[0] for p in (Path(full.out) / "counterfactuals" / "toy").glob("*.jsonl")) == \
        ["edits_k8_s0", "edits_k8_s1"]


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_example_configs_parse_and_a_tiny_version_runs(example: str, grid_setup: dict, tmp_path: Path) -> None:
    cfg = SweepConfig.from_yaml(EXAMPLES / example)
    assert cfg.datasets and cfg.methods and cfg.k and cfg.seeds
    base = grid_setup["given"]
    tiny = SweepConfig(out=str(tmp_path / "tiny"), datasets=base["datasets"], methods=cfg.methods[:1],
                       cod=cfg.cod[:2], k=[4], seeds=[0], generator=base["generator"], on_failure="keep-best",
                       fluency_lm=None,
                       student=base["student"], train=base["train"], distill=cfg.distill)
    result = run_sweep(tiny, progress=False)
    assert result["finished"] == result["cells"] == len(tiny.cod)


def test_cod_multi_is_its_own_method_paired_with_cod(grid_setup: dict, tmp_path: Path) -> None:
    base = {**grid_setup["given"], "methods": ["kd"], "k": [4], "seeds": [0, 1], "fluency_lm": None}
    with pytest.raises(ConfigError, match="per_original >= 2"):
        SweepConfig(out=str(tmp_path / "x"), **{**base, "cod": ["replace", "multi"]})
    cfg = SweepConfig(out=str(tmp_path / "m"), **{**base, "cod": ["replace", "multi"],
                                                   "generator": {**base["generator"], "per_original": 2}})
    assert run_sweep(cfg, progress=False)["finished"] == 4
    cells = {(c["cod"], c["seed"]): c for c in read_cells(Path(cfg.out) / "cells")}
    files = sorted((Path(cfg.out) / "counterfactuals" / "toy").glob("*.jsonl"))
    for seed, path in zip((0, 1), files):
        rows = [json.loads(line) for line in path.read_text().splitlines()][:2]  # the k=4 cells' originals
        used = [r for r in rows if r["use"]]
        assert cells[("replace", seed)]["n_counterfactuals"] == len(used)
        assert cells[("multi", seed)]["n_counterfactuals"] == len(used) + sum(len(r["more_counterfactuals"]) for r in used)
    assert any(cells[("multi", s)]["n_counterfactuals"] > cells[("replace", s)]["n_counterfactuals"] for s in (0, 1))
    summary = build_report(cfg.out)
    assert "kd+cod-multi - kd+cod" in summary["datasets"]["toy"]["paired"]
    assert "| kd+cod-multi |" in (Path(cfg.out) / "report.md").read_text()


def test_cod_rounds_is_its_own_method_paired_with_cod(grid_setup: dict, tmp_path: Path) -> None:
    base = {**grid_setup["given"], "methods": ["kd"], "k": [4], "seeds": [0], "fluency_lm": None,
            "cod": ["replace", "rounds"]}
    cfg = SweepConfig(out=str(tmp_path / "r"), **base)
    assert run_sweep(cfg, progress=False)["finished"] == 2
    cells = {c["cod"]: c for c in read_cells(Path(cfg.out) / "cells")}
    rounds = cells["rounds"]
    assert rounds["rounds"]["texts"] > 0 and rounds["n_originals"] == cells["replace"]["n_originals"]
    assert rounds["n_counterfactuals"] >= cells["replace"]["n_counterfactuals"]
    folders = [p.parent for p in (Path(cfg.out) / "cells").rglob("round2.jsonl")]
    assert len(folders) == 1                                            # only the rounds cell searches again
    summary = build_report(cfg.out)
    assert "kd+cod-rounds - kd+cod" in summary["datasets"]["toy"]["paired"]
    assert "| kd+cod-rounds |" in (Path(cfg.out) / "report.md").read_text()


def test_a_changed_config_reruns_exactly_what_it_changes(grid_setup: dict, tmp_path: Path) -> None:
    base = {**grid_setup["base"], "methods": ["kd"], "cod": ["none", "replace"], "k": [4], "seeds": [0]}
    out = tmp_path / "s"

    def sweep(**changes):
        return run_sweep(SweepConfig(out=str(out), **{**base, **changes}), progress=False)

    def count(pattern: str) -> int:
        return len(list(out.glob(pattern)))

    assert sweep()["ran"] == 2
    baseline_folder = next(p for p in out.glob("cells/toy/kd/*/") if p.is_dir())
    assert sweep(train={**base["train"], "lr": 1e-3})["ran"] == 2          # lr: only the cells rerun
    assert count("teachers/*/metrics.json") == 1 and count("counterfactuals/toy/*.jsonl") == 1
    assert sweep()["ran"] == 0                                              # back again: all found by key
    assert sweep(generator={**base["generator"], "max_edits": 1})["ran"] == 1  # max_edits: CoD cell, new file
    assert count("counterfactuals/toy/*.jsonl") == 2 and count("cells/toy/kd+cod/*/metrics.json") == 3
    assert count("cells/toy/kd/*/metrics.json") == 2                        # the baseline cell was reused
    assert sweep(k=[4, 8])["ran"] == 2   # a larger k: only its new cells (the k=4 ones are found by key)
    teacher = {**base["datasets"][0], "teacher_epochs": 7}
    assert sweep(datasets=[teacher])["ran"] == 2                            # the teacher: everything downstream
    assert count("teachers/*/metrics.json") == 2
    history = json.loads((out / "sweep.json").read_text())["history"]
    assert len(history) == 6 and history[-1]["config"]["datasets"][0]["teacher_epochs"] == 7
    summary = build_report(out)       # from the last config's cells only, and it says which config
    assert summary["cells_finished"] == 2 and summary["config_hash"] == history[-1]["hash"]
    assert f"Config: `{history[-1]['hash'][:12]}`" in (out / "report.md").read_text()
    # an earlier config, chosen by its YAML (run twice: its latest entry) or by the start of its hash
    first = tmp_path / "first.yaml"
    first.write_text(yaml.safe_dump({"out": str(out), **base}))
    chosen = build_report(out, first)
    assert chosen["config_hash"] == history[0]["hash"] == history[2]["hash"]
    toy = chosen["datasets"]["toy"]
    assert chosen["cells_finished"] == 2 and toy["ks"] == [4] and toy["labels"] == ["kd", "kd+cod"]
    assert f"Config: `{history[0]['hash'][:12]}`" in (out / "report.md").read_text()
    assert build_report(out, history[3]["hash"][:10].upper())["config_hash"] == history[3]["hash"]
    with pytest.raises(ConfigError, match=f"no sweep of a config hash starting 'no-such'.*{history[-1]['hash'][:12]}"):
        build_report(out, "no-such")
    first.write_text(yaml.safe_dump({"out": str(out), **base, "seeds": [5]}))
    with pytest.raises(ConfigError, match="no sweep of the config of"):
        build_report(out, first)
    metrics = json.loads((baseline_folder / "metrics.json").read_text())
    assert baseline_folder.name.endswith(metrics["cell_key"][:12])


def test_one_writer_per_sweep_folder_and_a_truncated_cell_runs_again(grid_setup: dict, tmp_path: Path) -> None:
    from filelock import FileLock

    cfg = SweepConfig(out=str(tmp_path / "one"), **{**grid_setup["given"], "methods": ["kd"], "cod": ["none"],
                                                     "k": [4], "seeds": [0, 1], "fluency_lm": None})
    with FileLock(str(tmp_path / "one" / ".sweep.lock")):  # another sweep holds the folder
        with pytest.raises(ConfigError, match="is in use by another sweep"):
            run_sweep(cfg, progress=False)
    assert not list((tmp_path / "one").glob("cells/**/metrics.json"))
    assert run_sweep(cfg, progress=False)["finished"] == 2
    assert not list((tmp_path / "one").glob("cells/**/model.safetensors"))  # no weights unless asked
    metrics = sorted((tmp_path / "one").glob("cells/**/metrics.json"))
    metrics[0].write_text(metrics[0].read_text()[:40])  # cut short, as a full disk or a bad copy leaves it
    again = run_sweep(cfg, progress=False)
    assert again["ran"] == 1 and again["finished"] == 2
    assert json.loads(metrics[0].read_text())["k"] == 4
    # save_models keeps each new cell's student, loadable like any classifier folder
    kept = SweepConfig(out=str(tmp_path / "one"), **{**grid_setup["given"], "methods": ["kd"], "cod": ["none"],
                                                      "k": [4], "seeds": [2], "fluency_lm": None, "save_models": True})
    assert run_sweep(kept, progress=False)["ran"] == 1
    student, = (tmp_path / "one").glob("cells/**/k4_s2-*/")
    from codistill.models import load_classifier

    assert load_classifier(str(student)).model.config.num_labels == 2


def test_split_source_reads_folder_at_config(tmp_path: Path) -> None:
    from codistill.experiments.report import split_source
    odd = tmp_path / "runs@2026"
    odd.mkdir()
    assert split_source(tmp_path / "plain") == (tmp_path / "plain", None)
    assert split_source(f"{tmp_path}/plain@sweep.yaml") == (tmp_path / "plain", "sweep.yaml")
    assert split_source(odd) == (odd, None)  # an existing folder is never split
    assert split_source(f"{odd}@ab12") == (odd, "ab12")  # the last @ splits


def test_report_on_empty_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no finished cells"):
        build_report(tmp_path)


def test_parallel_workers_finish_every_cell_and_cap_evaluation(grid_setup: dict, tmp_path: Path) -> None:
    base = grid_setup["base"]
    datasets = [{**base["datasets"][0], "max_eval": 12}]
    cfg = SweepConfig(out=str(tmp_path / "cap"), **{**base, "datasets": datasets, "methods": ["kd"],
                                                     "cod": ["none", "replace"], "k": [4], "seeds": [0, 1],
                                                     "fluency_lm": None})
    result = run_sweep(cfg, workers=2, progress=False)   # worker processes load (and cap) the dataset themselves
    assert result["ran"] == 4 and result["finished"] == 4
    cells = read_cells(Path(cfg.out) / "cells")
    assert sorted((c["cod"] or "none", c["seed"]) for c in cells) == [("none", 0), ("none", 1), ("replace", 0), ("replace", 1)]
    assert [c["test"]["n"] for c in cells] == [12, 12, 12, 12]
    teacher_dir, = (Path(cfg.out) / "teachers").glob("toy-*/")
    teacher = json.loads((teacher_dir / "metrics.json").read_text())
    assert teacher["test"]["n"] == 12
    for run_config in (Path(cfg.out) / "cells").glob("**/run_config.json"):
        notes = json.loads(run_config.read_text())["dataset"]["notes"]
        assert any("subset of 12 of its 24 rows (max_eval)" in n for n in notes)
    summary = build_report(cfg.out)
    assert summary["datasets"]["toy"]["test_rows"] == [12]
    report = (Path(cfg.out) / "report.md").read_text()
    assert "Test rows: 12. Note: " in report and \
        "Note: 'test' evaluated on a stratified subset of 12 of its 24 rows (max_eval)." in report


def _stat_fields(pid: int | str) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state, ppid, ...), or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _children(pid: int) -> set[int]:
    """PIDs whose parent is ``pid``, the multiprocessing resource tracker left out."""
    found = set()
    for folder in Path("/proc").glob("[0-9]*"):
        fields = _stat_fields(folder.name)
        if fields is None or int(fields[1]) != pid:
            continue
        try:
            if b"resource_tracker" not in (folder / "cmdline").read_bytes():
                found.add(int(folder.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def _start_long_sweep(base: dict, tmp_path: Path):
    """`codistill sweep --workers 2` in a subprocess on cells that last far longer than a test waits;
    returns the process, its two worker PIDs and its log file."""
    import subprocess
    import sys
    import time

    cfg = {**base, "out": str(tmp_path / "long"), "methods": ["kd"], "cod": ["none"], "k": [4], "seeds": list(range(8)),
           "train": {**base["train"], "min_steps": 4000}}
    path = tmp_path / "long.yaml"
    path.write_text(json.dumps(cfg))   # JSON is YAML
    log = tmp_path / "long.log"
    proc = subprocess.Popen([sys.executable, "-m", "codistill", "sweep", str(path), "--workers", "2"],
                            stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    while len(workers) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
        workers = _children(proc.pid)
    if len(workers) < 2:
        _kill_all(proc, workers)
        pytest.fail(log.read_text()[-2000:] or "no workers started")
    return proc, workers, log


def _kill_all(proc, workers: set[int]) -> None:
    """Leave nothing running when a test ends, whatever it asserted (a no-op when all went well)."""
    import os
    import signal

    for pid in workers:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow  # a sweep process with its workers (the fast suite keeps the in-process worker pool)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigterm_stops_the_worker_processes(grid_setup: dict, tmp_path: Path) -> None:
    """`kill` on a running sweep must not leave its workers training on as orphans."""
    import signal

    proc, workers, _ = _start_long_sweep(grid_setup["given"], tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert [pid for pid in workers if _alive(pid)] == [], "workers still running after the sweep was killed"
        assert not list((tmp_path / "long" / "cells").glob("**/metrics.json"))
    finally:
        _kill_all(proc, workers)


@pytest.mark.slow  # a second sweep process with its workers (the fast suite keeps the SIGTERM case)
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_a_killed_worker_ends_the_sweep_with_an_error(grid_setup: dict, tmp_path: Path) -> None:
    """A worker killed from outside (the OOM killer) must end the sweep with a one-line error, not hang it."""
    import os
    import signal

    proc, workers, log = _start_long_sweep(grid_setup["given"], tmp_path)
    try:
        victim, other = sorted(workers)
        os.kill(victim, signal.SIGKILL)
        assert proc.wait(timeout=60) == 2
        assert not _alive(other)
        assert "error: sweep: a worker process died" in log.read_text()
    finally:
        _kill_all(proc, workers)


def test_a_reference_recipe_sweep_reports_both_protocols(grid_setup: dict, tmp_path: Path) -> None:
    from codistill.config import RECIPES

    base = {**grid_setup["given"], "methods": ["kd"], "k": [4], "seeds": [0, 1], "fluency_lm": None}
    train = {k: v for k, v in base["train"].items() if k in ("max_length", "eval_batch_size")}
    cfg = SweepConfig(out=str(tmp_path / "ref"), **{**base, "recipe": "reference", "train": {**train, "epochs": 3,
                                                                                              "eval_points": 2}})
    assert cfg.train["lr"] == RECIPES["reference"]["train"]["lr"] and cfg.distill["alpha"] == 20.0
    assert run_sweep(cfg, progress=False)["finished"] == 4
    cells = read_cells(Path(cfg.out) / "cells")
    assert all(len(c["curve"]) == 2 and c["reference"]["evaluations"] == 2 for c in cells)
    config = json.loads(next((Path(cfg.out) / "cells").glob("**/run_config.json")).read_text())
    assert config["train"]["warmup_ratio"] == 0.0 and config["distill"]["alpha"] == 20.0
    summary = build_report(cfg.out)
    ds = summary["datasets"]["toy"]
    for label, cod in (("kd", None), ("kd+cod", "replace")):
        best = [c["reference"]["validation_accuracy"] for c in cells if c["cod"] == cod]
        assert ds["reference_accuracy"][label]["4"]["mean"] == pytest.approx(sum(best) / 2)
        bias = [c["reference"]["selection_bias"] for c in cells if c["cod"] == cod]
        assert ds["selection_bias"][label]["4"]["mean"] == pytest.approx(sum(bias) / 2)
    by = {(c["cod"], c["seed"]): c["reference"]["validation_accuracy"] for c in cells}
    assert ds["paired_reference"]["kd+cod - kd"]["4"]["diffs"] == pytest.approx(
        [by[("replace", s)] - by[(None, s)] for s in (0, 1)])
    teacher_val = [c["teacher_validation"]["accuracy"] for c in cells]
    assert len(set(teacher_val)) == 1 and ds["teacher_validation_accuracy"] == teacher_val[0]
    report = (Path(cfg.out) / "report.md").read_text()
    assert "Reference protocol, the figure the CoD paper's code reports" in report and "Selection bias" in report
    assert "points of the reference protocol's figure" in report
    with open(Path(cfg.out) / "cells.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {float(r["reference_accuracy"]) for r in rows} == {c["reference"]["validation_accuracy"] for c in cells}
    with pytest.raises(ConfigError, match="sweep.recipe: unknown recipe"):
        SweepConfig(out="x", datasets=[{"data": "tweets"}], recipe="paper")

    # the paper's layout: its row, then ours under both protocols with the paired differences
    from test_benchmark_scripts import load_script

    paper = {"teacher": "T", "student": "S", "teacher_accuracy": {"sst2": 0.9}, "kd_vs_cod": {"sst2": {4: [0.5, 0.6]}}}
    script = load_script("paper_table")
    table = script.paper_table({"ref": [Path(cfg.out)]}, paper, {"toy": "sst2"})
    kd, cod = ds["reference_accuracy"]["kd"]["4"]["mean"], ds["reference_accuracy"]["kd+cod"]["4"]["mean"]
    assert "| paper (S) | its code's | KD → KD + CoD | 50.0 → 60.0 |" in table and "paper: T 90.0%" in table
    assert f"| ref (2 seeds) | reference protocol (best validation evaluation) | KD → KD + CoD | {kd * 100:.1f} → " \
           f"{cod * 100:.1f} |" in table
    d = ds["paired"]["kd+cod - kd"]["4"]
    assert f"{d['mean'] * 100:+.1f} [{d['ci_low'] * 100:+.1f}, {d['ci_high'] * 100:+.1f}] ({d['wins']}/2)" in table
    # a recipe's datasets from several sweeps (here the same summary under another dataset name) make one table;
    # the same dataset twice in one recipe is refused
    other = tmp_path / "other_summary.json"
    other.write_text(json.dumps({"datasets": {"toy2": ds}}))
    merged = script.paper_table({"ref": [Path(cfg.out), other]}, paper, {"toy": "sst2"})
    assert "## toy\n" in merged and "## toy2\n" in merged and merged.count("| ref (2 seeds) |") == 4
    with pytest.raises(SystemExit, match="dataset 'toy' is already in another sweep of recipe 'ref'"):
        script.paper_table({"ref": [Path(cfg.out), Path(cfg.out)]}, paper, {})
    # a folder's config named after '@' (a hash here), not only its last one
    chosen = json.loads((Path(cfg.out) / "sweep.json").read_text())["history"][-1]["hash"][:8]
    assert script.paper_table({"ref": [f"{cfg.out}@{chosen}"]}, paper, {"toy": "sst2"}) == table
    with pytest.raises(ConfigError, match="no sweep of a config hash starting 'no-such'"):
        script.paper_table({"ref": [f"{cfg.out}@no-such"]}, paper, {})
    # the results folder gets the report with its plots, renamed with the folder's prefix, and links that resolve
    out = tmp_path / "results"
    script.copy_results("ref_toy", Path(cfg.out), out)
    copied = (out / "ref_toy_report.md").read_text()
    links = script.PLOT_LINK.findall(copied)
    assert sorted(links) == ["ref_toy_toy_accuracy_vs_k.png", "ref_toy_toy_agreement_vs_k.png"]
    assert all((out / name).read_bytes() == (Path(cfg.out) / name.removeprefix("ref_toy_")).read_bytes()
               for name in links)
    assert json.loads((out / "ref_toy_summary.json").read_text())["datasets"]["toy"]["reference_accuracy"]
