"""How a CoD run uses its counterfactuals (``RunConfig.cf``): CE on originals only, the boundary filter, the
rebalancing, the sweep keys they join, the CLI flags, and the weak-teacher warning."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from conftest import fast_train, run_distill, synthetic_rows, write_csv

from codistill.config import CounterfactualUse, RunConfig, StudentConfig
from codistill.counterfactuals.rows import cod_examples
from codistill.data import LabeledTexts, load_dataset, sample_from
from codistill.errors import ConfigError, DataError

NAMES = ["negative", "positive"]


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "toy"
    write_csv(folder / "train.csv", synthetic_rows(40, seed=1))
    write_csv(folder / "test.csv", synthetic_rows(12, seed=3))
    return folder


@pytest.fixture(scope="module")
def toy(toy_folder: Path):
    return load_dataset(toy_folder, label_names=NAMES)


def write_cf(path: Path, sample, flipped=None, probs=None) -> Path:
    """One counterfactual row per original of ``sample`` (target: the other class); ``flipped`` and ``probs``
    (the target's probability; ``None`` leaves ``probs_after`` out) per row."""
    rows = []
    for i, (idx, text, y) in enumerate(zip(sample.indices, sample.texts, sample.labels)):
        row = {"pool_index": idx, "text": text, "label": y, "counterfactual": f"{text} not {i}",
               "target_label": 1 - y, "flipped": True if flipped is None else flipped[i]}
        if probs is not None and probs[i] is not None:
            row["probs_after"] = [probs[i], 1 - probs[i]] if y == 1 else [1 - probs[i], probs[i]]
        rows.append(row)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- CE on the rows with hard labels ------------------------------------------------------------------------


def _step(hard):
    from codistill.losses import StepOutputs

    torch.manual_seed(0)
    return StepOutputs(labels=torch.tensor([0, 1, 1, 0]), mask=torch.ones(4, 3), student_logits=torch.randn(4, 2),
                       teacher_logits=torch.randn(4, 2), hard=None if hard is None else torch.tensor(hard))


def test_ce_averages_over_the_rows_with_hard_labels_only() -> None:
    from codistill.config import LossTerm
    from codistill.losses import CETerm, KDTerm

    ce, kd = CETerm(LossTerm("ce")), KDTerm(LossTerm("kd"))
    every = _step(None)
    assert ce(every) == pytest.approx(float(F.cross_entropy(every.student_logits, every.labels)))
    mixed = _step([True, False, True, False])
    assert ce(mixed) == pytest.approx(float(F.cross_entropy(mixed.student_logits[[0, 2]], mixed.labels[[0, 2]])))
    none = _step([False] * 4)
    assert float(ce(none)) == 0.0 and torch.isfinite(ce(none) + kd(none)) and float(kd(none)) > 0


def test_training_rows_mark_counterfactuals_soft_and_the_trainer_reads_the_mark(tmp_path: Path, toy,
                                                                                tiny_student: Path) -> None:
    from codistill.config import DistillConfig, method_terms
    from codistill.models import make_student
    from codistill.runs import training_rows
    from codistill.trainer import train_classifier

    cf = write_cf(tmp_path / "cf.jsonl", sample_from(toy, 2, 0))
    run = RunConfig(teacher="t", k=4, counterfactuals=str(cf), cod="replace")
    assert training_rows(toy, run)[1].hard is None                              # the paper's: every label hard
    _, rows, _ = training_rows(toy, replace(run, cf=CounterfactualUse(hard_labels=False)))
    assert rows.hard == [True, True, False, False]
    soft = LabeledTexts(rows.texts, rows.labels, [False] * len(rows))
    student, _ = make_student(str(tiny_student), 1, "pretrained", NAMES)
    summary = train_classifier(student, soft, method_terms(DistillConfig(method="finetune")),
                               fast_train(min_steps=2, epochs=1), num_classes=2, progress=False)
    assert [r["ce"] for r in summary.log] == [0.0, 0.0]


def test_labeled_texts_join_and_subset_keep_the_hard_flags() -> None:
    a, b = LabeledTexts(["x"], [0]), LabeledTexts(["y", "z"], [1, 0], [False, True])
    assert (a + a).hard is None and (a + b).hard == [True, False, True]
    assert (a + b).subset([2, 1]).hard == [True, False]


# -- which counterfactuals: the boundary filter and rebalancing ----------------------------------------------


def test_max_target_prob_keeps_the_counterfactuals_near_the_boundary(tmp_path: Path, toy) -> None:
    sample = sample_from(toy, 4, 0)
    cf = write_cf(tmp_path / "cf.jsonl", sample, flipped=[True, True, True, False], probs=[0.55, 0.97, 0.7, None])
    extra, info = cod_examples(cf, sample, NAMES, use=CounterfactualUse(max_target_prob=0.8))
    assert extra.texts == [f"{sample.texts[0]} not 0", f"{sample.texts[2]} not 2"]
    assert info == {"added": 2, "skipped_not_flipped": 1, "skipped_far_from_boundary": 1, "skipped_rebalance": 0}
    assert cod_examples(cf, sample, NAMES)[1]["added"] == 3                      # off: every flipped one
    missing = write_cf(tmp_path / "missing.jsonl", sample, probs=[0.6, None, 0.6, 0.6])
    with pytest.raises(DataError, match=r"missing\.jsonl, line 2: no usable 'probs_after'.*cf\.max_target_prob"):
        cod_examples(missing, sample, NAMES, use=CounterfactualUse(max_target_prob=0.8))
    with pytest.raises(ConfigError, match=r"cf\.max_target_prob must be in \(1/2, 1\]"):
        cod_examples(cf, sample, NAMES, use=CounterfactualUse(max_target_prob=0.5))


def test_an_emptied_cod_run_names_the_step_that_removed_its_counterfactuals(tmp_path: Path, toy) -> None:
    from codistill.cod import NoCounterfactuals, check_usable
    sample = sample_from(toy, 4, 0)
    cf = write_cf(tmp_path / "cf.jsonl", sample, flipped=[True, True, False, False], probs=[0.95, 0.97, None, None])
    _, info = cod_examples(cf, sample, NAMES, use=CounterfactualUse(max_target_prob=0.8))
    with pytest.raises(NoCounterfactuals, match=r"cf\.jsonl: none of the 4 originals .*\(the teacher was not flipped: "
                       r"2; cf\.max_target_prob removed \(too far from the boundary\): 2\)"):
        check_usable(info["added"], 4, str(cf), False, info)
    with pytest.raises(NoCounterfactuals, match=r"\(the teacher was flipped on none\)"):
        check_usable(0, 4, "x.jsonl", False)
    check_usable(0, 4, "x.jsonl", True, info)  # allowed


def test_rebalance_keeps_as_many_per_target_as_the_rarest_target_has(tmp_path: Path, toy) -> None:
    sample = sample_from(toy, 8, 0)
    target_1 = [y == 0 for y in sample.labels]             # originals labelled 0 target class 1
    flipped = [not t or i < 3 for i, t in enumerate(target_1)]  # of class 1's targets, only those early on flipped
    cf = write_cf(tmp_path / "cf.jsonl", sample, flipped=flipped)
    kept_1 = sum(f and t for f, t in zip(flipped, target_1))
    assert 0 < kept_1 < 4
    extra, info = cod_examples(cf, sample, NAMES, use=CounterfactualUse(rebalance=True))
    assert extra.labels.count(0) == extra.labels.count(1) == kept_1
    assert info["skipped_rebalance"] == 4 - kept_1 and info["skipped_not_flipped"] == 4 - kept_1
    first_0 = [f"{t} not {i}" for i, (t, y) in enumerate(zip(sample.texts, sample.labels)) if y == 1][:kept_1]
    assert [t for t, y in zip(extra.texts, extra.labels) if y == 0] == first_0   # the first, in sample order
    none_1 = write_cf(tmp_path / "none.jsonl", sample, flipped=[not t for t in target_1])
    extra, info = cod_examples(none_1, sample, NAMES, use=CounterfactualUse(rebalance=True))
    assert len(extra) == 0 and info["skipped_rebalance"] == 4  # a targeted class with none leaves none


# -- options refused ----------------------------------------------------------------------------------------


def test_bad_cf_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="cf .*only a CoD run"):
        RunConfig(teacher="t", cf=CounterfactualUse(rebalance=True))
    with pytest.raises(ConfigError, match="cf .*only a CoD run"):
        RunConfig(teacher="t", counterfactuals="x.jsonl", cf={"hard_labels": False})
    for bad in (0, 1.5, -0.2):
        with pytest.raises(ConfigError, match=r"cf\.max_target_prob must be in \(0, 1\]"):
            CounterfactualUse(max_target_prob=bad)
    with pytest.raises(ConfigError, match="cf.rebalance: expected true or false"):
        CounterfactualUse(rebalance="yes")
    assert RunConfig(teacher="t", cod="replace", cf={"rebalance": True}).cf == CounterfactualUse(rebalance=True)


# -- sweeps: CoD cells keyed by cf, baseline cells not ------------------------------------------------------


def test_sweep_cells_are_keyed_by_cod_only_options_only_when_cod(tmp_path: Path, toy_folder: Path, toy) -> None:
    from codistill.experiments import SweepConfig
    from codistill.experiments.artifacts import cell_recipe, config_hash
    from codistill.experiments.grid import Cell
    from codistill.experiments.runner import cell_run

    cf = {"path": write_cf(tmp_path / "cf.jsonl", sample_from(toy, 2, 0)), "recipe": {"k": 4, "generator": "edits"}}

    def recipes(**options) -> dict[str, dict]:
        cfg = SweepConfig(out=str(tmp_path / "s"), datasets=[{"data": str(toy_folder)}], cod=["none", "replace"],
                          k=[4], seeds=[0], **options)
        runs = {mode: cell_run(cfg, Cell("toy", "kd", mode, 4, 0), 0, "t", str(cf["path"]) if mode != "none" else None)
                for mode in cfg.cod}
        return {mode: cell_recipe(toy, {"key": "t"}, run, cf if mode != "none" else None) for mode, run in runs.items()}

    def keys(**options) -> dict[str, str]:
        return {mode: config_hash(recipe) for mode, recipe in recipes(**options).items()}

    assert all("cf" not in r["run"] for r in recipes(cf={"hard_labels": True}).values())  # keys as before cf
    left_out, default, soft = keys(), keys(cf={"hard_labels": True}), keys(cf={"hard_labels": False})
    assert left_out == default                            # the default adds nothing to any key
    assert soft["none"] == left_out["none"]               # the baseline ignores cf
    assert soft["replace"] != left_out["replace"]         # a CoD cell is keyed by it
    empty = keys(allow_empty_counterfactuals=True)        # read by CoD cells only, like cf
    assert empty["none"] == left_out["none"] and empty["replace"] != left_out["replace"]
    assert "cf" not in SweepConfig(out="x", datasets=[{"data": "tweets"}]).to_dict()
    with pytest.raises(ConfigError, match="sweep.cf: only CoD cells use it"):
        SweepConfig(out="x", datasets=[{"data": "tweets"}], cod=["none"], cf={"rebalance": True})
    with pytest.raises(ConfigError, match="sweep.cf: unknown option"):
        SweepConfig(out="x", datasets=[{"data": "tweets"}], cf={"rebalnce": True})


# -- the command line ---------------------------------------------------------------------------------------


def test_cli_flags_reach_the_run(capsys, toy_folder: Path, tmp_path: Path, monkeypatch) -> None:
    import codistill.runs
    from codistill.cli import main
    from codistill.errors import CodistillError

    applied = []

    def fake(dataset, run, *args, **kwargs):
        applied.append(run)
        raise CodistillError("stopped by the test")

    monkeypatch.setattr(codistill.runs, "distill", fake)
    base = ["distill", "--data", str(toy_folder), "--teacher", "t", "--out", str(tmp_path / "o"), "--k", "4"]
    assert main(base + ["--cod"]) == 2 and applied[-1].cf == CounterfactualUse()
    assert main(base + ["--cod", "--cf-soft-labels-only", "--cf-max-target-prob", "0.9", "--cf-rebalance"]) == 2
    assert applied[-1].cf == CounterfactualUse(hard_labels=False, max_target_prob=0.9, rebalance=True)
    config = tmp_path / "c.yaml"
    config.write_text("cf:\n  rebalance: true\n")
    assert main(base + ["--cod", "--config", str(config)]) == 2 and applied[-1].cf.rebalance
    capsys.readouterr()
    assert main(base + ["--cf-rebalance"]) == 2 and len(applied) == 3
    assert "only a CoD run" in capsys.readouterr().err


# -- the weak-teacher warning -------------------------------------------------------------------------------


def test_a_cod_run_on_a_weak_teacher_is_warned_and_kd_is_not(tmp_path: Path, toy, tiny_teacher: Path,
                                                              tiny_student: Path) -> None:
    from codistill.cod import WEAK_TEACHER_MCC, weak_teacher_warning

    assert weak_teacher_warning("replace", WEAK_TEACHER_MCC) is None and weak_teacher_warning(None, 0.1) is None
    assert "MCC on validation is 0.44" in weak_teacher_warning("replace", 0.44, "validation")
    cf = write_cf(tmp_path / "cf.jsonl", sample_from(toy, 2, 0), probs=[0.6, 0.9])
    common = dict(k=4, student=StudentConfig(model=str(tiny_student), layers=1),
                  train=fast_train(min_steps=2, epochs=1), progress=False, save_model=False)
    cod = run_distill(toy, tiny_teacher, tmp_path / "cod", cod="replace", counterfactuals=cf,
                      cf=CounterfactualUse(hard_labels=False, max_target_prob=0.8), **common)
    kd = run_distill(toy, tiny_teacher, tmp_path / "kd", **common)
    assert cod["teacher_test"]["mcc"] < WEAK_TEACHER_MCC                          # a random tiny teacher
    assert len(cod["warnings"]) == 1 and "compare this run with KD" in cod["warnings"][0]
    assert kd["warnings"] == []
    saved = json.loads((tmp_path / "cod" / "metrics.json").read_text())
    assert saved["warnings"] == cod["warnings"]
    assert (saved["n_counterfactuals"], saved["counterfactuals_far_from_boundary"]) == (1, 1)
    assert json.loads((tmp_path / "cod" / "run_config.json").read_text())["cf"]["hard_labels"] is False


def test_the_report_shows_a_cells_warning(tmp_path: Path) -> None:
    from codistill.experiments.report import render_markdown, summarize

    cell = {"dataset": "toy", "method": "kd", "k": 4, "seed": 0, "n_originals": 2, "n_counterfactuals": 2,
            "n_train": 4, "steps": 2, "train_seconds": 1.0, "test": {"accuracy": 0.5, "macro_f1": 0.5, "mcc": 0.0, "n": 12}}
    for cod, warnings in (("replace", ["the teacher's MCC on test is 0.10"]), (None, [])):
        folder = tmp_path / "cells" / "toy" / str(cod)
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({**cell, "cod": cod, "warnings": warnings}))
    assert "Warning: the teacher's MCC on test is 0.10." in render_markdown(summarize(tmp_path), "toy")


def test_the_report_names_a_dataset_by_its_sweep_name(tmp_path: Path) -> None:
    """A sweep's ``name: yelp`` for data called yelp_shen2017: tables, counterfactual sets, teacher and loading
    notes are all found under the sweep's name, with or without the sweep's history."""
    from codistill.experiments.report import summarize

    cell = {"dataset": "yelp_shen2017", "method": "kd", "cod": None, "k": 4, "seed": 0, "n_originals": 4,
            "n_counterfactuals": 0, "n_train": 4, "steps": 2, "train_seconds": 1.0,
            "test": {"accuracy": 0.5, "macro_f1": 0.5, "mcc": 0.0, "n": 12}}
    notes = ["'train' split drawn from 'validation' (the dataset has none)", "'test' evaluated on a subset"]
    folder = tmp_path / "cells" / "yelp" / "kd" / "k4_s0-abc"
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(cell))
    (folder / "run_config.json").write_text(json.dumps({"dataset": {"name": "yelp_shen2017", "notes": notes}}))
    (tmp_path / "counterfactuals" / "yelp").mkdir(parents=True)
    (tmp_path / "counterfactuals" / "yelp" / "edits_k8_s0-x.summary.json").write_text(json.dumps({"originals": 4}))
    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / "preds.json").write_text(json.dumps({"metrics": {"accuracy": 0.9}, "parameters": 7}))
    without = summarize(tmp_path)
    (tmp_path / "sweep.json").write_text(json.dumps({"history": [{
        "hash": "h", "config": {}, "cells": {"cells/yelp/kd/k4_s0-abc": "key"},
        "artifacts": {"yelp": {"teacher_predictions": "teachers/preds.json",
                               "counterfactuals": ["counterfactuals/yelp/edits_k8_s0-x.jsonl"]}}}]}))
    with_history = summarize(tmp_path)
    for summary in (without, with_history):
        assert list(summary["datasets"]) == ["yelp"] and summary["rows"][0]["dataset"] == "yelp"
        ds = summary["datasets"]["yelp"]
        assert ds["notes"] == notes and [c["originals"] for c in ds["counterfactuals"]] == [4]
    assert (with_history["datasets"]["yelp"]["teacher_accuracy"], with_history["datasets"]["yelp"]["teacher_parameters"]) == (0.9, 7)
