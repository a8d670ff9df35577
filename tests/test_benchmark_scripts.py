"""The benchmark scripts' own logic: the layer cut SetFit is measured with, and the SetFit lines an arm reads."""

import argparse
import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
