"""The benchmark scripts' own logic: the layer cut SetFit is measured with, and the SetFit lines an arm reads."""

import argparse
import json
from pathlib import Path

import pytest
from conftest import load_benchmark

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


load_script = load_benchmark


def test_cut_keeps_evenly_spaced_blocks_and_the_sentence_transformers_files(tmp_path):
    import torch
    from safetensors.torch import load_file
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    source = tmp_path / "st"
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(source)
    (source / "modules.json").write_text(json.dumps([{"idx": 0, "name": "0", "path": "", "type": "T"},
                                                     {"idx": 1, "name": "1", "path": "1_Pooling", "type": "P"}]))
    (source / "1_Pooling").mkdir()
    (source / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    setfit_line = load_script("setfit_line")
    out = tmp_path / "cut"
    setfit_line.cut(argparse.Namespace(model=str(source), layers=2, out=str(out)))

    assert json.loads((out / "config.json").read_text())["num_hidden_layers"] == 2
    assert json.loads((out / "1_Pooling" / "config.json").read_text()) == {"pooling_mode_mean_tokens": True}
    before, after = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    assert not any(key.startswith("encoder.layer.2.") for key in after)
    for new, old in ((0, 0), (1, 2)):  # 4 -> 2 keeps blocks 0 and 2
        key = f"encoder.layer.{new}.attention.self.query.weight"
        assert torch.equal(after[key], before[f"encoder.layer.{old}.attention.self.query.weight"])
    assert torch.equal(after["embeddings.word_embeddings.weight"], before["embeddings.word_embeddings.weight"])
    with pytest.raises(SystemExit, match="exists"):
        setfit_line.cut(argparse.Namespace(model=str(source), layers=2, out=str(out)))


def test_setfit_arm_reads_only_its_own_line(tmp_path):
    rows = [{"k": 8, "seed": 0, "test_accuracy": 0.7, "validation_accuracy": 0.6, "train_seconds": 1.0},
            {"name": "setfit-3l", "k": 8, "seed": 0, "test_accuracy": 0.55, "validation_accuracy": 0.5,
             "train_seconds": 1.0}]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    compare = load_script("student_compare")
    assert compare.arm_rows(tmp_path, "setfit", "sst2")[(8, 0)]["accuracy"] == 0.7
    assert compare.arm_rows(tmp_path, "setfit-3l", "sst2")[(8, 0)]["accuracy"] == 0.55
    with pytest.raises(SystemExit, match="setfit-6l"):
        compare.arm_rows(tmp_path, "setfit-6l", "sst2")


def test_compare_header_names_the_reference_teacher_and_sizes_every_arm_against_it():
    compare = load_script("student_compare")

    def rows(student, teacher=None, accuracy=None, no_teacher=False):
        return {(16, s): {"student_parameters": student, "teacher_parameters": teacher, "teacher_accuracy": accuracy,
                          "no_teacher": no_teacher} for s in (0, 1, 2)}

    arms = [("kd", rows(20, teacher=100, accuracy=0.9)), ("setfit-6l", rows(25, no_teacher=True)),
            ("old", rows(None, teacher=100))]
    lines = compare.header("sst2", arms)
    assert lines[1] == "Teacher of the reference arm kd: 100 parameters, test accuracy 90.00%. Every ratio below is against it."
    assert lines[2] == "- kd: 20 parameters, 5.0× fewer than that teacher; seeds 0–2 (3), 3 cells"
    assert lines[3] == "- setfit-6l: 25 parameters, 4.0× fewer than that teacher, trained without a teacher; seeds 0–2 (3), 3 cells"
    assert lines[4] == "- old: parameters not recorded; seeds 0–2 (3), 3 cells"
    untaught_first = compare.header("sst2", arms[1:2])
    assert untaught_first[1] == "The reference arm setfit-6l has no teacher; no size ratio is given."
    assert "fewer" not in untaught_first[2]


def test_compare_keeps_only_the_chosen_k_and_names_an_arm_left_empty():
    compare = load_script("student_compare")
    arms = [("kd", {(16, 0): {"a": 1}, (64, 0): {"a": 2}, (256, 0): {"a": 3}}), ("setfit", {(16, 0): {"a": 4}})]
    kept = compare.keep_k(arms, [16, 64])
    assert [sorted(rows) for _, rows in kept] == [[(16, 0), (64, 0)], [(16, 0)]]
    with pytest.raises(SystemExit, match="no cells of arm\\(s\\) setfit at these k"):
        compare.keep_k(arms, [64, 256])


def test_compare_arm_takes_one_configs_cells_or_a_cells_csv_and_pairs_the_reference_figures(tmp_path):
    compare = load_script("student_compare")
    from codistill.experiments.grid import method_label

    def cell(seed, test, reference, student):
        return {"dataset": "sst2", "method": "kd", "k": 32, "seed": seed, "cod": None, "test": {
            "accuracy": test, "macro_f1": test, "mcc": 0.0}, "validation": {"accuracy": reference - 0.01},
            "reference": {"validation_accuracy": reference, "step": 40, "evaluations": 5},
            "n_originals": 32, "n_counterfactuals": 0, "n_train": 32, "steps": 400, "train_seconds": 1.0,
            "student_parameters": student, "teacher_parameters": 100, "teacher_test": {"accuracy": 0.9}}

    root = tmp_path / "shared"
    history = []
    for name, student, shift in (("small", 20, 0.0), ("large", 50, 0.1)):  # two sweeps in one folder
        folders = {}
        for seed in (0, 1, 2):
            folder = f"cells/sst2/{method_label('kd', None)}/k32_s{seed}-{name}"
            (root / folder).mkdir(parents=True)
            (root / folder / "metrics.json").write_text(json.dumps(cell(seed, 0.6 + shift + seed / 100,
                                                                        0.7 + shift, student)))
            folders[folder] = "x"
        history.append({"hash": f"{name}0123", "config": {}, "cells": folders})
    (root / "sweep.json").write_text(json.dumps({"history": history}))

    large = compare.arm_rows(f"{root}@large", "kd", "sst2")
    assert {r["student_parameters"] for r in large.values()} == {50}
    assert large[(32, 1)]["accuracy"] == pytest.approx(0.71)
    with pytest.raises(SystemExit, match="no finished cell labelled 'kd\\+cod'"):
        compare.arm_rows(f"{root}@large", "kd+cod", "sst2")
    everything = compare.source_rows(root, "sst2")
    assert len(everything) == 6

    import csv

    table = tmp_path / "cells.csv"
    small_rows = compare.source_rows(f"{root}@small", "sst2")
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(small_rows[0]))
        writer.writeheader()
        writer.writerows(small_rows + [{**small_rows[0], "dataset": "cola"}])
    small = compare.arm_rows(table, "kd", "sst2")
    assert sorted(small) == [(32, 0), (32, 1), (32, 2)]
    assert small[(32, 0)]["student_parameters"] is None and small[(32, 2)]["accuracy"] == pytest.approx(0.62)

    md = compare.tables([("small", small), ("large", large)], [32])
    assert "Reference protocol: best validation evaluation" in md
    paired = md.split("reference-protocol accuracy points")[1]
    assert "| large | +10.0 [+10.0, +10.0] (3/3) |" in paired


# -- cod_recipe.py: CoD recipes against KD from finished cells -------------------------------------------------

def recipe_cells(values: dict[int, list[float]], cod=None, alpha=1.0, cf=None, dataset="sst2", test_shift=0.0,
                 allow_empty=False):
    """Finished cells of one arm, as metrics.json holds them: ``values`` maps k to validation accuracy per seed."""
    import hashlib

    cells = []
    for k, accuracies in values.items():
        for seed, acc in enumerate(accuracies):
            run = {"k": k, "seed": seed, "cod": cod, "allow_empty_counterfactuals": allow_empty, "llm_teacher": None,
                   "student": {"model": "minilm", "layers": 6}, "distill": {"method": "kd", "alpha": alpha},
                   "train": {"epochs": 30, "seed": seed, "eval_points": 0}}
            if cf:
                run["cf"] = {"hard_labels": True, "max_target_prob": None, "rebalance": False, **cf}
            made = {"file": {"generator": {"name": "edits", "max_edits": 3}, "on_failure": "skip", "seed": seed},
                    "rows": f"{k}-{seed}"} if cod else None
            recipe = {"data": {"splits": {"test": "t"}}, "teacher": "f" * 64, "run": run, "counterfactuals": made}
            cells.append({"dataset": dataset, "method": "kd", "k": k, "seed": seed, "cod": cod,
                          "validation": {"accuracy": acc}, "test": {"accuracy": acc + test_shift},
                          "n_counterfactuals": k // 2 - 1 if cod else 0, "counterfactuals_skipped": 1 if cod else 0,
                          "counterfactuals_far_from_boundary": 0, "counterfactuals_rebalanced": 0,
                          "train_seconds": 10.0 * k, "cell_recipe": recipe,
                          "cell_key": hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()})
    return cells


def write_sweep(root: Path, cells: list[dict]) -> Path:
    from codistill.experiments.grid import method_label

    for c in cells:
        folder = root / "cells" / c["dataset"] / method_label(c["method"], c["cod"]) / \
            f"k{c['k']}_s{c['seed']}-{c['cell_key'][:12]}"
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps(c))
    return root


def test_cod_recipe_pairs_a_cod_arm_that_allows_empty_sets_with_plain_kd(tmp_path):
    """allow_empty_counterfactuals is read by CoD cells only (a margin filter may empty a small cell), so such an
    arm is paired with the KD arm that lacks it rather than left unpaired."""
    recipe = load_script("cod_recipe")
    kd = write_sweep(tmp_path / "kd", recipe_cells({8: [0.5, 0.5, 0.5]}))
    cod = write_sweep(tmp_path / "cod", recipe_cells({8: [0.6, 0.5, 0.4]}, cod="replace",
                                                     cf={"max_target_prob": 0.8}, allow_empty=True))
    ds = recipe.summarize([kd, cod], test=False)["datasets"]["sst2"]
    (row,) = ds["paired"]["validation"]
    assert row["baseline"] == "kd" and "allow_empty_counterfactuals=True" in row["arm"]
    assert row["by_k"][8]["mean"] == pytest.approx(0.0) and row["by_k"][8]["wins"] == 1


def test_cod_recipe_heads_a_dataset_by_the_sweeps_name_not_the_datas_own(tmp_path):
    recipe = load_script("cod_recipe")
    root = write_sweep(tmp_path / "s", recipe_cells({8: [0.5, 0.6, 0.7]}, dataset="yelp")
                       + recipe_cells({8: [0.6, 0.6, 0.6]}, cod="replace", dataset="yelp"))
    for path in root.glob("cells/**/metrics.json"):  # the data's own name, as a cell records it
        path.write_text(json.dumps({**json.loads(path.read_text()), "dataset": "yelp_shen2017"}))
    assert list(recipe.summarize([root], test=False)["datasets"]) == ["yelp"]


def test_cod_recipe_names_arms_by_their_differences_and_pairs_alpha_20_with_alpha_20(tmp_path):
    recipe = load_script("cod_recipe")
    kd = write_sweep(tmp_path / "kd", recipe_cells({8: [0.5, 0.5, 0.5], 16: [0.6, 0.6, 0.6]})
                     + recipe_cells({8: [0.60, 0.62, 0.64]}, alpha=20.0))
    cod = write_sweep(tmp_path / "cod", recipe_cells({8: [0.55, 0.5, 0.5]}, cod="replace")
                      + recipe_cells({8: [0.5, 0.4, 0.5]}, cod="replace", cf={"hard_labels": False})
                      + recipe_cells({8: [0.63, 0.62, 0.70]}, cod="replace", alpha=20.0))
    result = recipe.summarize([kd, cod], test=False)
    ds = result["datasets"]["sst2"]
    assert ds["reference"] == "kd"
    assert {a["name"]: a["cells"] for a in ds["arms"]} == {
        "kd": 6, "kd [distill.alpha=20.0]": 3, "kd+cod": 3, "kd+cod [cf.hard_labels=False]": 3,
        "kd+cod [distill.alpha=20.0]": 3}
    rows = {r["arm"]: r for r in ds["paired"]["validation"]}
    assert {arm: r["baseline"] for arm, r in rows.items()} == {
        "kd+cod": "kd", "kd+cod [cf.hard_labels=False]": "kd", "kd+cod [distill.alpha=20.0]": "kd [distill.alpha=20.0]"}
    alpha = rows["kd+cod [distill.alpha=20.0]"]["by_k"][8]  # diffs 0.03, 0.00, 0.06
    assert alpha["mean"] == pytest.approx(0.03) and alpha["wins"] == 2 and alpha["n"] == 3
    assert rows["kd+cod [cf.hard_labels=False]"]["by_k"][8]["mean"] == pytest.approx(-0.1 / 3)
    assert "test" not in ds["paired"]
    assert recipe.differences({"cf": {"hard_labels": False, "rebalance": False}, "k": 8},
                              {"cf": {"hard_labels": True, "rebalance": False}}) == {"cf.hard_labels": False, "k": 8}


def test_cod_recipe_prices_augment_against_kd_at_k_and_at_2k(tmp_path):
    recipe = load_script("cod_recipe")
    root = write_sweep(tmp_path / "s", recipe_cells({8: [0.5, 0.6, 0.7], 16: [0.6, 0.7, 0.8]})
                       + recipe_cells({8: [0.6, 0.6, 0.6]}, cod="augment"))
    rows = recipe.summarize([root], test=True)["datasets"]["sst2"]["paired"]
    same, double = rows["validation"]
    assert (same["arm"], same["factor"], double["factor"]) == ("kd+cod-augment", 1, 2)
    assert same["by_k"][8]["mean"] == pytest.approx(0.0) and double["by_k"][8]["mean"] == pytest.approx(-0.1)
    assert list(double["by_k"]) == [8] and len(rows["test"]) == 2
    assert "| kd+cod-augment | kd at 2k | -10.00" in recipe.render(recipe.summarize([root], test=False))
    md = recipe.render(recipe.summarize([root], test=True))  # the test means follow the confirmation
    test_part = md[md.index("### Test accuracy (%)"):]
    assert "| kd | 6 | 60.0 ± 10.0 (3) | 70.0 ± 10.0 (3) |" in test_part and "| kd+cod-augment | 3 | 60.0 ± 0.0 (3) | - |" in test_part


def test_cod_recipe_chooses_the_best_worst_k_not_the_best_mean(tmp_path, capsys):
    recipe = load_script("cod_recipe")
    kd = {8: [0.5, 0.5, 0.5], 16: [0.6, 0.6, 0.6]}
    cells = (recipe_cells(kd)
             + recipe_cells({8: [0.6, 0.6, 0.6], 16: [0.59, 0.59, 0.59]}, cod="replace")  # +10, -1
             + recipe_cells({8: [0.51, 0.51, 0.51], 16: [0.61, 0.61, 0.61]}, cod="replace", cf={"rebalance": True})
             + recipe_cells({8: [0.9, 0.9], 16: [0.9, 0.9]}, cod="replace", cf={"max_target_prob": 0.8})  # 2 seeds
             + recipe_cells({8: [0.9, 0.9, 0.9], 16: [0.9, 0.9, 0.9]}, cod="replace", alpha=5.0))  # no KD at α=5
    root = write_sweep(tmp_path / "s", cells)
    recipe.main([str(root), "--out", str(tmp_path / "out")])
    ds = json.loads((tmp_path / "out" / "cod_recipe.json").read_text())["datasets"]["sst2"]
    assert ds["ks"] == [8, 16] and ds["winner"] == "kd+cod [cf.rebalance=True]"
    assert [(r["arm"], round(100 * r["worst"], 6), round(100 * r["mean"], 6)) for r in ds["ranking"]] == [
        ("kd+cod [cf.rebalance=True]", 1.0, 1.0), ("kd+cod", -1.0, 4.5)]
    assert {e["arm"]: e["reason"] for e in ds["excluded"]} == {
        "kd+cod [cf.max_target_prob=0.8]": "fewer than 3 paired seeds at k = 8 (2), 16 (2)",
        "kd+cod [distill.alpha=5.0]": "no KD arm with the same options (unpaired)"}
    md = (tmp_path / "out" / "cod_recipe.md").read_text()
    assert "| 2 | kd+cod | -1.00 | +4.50 |" in md and "Winner: **kd+cod [cf.rebalance=True]**." in md
    assert "| 2 | kd+cod | -1.00 | +4.50 |" in capsys.readouterr().out


def test_cod_recipe_refuses_a_missing_or_unfinished_folder_in_one_line(tmp_path, capsys):
    recipe = load_script("cod_recipe")
    (tmp_path / "empty" / "cells").mkdir(parents=True)
    for folder, message in (("gone", "no such folder"), ("empty", "no finished cell")):
        with pytest.raises(SystemExit) as exit_:
            recipe.main([str(tmp_path / folder), "--out", str(tmp_path / "out")])
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"cod_recipe.py: {tmp_path / folder}: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("config", sorted(p.name for p in (BENCHMARKS / "cod_recipe").glob("*.yaml")))
def test_cod_recipe_configs_parse_and_share_their_folder_teacher_and_kd_cells(config):
    from codistill.experiments import SweepConfig

    cfg = SweepConfig.from_yaml(BENCHMARKS / "cod_recipe" / config)
    dataset = config.split("_")[0]
    if not (BENCHMARKS / "cod_recipe" / f"{dataset}_replace.yaml").is_file():
        # a confirmation without a recipe search pairs with the paper table's KD cells, in its folder
        paper = SweepConfig.from_yaml(BENCHMARKS / "paper_table" / f"{dataset}_default.yaml")
        assert (cfg.out, cfg.datasets, cfg.student, cfg.generator, cfg.train) == \
            (paper.out, paper.datasets, paper.student, paper.generator, paper.train)
        assert set(paper.seeds) <= set(cfg.seeds)
        return
    first = SweepConfig.from_yaml(BENCHMARKS / "cod_recipe" / f"{dataset}_replace.yaml")
    assert (cfg.out, cfg.datasets, cfg.student, cfg.generator) == \
        (first.out, first.datasets, first.student, first.generator)
    assert set(first.seeds) <= set(cfg.seeds)  # the confirmation adds seeds to the search's
    assert "eval_points" not in cfg.train  # chosen on the final weights; KD cells shared by every candidate
    if config.startswith("sst2_"):  # the paper table's folder and trained teacher
        paper = SweepConfig.from_yaml(BENCHMARKS / "paper_table" / "sst2_default.yaml")
        assert (cfg.out, cfg.datasets) == (paper.out, paper.datasets)
