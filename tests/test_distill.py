"""The trainer: what a step changes, the teacher cache, determinism, every method end to end, errors."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import fast_train, lwd_terms, run_distill, synthetic_rows, write_csv

from codistill.config import DistillConfig, LayerMatch, StudentConfig, TrainConfig
from codistill.counterfactuals.rows import extra_examples as read_extra_examples
from codistill.data import LabeledTexts, load_dataset
from codistill.errors import ConfigError, DataError
from codistill.models import load_classifier, make_student
from codistill.runs import train_teacher
from codistill.trainer import DistillModule, build_teacher_cache, collate, encode, fit, plan_steps, teacher_forward

FAST = fast_train()


@pytest.fixture(scope="module")
def toy_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("data") / "toy"
    write_csv(folder / "train.csv", synthetic_rows(80, seed=1))
    write_csv(folder / "validation.csv", synthetic_rows(12, seed=2))
    write_csv(folder / "test.csv", synthetic_rows(24, seed=3))
    return folder


@pytest.fixture(scope="module")
def toy(toy_folder: Path):
    return load_dataset(toy_folder, label_names=["negative", "positive"])


@pytest.fixture(scope="module")
def trained_teacher(tmp_path_factory, tiny_teacher: Path, toy) -> Path:
    out = tmp_path_factory.mktemp("trained_teacher")
    train_teacher(toy, str(tiny_teacher), out, train=replace(FAST, epochs=6), progress=False)
    return out


def _student_and_teacher(teacher_dir: Path, student_dir: Path):
    teacher = load_classifier(str(teacher_dir), ["negative", "positive"])
    teacher.model.requires_grad_(False)
    torch.manual_seed(0)
    student, _ = make_student(str(student_dir), None, "pretrained", ["negative", "positive"])
    return teacher, student


def test_plan_steps_rule() -> None:
    cfg = TrainConfig(epochs=30, min_steps=50, batch_size=8)
    assert plan_steps(8, cfg) == (1, 50)       # floor on steps
    assert plan_steps(64, cfg) == (8, 240)     # epochs * steps per epoch
    assert plan_steps(64, replace(cfg, max_steps=100)) == (8, 100)
    assert plan_steps(64, replace(cfg, grad_accum=2)) == (4, 120)


def test_lwd_step_changes_student_and_projections_never_teacher(tiny_teacher: Path, tiny_student: Path, toy) -> None:
    teacher, student = _student_and_teacher(tiny_teacher, tiny_student)
    terms = lwd_terms(student, teacher)
    proj = terms[2].projections
    data = LabeledTexts(toy["train"].texts[:8], toy["train"].labels[:8])
    enc = encode(student.tokenizer, data.texts, 32)
    module = DistillModule(student.model, terms)
    cache = build_teacher_cache(teacher, enc, module.teacher_layers)
    t_before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    s_before = {k: v.clone() for k, v in student.model.state_dict().items()}
    p_before = [p.clone() for p in proj.parameters()]
    fit(module, student, enc, data.labels, replace(FAST, min_steps=1, epochs=1, max_steps=1), cache=cache,
        teacher_layers=module.teacher_layers, progress=False)
    assert all(torch.equal(v, teacher.model.state_dict()[k]) for k, v in t_before.items())
    changed = [k for k, v in s_before.items() if not torch.equal(v, student.model.state_dict()[k])]
    assert "classifier.weight" in changed and any("encoder.layer" in k for k in changed)
    assert all("position_ids" not in k for k in changed)
    assert all(not torch.equal(a, b) for a, b in zip(p_before, proj.parameters()))  # projections were optimized


@pytest.mark.parametrize("which", ["bert", "qwen"])
def test_cached_and_live_teacher_give_identical_losses(which: str, tiny_teacher: Path, tiny_student: Path,
                                                       tiny_qwen: Path, toy) -> None:
    if which == "bert":
        teacher, student = _student_and_teacher(tiny_teacher, tiny_student)
    else:
        teacher, student = _student_and_teacher(tiny_qwen, tiny_qwen)
    module = DistillModule(student.model, lwd_terms(student, teacher, include_embeddings=True)).eval()
    layers = module.teacher_layers
    texts = toy["train"].texts[:6]
    texts[0] = texts[0] + " and the plot was fine and the movie was very lovely"  # unequal lengths -> padding
    labels = torch.tensor(toy["train"].labels[:6])
    enc = encode(student.tokenizer, texts, 32)
    cache = build_teacher_cache(teacher, enc, layers, batch_size=4)
    idx = [5, 0, 3, 1]
    batch = collate(student.tokenizer, enc, idx)
    live_logits, live_hidden = teacher_forward(teacher.model.eval(), batch, layers)
    left = student.tokenizer.padding_side == "left"
    cached_hidden = [cache.batch_hidden(l, idx, batch["attention_mask"], left) for l in layers]
    live = module(batch, labels[idx], live_logits, live_hidden)
    cached = module(batch, labels[idx], cache.logits[idx], cached_hidden)
    for key in ("ce", "kd", "hidden_mse", "loss"):
        assert cached[key].item() == pytest.approx(live[key].item(), rel=1e-4, abs=1e-6), key


def test_distill_same_command_twice_same_metrics(tmp_path: Path, trained_teacher: Path, tiny_student: Path, toy) -> None:
    kwargs = dict(k=8, seed=3, student=StudentConfig(model=str(tiny_student), layers=None),
                  method=DistillConfig(method="kd"), train=FAST, progress=False)
    a = run_distill(toy, trained_teacher, tmp_path / "a", **kwargs)
    b = run_distill(toy, trained_teacher, tmp_path / "b", **kwargs)
    assert a["test"] == b["test"]
    log_a = (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()
    log_b = (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()
    assert [json.loads(r)["loss"] for r in log_a] == [json.loads(r)["loss"] for r in log_b]
    run_distill(toy, trained_teacher, tmp_path / "c", **{**kwargs, "seed": 4})
    assert json.loads((tmp_path / "c" / "run_config.json").read_text())["sample_indices"] != \
        json.loads((tmp_path / "a" / "run_config.json").read_text())["sample_indices"]


def predicted(folder: Path, texts) -> list[int]:
    """The classes a saved model folder predicts for ``texts``."""
    from codistill.predict import load_predictor

    return load_predictor(folder, max_length=FAST.max_length).probabilities(list(texts)).argmax(-1).tolist()


def saved_accuracy(folder: Path, split) -> float:
    return sum(p == y for p, y in zip(predicted(folder, split.texts), split.labels)) / len(split.labels)


@pytest.mark.parametrize("method", ["finetune", "kd", "lwd", "ted"])
def test_distill_end_to_end_each_method(method: str, tmp_path: Path, trained_teacher: Path, tiny_student: Path, toy) -> None:
    from transformers import pipeline

    out = tmp_path / method
    m = run_distill(toy, trained_teacher, out, k=8, seed=0, student=StudentConfig(model=str(tiny_student), layers=1),
                method=DistillConfig(method=method, ted_filter_epochs=2), train=FAST, progress=False)
    for name in ("metrics.json", "run_config.json", "train_log.jsonl", "config.json", "model.safetensors"):
        assert (out / name).is_file(), name
    assert m["method"] == method and m["n_train"] == 8 and m["steps"] == 4
    assert m["test"]["n"] == 24 and m["validation"]["n"] == 12
    for split in ("test", "validation"):  # the figures are those of the saved student, recomputed here
        assert m[split]["accuracy"] == pytest.approx(saved_accuracy(out, toy[split]))
    assert "agreement" in m["test"] and m["teacher_test"]["accuracy"] > 0.5
    log = [json.loads(r) for r in (out / "train_log.jsonl").read_text().splitlines()]
    expected_parts = {"finetune": {"ce"}, "kd": {"ce", "kd"}, "lwd": {"ce", "kd", "hidden_mse"},
                      "ted": {"ce", "kd", "filtered_mse"}}
    assert expected_parts[method] <= set(log[0]) and len(log) == 4
    if method == "lwd":
        assert m["extra_trainable_parameters"] == 16 * 32 + 32  # one projection 16 -> 32 for the one pair
    if method == "ted":
        assert m["first_stages"][0]["steps"] > 0 and m["first_stages"][0]["term"] == "filtered_mse"
    config = json.loads((out / "run_config.json").read_text())
    assert config["student"]["layers_kept"] == [0] and config["distill"]["method"] == method
    clf = pipeline("text-classification", model=str(out), tokenizer=str(out))
    text = toy["test"].texts[0]
    assert clf(text)[0]["label"] == toy.label_names[int(predicted(out, [text])[0])]
    # the word embeddings are frozen by default (TED's stage 1 must not unfreeze them); the layers train
    before, after = _weights(tiny_student), _weights(out)
    emb = next(n for n in after if n.endswith("word_embeddings.weight"))
    assert torch.equal(before[emb], after[emb])
    layer = next(n for n in after if ".layer.0." in n and n.endswith("query.weight"))
    assert not torch.equal(before[layer], after[layer])


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {n.removeprefix("bert."): t for n, t in load_file(str(folder / "model.safetensors")).items()}


def test_train_embeddings_option_updates_them(tmp_path: Path, trained_teacher: Path, tiny_student: Path, toy) -> None:
    out = tmp_path / "emb"
    m = run_distill(toy, trained_teacher, out, k=8, seed=0, method=DistillConfig(method="kd"), train=FAST, progress=False,
                student=StudentConfig(model=str(tiny_student), layers=1, freeze_embeddings=False))
    before, after = _weights(tiny_student), _weights(out)
    emb = next(n for n in after if n.endswith("word_embeddings.weight"))
    assert not torch.equal(before[emb], after[emb])
    config = json.loads((out / "run_config.json").read_text())["student"]
    assert config["trainable_parameters"] == config["parameters"] and m["n_train"] == 8


def test_decoder_teacher_and_student(tmp_path: Path, tiny_qwen: Path, toy) -> None:
    teacher_dir = tmp_path / "qwen_teacher"
    tm = train_teacher(toy, str(tiny_qwen), teacher_dir, train=replace(FAST, epochs=2), progress=False)
    assert tm["test"]["n"] == 24
    m = run_distill(toy, teacher_dir, tmp_path / "qwen_student", k=8, seed=0,
                student=StudentConfig(model=str(teacher_dir), layers=1, init="teacher"),
                method=DistillConfig(method="lwd"), train=FAST, progress=False)
    assert m["test"]["n"] == 24 and m["terms"][2]["layer_map"] == [{"layer_T": 2, "layer_S": 1, "weight": 1.0}]


def test_counterfactual_rows_are_added(tmp_path: Path, trained_teacher: Path, tiny_student: Path, toy) -> None:
    cf = tmp_path / "cf.jsonl"
    rows = [
        {"text": "the film was awful", "label": 1, "counterfactual": "the film was great", "target_label": 1, "flipped": True},
        {"counterfactual": "the plot was dull", "target_label": "negative", "flipped": True},
        {"counterfactual": "no flip here", "target_label": 0, "flipped": False},
        {"text": "a plain extra row", "label": 0},
    ]
    cf.write_text("".join(json.dumps(r) + "\n" for r in rows))
    extra, info = read_extra_examples(cf, ["negative", "positive"])
    assert extra.texts == ["the film was great", "the plot was dull", "a plain extra row"]
    assert extra.labels == [1, 0, 0] and info == {"added": 3, "skipped_not_flipped": 1}
    m = run_distill(toy, trained_teacher, tmp_path / "run", k=4, seed=0, counterfactuals=cf,
                student=StudentConfig(model=str(tiny_student), layers=1), train=FAST, progress=False)
    assert m["n_train"] == 7 and m["n_counterfactuals"] == 3 and m["cod"] == "extra"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x", "label": 5}\n')
    with pytest.raises(DataError, match="bad.jsonl, line 1: label 5 is not in the label set"):
        read_extra_examples(bad, ["negative", "positive"])


def test_select_on_validation_never_test(tmp_path: Path, trained_teacher: Path, tiny_student: Path, toy) -> None:
    m = run_distill(toy, trained_teacher, tmp_path / "sel", k=8, seed=0, method=DistillConfig(method="kd"),
                student=StudentConfig(model=str(tiny_student), layers=1),
                train=replace(FAST, select_on="validation"), progress=False)
    assert m["selected"]["on"] == "validation" and 1 <= m["selected"]["step"] <= m["steps"]
    log = [json.loads(r) for r in (tmp_path / "sel" / "train_log.jsonl").read_text().splitlines()]
    assert sum("validation_accuracy" in r for r in log) == 2  # once per epoch
    assert max(r["validation_accuracy"] for r in log if "validation_accuracy" in r) == m["selected"]["validation_accuracy"]
    with pytest.raises(ConfigError, match="never test"):
        TrainConfig(select_on="test")


def test_teacher_saved_for_pipeline_with_metrics(trained_teacher: Path, toy) -> None:
    from transformers import pipeline

    metrics = json.loads((trained_teacher / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] > 0.6 and metrics["validation"]["n"] == 12 and metrics["n_train"] == 80
    saved = json.loads((trained_teacher / "test_predictions.json").read_text())
    assert saved["n"] == 24 and saved["metrics"] == metrics["test"]
    assert saved["parameters"] == metrics["parameters"]  # a grid reuses the file without loading the teacher
    agree = sum(p == y for p, y in zip(saved["predictions"], toy["test"].labels)) / 24
    assert agree == pytest.approx(metrics["test"]["accuracy"])  # the saved predictions are the scored ones
    out = pipeline("text-classification", model=str(trained_teacher))(toy["test"].texts[:3])
    assert [o["label"] for o in out] == [toy.label_names[p] for p in saved["predictions"][:3]]


def test_errors_before_training(tmp_path: Path, trained_teacher: Path, tiny_student: Path, tiny_qwen: Path, toy) -> None:
    student = StudentConfig(model=str(tiny_student), layers=1)
    with pytest.raises(ConfigError, match="no such folder"):
        run_distill(toy, tmp_path / "missing_teacher", tmp_path / "o1", k=8, student=student, train=FAST, progress=False)
    with pytest.raises(ConfigError, match="needs a teacher"):
        run_distill(toy, None, tmp_path / "o2", k=8, student=student, train=FAST, progress=False)
    with pytest.raises(ConfigError, match="same tokenizer"):
        run_distill(toy, trained_teacher, tmp_path / "o3", k=8, method=DistillConfig(method="lwd"),
                student=StudentConfig(model=str(tiny_qwen), layers=1), train=FAST, progress=False)
    with pytest.raises(ConfigError, match="student layer 5 does not exist"):
        run_distill(toy, trained_teacher, tmp_path / "o4", k=8, student=student, train=FAST, progress=False,
                method=DistillConfig(method="lwd", layer_map=[LayerMatch(layer_T=2, layer_S=5)]))
    three = load_dataset(write_csv(tmp_path / "three.csv", synthetic_rows(60, classes=("a", "b", "c"))))
    with pytest.raises(ConfigError, match="the teacher has 2 labels but dataset 'three' has 3"):
        run_distill(three, trained_teacher, tmp_path / "o5", k=6, student=student, train=FAST, progress=False)
    for out in ("o1", "o2", "o3", "o4", "o5"):
        assert not (tmp_path / out / "metrics.json").exists()
    # finetune needs no teacher
    m = run_distill(toy, None, tmp_path / "ft", k=8, method=DistillConfig(method="finetune"), student=student,
                train=FAST, progress=False)
    assert m["teacher_test"] is None and "agreement" not in m["test"]


def test_given_teacher_predictions_and_no_model_weights(tmp_path: Path, trained_teacher: Path, tiny_student: Path,
                                                        toy) -> None:
    # a "teacher" that predicts the true labels: agreement must then equal accuracy
    given = ({"accuracy": 1.0, "macro_f1": 1.0, "mcc": 1.0, "n": 24}, list(toy["test"].labels))
    m = run_distill(toy, trained_teacher, tmp_path / "r", k=4, seed=0, teacher_test=given, save_model=False,
                student=StudentConfig(model=str(tiny_student), layers=1), train=FAST, progress=False)
    assert m["teacher_test"] == given[0]
    assert m["test"]["agreement"] == m["test"]["accuracy"]
    assert (tmp_path / "r" / "metrics.json").is_file() and not (tmp_path / "r" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def cf_files(tmp_path_factory, trained_teacher: Path, toy) -> dict[str, Path]:
    """Counterfactual files from the trained tiny teacher: seed 0 at k=8 and k=16, seed 1 at k=8."""
    from codistill.counterfactuals.edits import EditSearchConfig, EditSearchGenerator
    from codistill.counterfactuals.generate import generate_counterfactuals
    from codistill.counterfactuals.verify import Verifier
    from codistill.counterfactuals.wordnet import DictLexicon

    folder = tmp_path_factory.mktemp("cf")
    verifier = Verifier.from_classifier(load_classifier(str(trained_teacher)))
    lexicon = DictLexicon({"great": ["awful"], "lovely": ["dull"], "superb": ["dreadful"], "fine": ["poor"],
                           "excellent": ["terrible"], "wonderful": ["boring"]})
    files = {}
    for name, k, seed in (("k8", 8, 0), ("k16", 16, 0), ("k8s1", 8, 1)):
        files[name] = folder / f"{name}.jsonl"
        generate_counterfactuals(toy, verifier, EditSearchGenerator(EditSearchConfig(), lexicon), files[name], k=k,
                                 seed=seed, on_failure="keep-best", progress=False)
    return files


def _train_rows(out: Path) -> tuple[list[int], int]:
    config = json.loads((out / "run_config.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    return config["sample_indices"], metrics["n_counterfactuals"]


def test_cod_replace_uses_half_the_originals_and_their_counterfactuals(tmp_path: Path, trained_teacher: Path,
                                                                        tiny_student: Path, toy, cf_files) -> None:
    common = dict(seed=0, student=StudentConfig(model=str(tiny_student), layers=1), train=FAST, progress=False,
                  save_model=False)
    m = run_distill(toy, trained_teacher, tmp_path / "cod", k=8, counterfactuals=cf_files["k8"], cod="replace", **common)
    rows = [json.loads(line) for line in cf_files["k8"].read_text().splitlines()]
    assert m["cod"] == "replace" and m["n_originals"] == 4
    assert m["n_counterfactuals"] == sum(r["use"] for r in rows) and m["n_train"] == 4 + m["n_counterfactuals"]
    baseline = run_distill(toy, trained_teacher, tmp_path / "base", k=8, **common)
    cod_idx, _ = _train_rows(tmp_path / "cod")
    base_idx, _ = _train_rows(tmp_path / "base")
    assert cod_idx == base_idx[:4]  # paired: CoD's originals are the first half of the baseline's
    # the k=16 file covers k=8 (nested samples): the same training rows, so the same result
    m16 = run_distill(toy, trained_teacher, tmp_path / "cod16", k=8, counterfactuals=cf_files["k16"], cod="replace",
                  **common)
    assert m16["test"] == m["test"]
    with pytest.raises(DataError, match="no counterfactual for training row"):
        run_distill(toy, trained_teacher, tmp_path / "bad", k=8, counterfactuals=cf_files["k8s1"], cod="replace", **common)
    with pytest.raises(ConfigError, match="generates them with the teacher"):  # no file and no teacher to make one
        run_distill(toy, None, tmp_path / "bad2", k=8, cod="replace", **{**common, "method": DistillConfig("finetune")})
    assert baseline["cod"] is None


def test_augment_at_k_equals_cod_at_2k(tmp_path: Path, trained_teacher: Path, tiny_student: Path, toy, cf_files) -> None:
    common = dict(seed=0, student=StudentConfig(model=str(tiny_student), layers=1), train=FAST, progress=False,
                  save_model=False, counterfactuals=cf_files["k16"])
    augment = run_distill(toy, trained_teacher, tmp_path / "aug", k=8, cod="augment", **common)
    cod = run_distill(toy, trained_teacher, tmp_path / "cod", k=16, cod="replace", **common)
    assert augment["n_originals"] == cod["n_originals"] == 8
    assert augment["test"] == cod["test"] and augment["cod"] == "augment"


def test_teacher_cache_pools_each_text_over_its_own_tokens(tiny_teacher: Path, tiny_qwen: Path, toy) -> None:
    """The cached sentence embedding of a text is the mean of the last layer over its real tokens, whatever
    it was padded with in its batch (right-padded BERT and left-padded Qwen)."""
    for folder in (tiny_teacher, tiny_qwen):
        teacher = load_classifier(str(folder), ["negative", "positive"])
        texts = toy["train"].texts[:5]
        texts[2] = texts[2] + " and the plot was fine and the movie was very lovely"
        enc = encode(teacher.tokenizer, texts, 32)
        cache = build_teacher_cache(teacher, enc, [], batch_size=3, pooled=True)
        assert cache.hidden == {} and cache.pooled.shape == (5, teacher.hidden_size)
        with torch.no_grad():
            for i, text in enumerate(texts):
                alone = teacher.model(**teacher.tokenizer([text], return_tensors="pt"), output_hidden_states=True)
                assert torch.allclose(cache.pooled[i], alone.hidden_states[-1][0].mean(0), atol=1e-5)


def test_kd_rep_distills_across_tokenizers(tmp_path: Path, trained_teacher: Path, tiny_qwen: Path, toy) -> None:
    """A BERT teacher and a Qwen student share no tokenizer: LWD refuses, KD + sentence embeddings trains
    (the projection is extra trainable: D_S x D_T + D_T) and logs the pooled term."""
    student = StudentConfig(model=str(tiny_qwen), layers=None)
    with pytest.raises(ConfigError, match="same tokenizer"):
        run_distill(toy, trained_teacher, tmp_path / "lwd", k=8, student=student, method=DistillConfig(method="lwd"),
                    train=FAST, progress=False)
    m = run_distill(toy, trained_teacher, tmp_path / "rep", k=8, student=student,
                    method=DistillConfig(method="kd_rep", beta=2.0), train=FAST, progress=False)
    assert m["extra_trainable_parameters"] == 32 * 32 + 32
    assert [t["name"] for t in m["terms"]] == ["ce", "kd", "pooled"] and m["terms"][2]["weight"] == 2.0
    log = [json.loads(r) for r in (tmp_path / "rep" / "train_log.jsonl").read_text().splitlines()]
    assert all(r["pooled"] > 0 and r["loss"] == pytest.approx(r["ce"] + r["kd"] + r["pooled"], rel=1e-5) for r in log)


def test_cod_multi_trains_on_every_counterfactual_of_the_same_originals(tmp_path: Path, trained_teacher: Path,
                                                                       tiny_student: Path, toy, cf_files) -> None:
    from codistill.counterfactuals.rows import cod_examples

    rows = [json.loads(line) for line in cf_files["k8"].read_text().splitlines()]
    # a second counterfactual for two of the four originals (as the edit search writes with per_original 2)
    for r in rows[:2]:
        r["more_counterfactuals"] = [r["text"].replace("the film", "the movie")]
    multi_file = tmp_path / "multi.jsonl"
    multi_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    common = dict(seed=0, student=StudentConfig(model=str(tiny_student), layers=1), train=FAST, progress=False,
                  save_model=False, counterfactuals=str(multi_file))
    one = run_distill(toy, trained_teacher, tmp_path / "one", k=8, cod="replace", **common)
    multi = run_distill(toy, trained_teacher, tmp_path / "multi", k=8, cod="multi", **common)
    used = [r for r in rows if r["use"]]
    assert one["n_counterfactuals"] == len(used)                                     # replace ignores the extras
    assert multi["n_counterfactuals"] == len(used) + sum(bool(r.get("more_counterfactuals")) for r in used)
    assert multi["n_originals"] == one["n_originals"] == 4 and multi["cod"] == "multi"
    assert _train_rows(tmp_path / "multi")[0] == _train_rows(tmp_path / "one")[0]   # the same originals
    from codistill.data import sample_from

    extra, _ = cod_examples(multi_file, sample_from(toy, 4, 0), toy.label_names, every=True)
    first = next(r for r in used if r.get("more_counterfactuals"))
    i = extra.texts.index(first["counterfactual"])
    assert extra.texts[i + 1] == first["more_counterfactuals"][0]                   # its extras follow it
    assert extra.labels[i] == extra.labels[i + 1] == first["target_label"]


def test_kd_con_on_a_mean_head_trains_and_loads(tmp_path: Path, trained_teacher: Path, tiny_student: Path,
                                                toy) -> None:
    """kd_con logs its three terms; the saved mean-head student loads with transformers' pipeline (codistill
    imported) and gives the probabilities codistill's own predictor gives (its ONNX export: test_serving)."""
    from transformers import pipeline

    from codistill.predict import load_predictor

    out = tmp_path / "con"
    m = run_distill(toy, trained_teacher, out, k=8, seed=0,
                    student=StudentConfig(model=str(tiny_student), layers=1, pooling="mean"),
                    method=DistillConfig(method="kd_con", gamma=2.0), train=FAST, progress=False)
    log = [json.loads(r) for r in (out / "train_log.jsonl").read_text().splitlines()]
    assert {"ce", "kd", "contrastive"} <= set(log[0]) and m["method"] == "kd_con"
    assert [t for t in m["terms"] if t["name"] == "contrastive"][0]["weight"] == 2.0
    config = json.loads((out / "run_config.json").read_text())
    assert config["student"]["pooling"] == "mean"
    assert json.loads((out / "config.json").read_text())["model_type"] == "codistill_bert_mean"
    clf = pipeline("text-classification", model=str(out), tokenizer=str(out), top_k=None)
    texts = ["the film was great", "the plot was dull and boring"]
    ours = load_predictor(out).probabilities(texts)
    for text, probs in zip(texts, ours):
        scores = {d["label"]: d["score"] for d in clf([text])[0]}
        assert [scores["negative"], scores["positive"]] == pytest.approx(probs.tolist(), abs=1e-5)


def test_contrastive_term_alone_changes_only_the_encoder(tiny_teacher: Path, tiny_student: Path, toy) -> None:
    """A step of the contrastive term alone moves the encoder layers and leaves the classifier head untouched
    (the term never reads the logits), and its value equals the formula on the batch it saw."""
    from codistill.config import LossTerm
    from codistill.losses import build_terms, masked_mean_pool, pair_similarity_loss

    torch.manual_seed(0)
    student, _ = make_student(str(tiny_student), None, "pretrained", ["negative", "positive"], pooling="mean")
    terms = build_terms([LossTerm("contrastive")], student.num_layers, None, student.hidden_size, None, 2)
    module = DistillModule(student.model, terms)
    train = toy.splits["train"]
    encoded = encode(student.tokenizer, train.texts[:8], 32)
    batch = collate(student.tokenizer, encoded, list(range(8)))
    labels = torch.tensor(train.labels[:8])
    module.eval()
    with torch.no_grad():
        parts = module(batch, labels)
        hidden = student.model(**batch, output_hidden_states=True).hidden_states[-1]
    expected = pair_similarity_loss(masked_mean_pool(hidden, batch["attention_mask"]), labels)
    assert parts["contrastive"].item() == pytest.approx(expected.item(), rel=1e-5)
    before = {n: p.detach().clone() for n, p in student.model.named_parameters()}
    fit(module, student, encoded, train.labels[:8], replace(FAST, min_steps=3, epochs=1), progress=False)
    after = dict(student.model.named_parameters())
    assert torch.equal(before["classifier.weight"], after["classifier.weight"])
    assert not torch.equal(before["bert.encoder.layer.0.attention.self.query.weight"],
                           after["bert.encoder.layer.0.attention.self.query.weight"])


def test_classifier_lr_gives_the_head_its_own_rate(tiny_student: Path, tiny_qwen: Path) -> None:
    from codistill.trainer import _param_groups

    for folder, head in ((tiny_student, {"classifier.weight", "classifier.bias"}), (tiny_qwen, {"score.weight"})):
        torch.manual_seed(0)
        student, _ = make_student(str(folder), None, "pretrained", ["negative", "positive"])
        names = {id(p): n for n, p in student.model.named_parameters()}
        plain = _param_groups(student.model, student.model, FAST)
        assert all(g["lr"] == FAST.lr for g in plain)
        groups = _param_groups(student.model, student.model, replace(FAST, classifier_lr=0.5))
        fast = [g for g in groups if g["lr"] == 0.5]
        assert len(fast) == 1 and {names[id(p)] for p in fast[0]["params"]} == head
        # every trainable parameter is in exactly one group
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids)) == sum(p.requires_grad for p in student.model.parameters())


def test_probe_stage_moves_only_the_head_then_unfreezes(tiny_teacher: Path, tiny_student: Path, toy) -> None:
    """LP-FT: the probe stage changes the classification head and nothing else of the student, and leaves
    every parameter as trainable as it was (frozen word embeddings stay frozen); a run records the stage."""
    from codistill.trainer import _probe_stage, make_accelerator

    teacher, student = _student_and_teacher(tiny_teacher, tiny_student)
    student.model.get_input_embeddings().weight.requires_grad_(False)
    train = toy.splits["train"]
    encoded = encode(student.tokenizer, train.texts[:8], 32)
    cache = build_teacher_cache(teacher, encode(teacher.tokenizer, train.texts[:8], 32), [])
    module = DistillModule(student.model, lwd_terms(student, teacher)[:2])  # CE + KD
    trainable = {n: p.requires_grad for n, p in student.model.named_parameters()}
    before = {n: p.detach().clone() for n, p in student.model.named_parameters()}
    cfg = replace(FAST, probe_steps=3, classifier_lr=1e-2)
    stage = _probe_stage(module, student, encoded, train.labels[:8], cfg, cache, [], make_accelerator(cfg), False)
    assert stage["term"] == "probe" and stage["steps"] == 3
    changed = {n for n, p in student.model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert changed == {"classifier.weight", "classifier.bias"}
    assert {n: p.requires_grad for n, p in student.model.named_parameters()} == trainable


def test_a_run_with_a_probe_stage_records_it(tmp_path: Path, trained_teacher: Path, tiny_student: Path, toy) -> None:
    m = run_distill(toy, trained_teacher, tmp_path / "lpft", k=8, seed=0,
                    student=StudentConfig(model=str(tiny_student), layers=1, pooling="mean"),
                    train=replace(FAST, probe_steps=2), progress=False)
    assert m["first_stages"] == [{**m["first_stages"][0], "term": "probe", "steps": 2}]
    assert m["steps"] == 4  # the main stage keeps its own budget


def test_cod_rounds_adds_the_edits_the_teacher_labels_otherwise_and_trains_a_fresh_student(
        tmp_path: Path, tiny_teacher: Path, tiny_student: Path, toy, cf_files, monkeypatch) -> None:
    from codistill.config import RunConfig
    from codistill.evaluate import predict_logits

    # an untrained teacher: it ignores the sentiment words the student learns from the labels, so edits that
    # flip the student often leave the teacher where it was
    teacher_dir = tiny_teacher
    lexicon = tmp_path / "lexicon.json"
    pairs = {"great": "awful", "lovely": "dull", "superb": "dreadful", "fine": "poor", "excellent": "terrible",
             "wonderful": "boring"}
    lexicon.write_text(json.dumps({**{a: [b] for a, b in pairs.items()}, **{b: [a] for a, b in pairs.items()}}))
    common = dict(seed=0, student=StudentConfig(model=str(tiny_student), layers=1), progress=False,
                  train=replace(FAST, min_steps=60), save_model=False, counterfactuals=cf_files["k8"])
    cod = run_distill(toy, teacher_dir, tmp_path / "cod", k=8, cod="replace", **common)
    rounds = run_distill(toy, teacher_dir, tmp_path / "rounds", k=8, cod="rounds",
                         generator={"name": "edits", "lexicon": str(lexicon)}, **common)
    edits = [json.loads(line) for line in (tmp_path / "rounds" / "round2.jsonl").read_text().splitlines()]
    kept = [r for r in edits if r["use"]]
    info = rounds["rounds"]
    assert info["texts"] == cod["n_train"] and info["edits"] == len(edits) and info["disagreements"] == len(kept) > 0
    assert rounds["n_counterfactuals"] == cod["n_counterfactuals"] + len(kept)
    assert rounds["n_train"] == cod["n_train"] + len(kept) and rounds["n_originals"] == cod["n_originals"] == 4
    assert rounds["cod"] == "rounds"
    teacher = load_classifier(str(teacher_dir), ["negative", "positive"])
    labels = predict_logits(teacher.model, teacher.tokenizer, [r["counterfactual"] for r in kept], 16, 32,
                            torch.device("cpu")).argmax(-1).tolist()
    assert labels == [r["teacher_label"] for r in kept]                        # trained with the teacher's label
    assert all(r["teacher_label"] != r["student_label_after"] for r in kept)
    # a second round that finds nothing trains the same student as CoD: a fresh start with the same seed
    import codistill.counterfactuals.rounds as rounds_module

    monkeypatch.setattr(rounds_module, "student_disagreements",
                        lambda texts, *args, **kwargs: ([], {"texts": len(texts), "edits": 0}))
    same = run_distill(toy, teacher_dir, tmp_path / "same", k=8, cod="rounds", **common)
    assert same["rounds"]["edits"] == 0 and same["test"] == cod["test"] and same["n_train"] == cod["n_train"]
    with pytest.raises(ConfigError, match="or a 'rounds' run, searches"):
        RunConfig(teacher="t", cod="replace", counterfactuals="cf.jsonl", generator={"name": "edits"})
    with pytest.raises(ConfigError, match="'rounds' needs a teacher"):
        RunConfig(cod="rounds", counterfactuals="cf.jsonl", distill=DistillConfig(method="finetune"))


def test_a_diverging_loss_stops_training_with_one_line(tmp_path: Path, trained_teacher: Path, tiny_student: Path,
                                                        toy) -> None:
    from codistill.errors import TrainingDiverged

    # a learning rate this large sends the weights, and then the loss, to NaN or infinity within a few steps
    with pytest.raises(TrainingDiverged, match=r"step \d+: the loss is (nan|inf).*\(ce .*, kd .*\)"):
        run_distill(toy, trained_teacher, tmp_path / "nan", k=8, student=StudentConfig(model=str(tiny_student), layers=1),
                    train=replace(FAST, lr=1e30, classifier_lr=1e30, max_grad_norm=0.0, min_steps=40), progress=False)
    assert not (tmp_path / "nan" / "metrics.json").exists()


# -- the validation curve and the reference protocol ----------------------------------------------------------


def test_evaluation_steps_rule() -> None:
    from codistill.trainer import evaluation_steps

    assert evaluation_steps(1, 100, TrainConfig(eval_points=20)) == list(range(5, 101, 5))
    assert evaluation_steps(8, 800, TrainConfig(eval_points=20)) == list(range(40, 801, 40))  # epoch ends
    assert evaluation_steps(8, 24, TrainConfig(eval_points=20)) == [8, 16, 24]  # fewer epochs: every epoch
    assert evaluation_steps(3, 10, TrainConfig(eval_points=2)) == [6, 10]  # the last (partial) epoch ends at 10
    assert evaluation_steps(4, 12, TrainConfig(select_on="validation")) == [4, 8, 12]
    assert evaluation_steps(4, 12, TrainConfig()) == []
    with pytest.raises(ConfigError, match="eval_points must be >= 0"):
        TrainConfig(eval_points=-1)


def test_the_curve_records_validation_without_changing_training(tmp_path: Path, trained_teacher: Path,
                                                                tiny_student: Path, toy) -> None:
    from codistill.evaluate import evaluate_split

    student = StudentConfig(model=str(tiny_student), layers=1)
    train = replace(FAST, epochs=6, min_steps=0, batch_size=4)
    plain = run_distill(toy, trained_teacher, tmp_path / "plain", k=8, student=student, train=train, progress=False)
    m = run_distill(toy, trained_teacher, tmp_path / "curve", k=8, student=student,
                    train=replace(train, eval_points=3), progress=False)
    assert m["test"] == plain["test"] and m["steps"] == plain["steps"] == 12  # evaluating changes no weight
    assert plain["curve"] == [] and plain["reference"] is None
    curve = m["curve"]
    assert [p["step"] for p in curve] == [4, 8, 12] and all("validation_agreement" in p for p in curve)
    assert m["eval_seconds"] > 0
    # the last point is the final weights: the same figures as the run's own validation metrics
    assert curve[-1]["validation_accuracy"] == m["validation"]["accuracy"]
    assert curve[-1]["validation_agreement"] == m["validation"]["agreement"]
    teacher = load_classifier(str(trained_teacher))
    teacher_val = evaluate_split(teacher, toy.split("validation"), 2, progress=False)[0]
    assert m["teacher_validation"] == teacher_val
    best = max(curve, key=lambda p: p["validation_accuracy"])
    ref = m["reference"]
    assert ref["validation_accuracy"] == best["validation_accuracy"] and ref["step"] == best["step"]
    assert ref["selection_bias"] == pytest.approx(best["validation_accuracy"] - curve[-1]["validation_accuracy"])
    assert ref["evaluations"] == 3 and m["selected"] is None  # recorded, never selected
    from codistill.evaluate import reference_protocol

    # with select_on=validation the run keeps the best weights: their own validation accuracy is the final one
    kept = reference_protocol(curve, best["validation_accuracy"])
    assert kept["selection_bias"] == 0 and kept["final_validation_accuracy"] == best["validation_accuracy"]
    log = [json.loads(r) for r in (tmp_path / "curve" / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "validation_accuracy" in r] == [4, 8, 12]


def test_reference_recipe_sets_the_papers_code_options_and_reports_its_best(tmp_path: Path, trained_teacher: Path,
                                                                            tiny_student: Path, toy_folder: Path,
                                                                            capsys) -> None:
    from codistill.cli import main
    from codistill.config import RECIPES, method_terms, recipe_section

    kd = method_terms(DistillConfig(method="kd", **recipe_section("reference", "distill")))
    assert [(t.loss, t.weight, t.temperature) for t in kd] == [("ce", 1.0, 2.0), ("kd", 20.0, 2.0)]
    with pytest.raises(ConfigError, match="unknown recipe 'paper'"):
        recipe_section("paper", "train")
    out = tmp_path / "ref"
    code = main(["distill", "--data", str(toy_folder), "--labels", "negative,positive", "--teacher",
                 str(trained_teacher), "--student", str(tiny_student), "--student-layers", "1", "--k", "8",
                 "--recipe", "reference", "--epochs", "10", "--out", str(out)])  # a flag given overrides the recipe
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "run_config.json").read_text())
    expected = {**RECIPES["reference"]["train"], "epochs": 10}
    assert {k: config["train"][k] for k in expected} == expected
    assert config["distill"]["alpha"] == 20.0 and config["distill"]["temperature"] == 2.0
    assert config["student"]["freeze_embeddings"] is False  # every parameter trains, as in that code
    m = json.loads((out / "metrics.json").read_text())
    assert m["steps"] == 10 and [p["step"] for p in m["curve"]] == list(range(1, 11))  # k=8, batch 8: every epoch
    assert m["reference"]["validation_accuracy"] == max(p["validation_accuracy"] for p in m["curve"])
    log = [json.loads(r) for r in (out / "train_log.jsonl").read_text().splitlines()]
    assert log[0]["lr"] == pytest.approx(6e-5 * 9 / 10)  # no warm-up: a linear decay from the first step
    shown = " ".join(capsys.readouterr().out.split())
    assert f"best validation accuracy {m['reference']['validation_accuracy']:.2%} at step {m['reference']['step']} of 10" in shown
