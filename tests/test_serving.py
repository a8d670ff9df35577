"""Serving: ONNX export (fp32 and int8) checked against PyTorch, and batch prediction from any model folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import fast_train, run_distill, save_tiny_bert, save_tiny_qwen, synthetic_rows, write_csv, write_jsonl

# Texts of many lengths, one alone in its batch (batch 1), one longer than any in the export's example.
TEXTS = [r["text"] for r in synthetic_rows(20, seed=5)] + [
    "great", "not dull", "the film was not very dull and the plot was superb number 7 and the movie was a lovely one"]
FP32_BOUND = 1e-5  # what the tests demand of fp32 ONNX; export_onnx itself refuses above FP32_TOLERANCE (1e-4)


def sharpen(folder: Path, scale: float = 40.0) -> Path:
    """Scale the classification head so the random model is confident (classes far apart): an int8 rounding
    then changes a probability a little instead of flipping a coin-toss prediction."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(folder)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.split(".")[0] in ("classifier", "score"):
                p.mul_(scale)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("serving")
    return {
        "bert-binary": sharpen(save_tiny_bert(root / "bert2", layers=2, width=64, seed=3)),
        "bert-3-class": sharpen(save_tiny_bert(root / "bert3", layers=2, width=32, seed=4, num_labels=3)),
        "qwen-decoder": sharpen(save_tiny_qwen(root / "qwen", layers=2, width=32, seed=5)),
    }


@pytest.fixture(scope="module")
def exports(models, tmp_path_factory):
    """ONNX exports made once per module (an export takes seconds): ``exports(kind, int8)`` -> the report."""
    from codistill.export import export_onnx

    root = tmp_path_factory.mktemp("exports")
    made = {}

    def get(kind: str, int8: bool = False):
        if (kind, int8) not in made:
            made[kind, int8] = export_onnx(models[kind], root / f"{kind}-{'int8' if int8 else 'fp32'}", int8=int8)
        return made[kind, int8]

    return get


def torch_probs(folder: Path, texts) -> np.ndarray:
    from codistill.predict import load_predictor

    pred = load_predictor(folder)
    assert pred.backend == "pytorch"
    return pred.probabilities(texts, batch_size=7)


def raw_onnx_probs(folder: Path, texts) -> np.ndarray:
    """Probabilities straight from onnxruntime and the saved tokenizer, one text at a time and as one batch,
    without codistill's predictor: what a user's own serving code would do."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    session = ort.InferenceSession(str(folder / "model.onnx"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    names = [i.name for i in session.get_inputs()]

    def run(batch):
        enc = tokenizer(batch, padding=True, return_tensors="np")
        return session.run(["logits"], {n: enc[n].astype(np.int64) for n in names})[0]

    one_by_one = np.concatenate([run([t]) for t in texts])
    together = run(list(texts))
    np.testing.assert_allclose(one_by_one, together, atol=1e-4)  # padding does not change a text's logits
    return torch.tensor(together).softmax(-1).numpy()


@pytest.mark.parametrize("kind", ["bert-binary", *(pytest.param(k, marks=pytest.mark.slow)  # an export each
                                                   for k in ("bert-3-class", "qwen-decoder"))])
def test_onnx_export_round_trip_matches_pytorch(kind, models, exports) -> None:
    import onnxruntime as ort
    from transformers import AutoConfig

    source = models[kind]
    report = exports(kind)
    out = Path(report.out)
    assert report.precision == "fp32" and report.max_abs_diff <= FP32_BOUND and report.agreement == 1.0
    expected = torch_probs(source, TEXTS)
    got = raw_onnx_probs(out, TEXTS)
    assert np.abs(got - expected).max() <= FP32_BOUND
    # the graph: named dynamic axes, logits out, label names and tokenizer beside it
    session = ort.InferenceSession(str(out / "model.onnx"))
    assert [o.name for o in session.get_outputs()] == ["logits"]
    assert session.get_inputs()[0].shape == ["batch_size", "sequence_length"]
    config = AutoConfig.from_pretrained(out)
    assert config.num_labels == expected.shape[1] == (3 if kind == "bert-3-class" else 2)
    assert config.id2label == AutoConfig.from_pretrained(source).id2label
    manifest = json.loads((out / "codistill_export.json").read_text())
    assert manifest["precision"] == "fp32" and manifest["is_decoder"] == (kind == "qwen-decoder")
    assert manifest["check"]["max_abs_diff"] == report.max_abs_diff


def test_int8_export_agrees_with_fp32_and_is_smaller(exports) -> None:
    from codistill.predict import load_predictor

    fp32, int8 = exports("bert-binary"), exports("bert-binary", int8=True)
    assert int8.precision == "int8" and int8.tolerance is None
    assert int8.onnx_bytes < 0.7 * fp32.onnx_bytes
    p32 = load_predictor(fp32.out).probabilities(TEXTS)
    q8 = load_predictor(int8.out)
    assert q8.precision == "int8"
    p8 = q8.probabilities(TEXTS)
    assert 0 < np.abs(p8 - p32).max() <= 0.05  # quantized for real, and close
    assert np.mean(p8.argmax(-1) == p32.argmax(-1)) >= 0.95


@pytest.mark.slow  # three exports
def test_a_failed_check_writes_nothing_and_a_rerun_replaces(models, tmp_path: Path) -> None:
    from codistill.errors import CodistillError
    from codistill.export import export_onnx

    out = tmp_path / "onnx"
    with pytest.raises(CodistillError, match="differs from PyTorch"):
        export_onnx(models["bert-binary"], out, tolerance=-1.0)
    assert not out.exists() and list(tmp_path.iterdir()) == []  # no half-written folder, no temp left
    export_onnx(models["bert-binary"], out)
    export_onnx(models["bert-3-class"], out)  # an earlier export is replaced whole
    assert json.loads((out / "config.json").read_text())["id2label"] == {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def named(folder: Path, out: Path, names=("negative", "positive")) -> Path:
    """A copy of the model in ``folder`` at ``out``, with class names instead of LABEL_i."""
    import shutil

    from transformers import AutoConfig

    shutil.copytree(folder, out)
    config = AutoConfig.from_pretrained(out)
    config.id2label = dict(enumerate(names))
    config.label2id = {n: i for i, n in enumerate(names)}
    config.save_pretrained(out)
    return out


def _formats(tmp_path: Path, rows: list[dict]) -> dict[str, tuple[Path, dict]]:
    """The same rows as CSV (text, label index), TSV (other column names, label names) and JSONL without labels."""
    tsv_rows = [{"id": i, "review": r["text"], "sentiment": ["negative", "positive"][r["label"]]} for i, r in enumerate(rows)]
    return {
        "csv": (write_csv(tmp_path / "in.csv", rows), {}),
        "tsv": (write_csv(tmp_path / "in.tsv", tsv_rows, delimiter="\t"), {"text_column": "review"}),
        "jsonl": (write_jsonl(tmp_path / "in.jsonl", [{"text": r["text"]} for r in rows]), {}),
    }


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_predict_reads_every_format_and_scores_labels(models, tmp_path: Path) -> None:
    from codistill.evaluate import macro_f1
    from codistill.predict import predict_file, summary_file

    model = named(models["bert-binary"], tmp_path / "named")
    rows = synthetic_rows(30, seed=9)
    expected = torch_probs(model, [r["text"] for r in rows])
    outputs = {}
    for fmt, (path, options) in _formats(tmp_path, rows).items():
        out = tmp_path / f"pred_{fmt}.jsonl"
        summary = predict_file(model, path, out, batch_size=4, progress=False, **options)
        lines = _read_jsonl(out)
        assert len(lines) == summary["rows"] == 30
        probs = np.array([[line["probabilities"][n] for n in ("negative", "positive")] for line in lines])
        assert np.abs(probs - expected).max() <= 1e-5
        assert [line["label_id"] for line in lines] == expected.argmax(-1).tolist()
        assert all(line["label"] == ["negative", "positive"][line["label_id"]] for line in lines)
        assert json.loads(summary_file(out).read_text()) == json.loads(json.dumps(summary))
        outputs[fmt] = (summary, lines)
    pred = expected.argmax(-1).tolist()
    gold = [r["label"] for r in rows]
    for fmt in ("csv", "tsv"):  # labels as indices and as names
        summary, lines = outputs[fmt]
        assert summary["metrics"]["accuracy"] == pytest.approx(np.mean(np.array(pred) == np.array(gold)))
        assert summary["metrics"]["macro_f1"] == pytest.approx(macro_f1(gold, pred, 2))
        assert [line["gold"] for line in lines] == [["negative", "positive"][y] for y in gold]
    summary, lines = outputs["jsonl"]
    assert summary["metrics"] is None and "gold" not in lines[0]


def test_predict_agreement_with_a_reference(models, exports, tmp_path: Path) -> None:
    from codistill.predict import predict_file

    model = models["bert-binary"]
    rows = [{"text": t, "label": i % 2} for i, t in enumerate(TEXTS)]
    data = write_csv(tmp_path / "in.csv", rows)
    int8 = Path(exports("bert-binary", int8=True).out)
    teacher = predict_file(model, data, tmp_path / "a.jsonl", progress=False)
    other = predict_file(int8, data, tmp_path / "b.jsonl", reference=tmp_path / "a.jsonl", progress=False)
    a = [line["label_id"] for line in _read_jsonl(tmp_path / "a.jsonl")]
    b = [line["label_id"] for line in _read_jsonl(tmp_path / "b.jsonl")]
    assert other["backend"] == "onnx" and teacher["backend"] == "pytorch"
    assert other["agreement"] == pytest.approx(np.mean(np.array(a) == np.array(b)))
    assert other["metrics"]["agreement"] == other["agreement"]
    # a model folder as the reference is run on the same rows: the same figure
    again = predict_file(int8, data, tmp_path / "c.jsonl", reference=model, progress=False)
    assert again["agreement"] == other["agreement"]
    # a reference of another model's classes is refused
    from codistill.errors import ConfigError

    with pytest.raises(ConfigError, match="labels"):
        predict_file(int8, data, tmp_path / "d.jsonl", reference=models["bert-3-class"], progress=False)


def test_a_distilled_student_exports_and_predicts_the_same(csv_folder: Path, tiny_teacher: Path, tiny_student: Path,
                                                         tmp_path: Path) -> None:
    from codistill.config import StudentConfig
    from codistill.data import load_dataset
    from codistill.export import export_onnx
    from codistill.predict import predict_file

    dataset = load_dataset(str(csv_folder))
    run_distill(dataset, tiny_teacher, tmp_path / "student", k=4, student=StudentConfig(model=str(tiny_student), layers=1),
                train=fast_train(epochs=1, min_steps=2), progress=False)
    export_onnx(tmp_path / "student", tmp_path / "onnx")
    test = csv_folder / "test.csv"  # labels 0/1: the student's class names are "0" and "1"
    pt = predict_file(tmp_path / "student", test, tmp_path / "pt.jsonl", progress=False)
    ox = predict_file(tmp_path / "onnx", test, tmp_path / "ox.jsonl", reference=tmp_path / "pt.jsonl", progress=False)
    assert pt["label_names"] == ox["label_names"] == ["0", "1"]
    assert ox["agreement"] == 1.0 and ox["metrics"]["accuracy"] == pt["metrics"]["accuracy"]
    # in a fresh interpreter: plain transformers loads the (mean-head) student without codistill; then the
    # command line predicts from its export there, nothing of codistill's imported before
    import subprocess
    import sys

    assert json.loads((tmp_path / "student" / "config.json").read_text())["model_type"] == "codistill_bert_mean"
    texts = [json.loads(line)["text"] for line in (tmp_path / "pt.jsonl").read_text().splitlines()]
    script = "\n".join([
        "import json, sys",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f"folder = {str(tmp_path / 'student')!r}",
        "model = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()",
        "enc = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)(json.loads(sys.stdin.read()), padding=True, "
        "return_tensors='pt')",
        "probs = model(**enc).logits.softmax(-1).tolist()",
        "print(json.dumps([{model.config.id2label[i]: p for i, p in enumerate(row)} for row in probs]))",
        "print('codistill' in ' '.join(sys.modules))",
        "from codistill.cli import main",
        f"sys.exit(main(['predict', {str(tmp_path / 'onnx')!r}, '--data', {str(test)!r}, '--out', "
        f"{str(tmp_path / 'fresh.jsonl')!r}]))"])
    proc = subprocess.run([sys.executable, "-c", script], input=json.dumps(texts), capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    scores, imported = lines[0], lines[1]
    assert imported == "False"
    expected = [json.loads(line)["probabilities"] for line in (tmp_path / "pt.jsonl").read_text().splitlines()]
    np.testing.assert_allclose([[r["0"], r["1"]] for r in json.loads(scores)], [[e["0"], e["1"]] for e in expected],
                               atol=1e-5)
    assert _read_jsonl(tmp_path / "fresh.jsonl") == _read_jsonl(tmp_path / "ox.jsonl")


def test_labels_resolve_by_class_name_before_index(tmp_path: Path) -> None:
    from codistill.data import read_texts

    path = write_csv(tmp_path / "stars.csv", [{"text": "ok", "label": 2}, {"text": "bad", "label": "1"}])
    assert read_texts(path, ["1", "2"]).labels == [1, 0]  # "2" is the second class, not index 2
    assert read_texts(path, ["a", "b", "c"]).labels == [2, 1]  # word names: integers are indices
    assert read_texts(path, None).labels is None


def test_export_and_predict_commands(models, tmp_path: Path, capsys) -> None:
    from codistill.cli import main

    data = write_csv(tmp_path / "in.csv", synthetic_rows(12, seed=4))
    assert main(["export", str(models["bert-binary"]), "--onnx", "--int8", "--out", str(tmp_path / "q"),
                 "--check-data", str(data)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "int8 ONNX" in out and "check on 12 texts against PyTorch" in out
    assert main(["predict", str(tmp_path / "q"), "--data", str(data), "--out", str(tmp_path / "p.jsonl"),
                 "--batch-size", "5", "--threads", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "12 rows predicted" in out and "(onnx, int8)" in out and "accuracy" in out
    assert len(_read_jsonl(tmp_path / "p.jsonl")) == 12


OPTIMUM_PYTHON = Path(__file__).resolve().parents[1] / ".venv-optimum" / "bin" / "python"


@pytest.mark.slow
def test_optimum_loads_the_exports(models, tmp_path: Path) -> None:
    """optimum's ORTModelForSequenceClassification and pipeline read our folders and give our probabilities
    (in optimum's own environment: `make optimum-venv`, since optimum-onnx pins transformers < 4.58)."""
    import subprocess

    from codistill.export import export_onnx
    from codistill.predict import predict_file

    if not OPTIMUM_PYTHON.is_file():
        pytest.skip("needs optimum's environment: make optimum-venv")
    data = write_csv(tmp_path / "in.csv", [{"text": t} for t in TEXTS])
    pairs = []
    for kind, int8 in (("bert-binary", False), ("bert-binary", True), ("bert-3-class", False), ("qwen-decoder", False)):
        folder = tmp_path / f"{kind}-{'int8' if int8 else 'fp32'}"
        export_onnx(models[kind], folder, int8=int8)
        predict_file(folder, data, folder.with_suffix(".jsonl"), batch_size=1, progress=False)
        pairs += [str(folder), str(folder.with_suffix(".jsonl"))]
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "optimum_check.py"
    proc = subprocess.run([str(OPTIMUM_PYTHON), str(script), *pairs], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    reports = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 4 and all(r["ok"] and r["same_class"] == 1.0 for r in reports)
    assert reports[2]["labels"] == ["LABEL_0", "LABEL_1", "LABEL_2"]


def test_a_multi_label_model_is_refused_not_softmaxed(tmp_path: Path) -> None:
    from transformers import AutoConfig

    from codistill.errors import ConfigError
    from codistill.predict import load_predictor

    folder = save_tiny_bert(tmp_path / "multi", layers=1, width=16, seed=0, num_labels=3)
    config = AutoConfig.from_pretrained(folder)
    config.problem_type = "multi_label_classification"
    config.save_pretrained(folder)
    with pytest.raises(ConfigError, match="multi-label models"):
        load_predictor(folder)


def test_an_int8_export_that_keeps_predictions_is_quiet(exports) -> None:
    from codistill import export

    quiet = exports("bert-binary", int8=True)
    assert quiet.warning is None and quiet.agreement >= export.INT8_AGREEMENT_WARNING
    assert json.loads((Path(quiet.out) / "codistill_export.json").read_text())["check"]["warning"] is None
    assert exports("bert-binary").warning is None  # fp32 is bounded by the tolerance instead


@pytest.mark.slow  # one more export
def test_an_int8_export_that_changes_predictions_says_so(models, tmp_path: Path, monkeypatch) -> None:
    from codistill import export

    monkeypatch.setattr(export, "INT8_AGREEMENT_WARNING", 1.01)  # any export now falls short
    loud = export.export_onnx(models["bert-binary"], tmp_path / "b", int8=True)
    assert loud.warning.startswith("int8 changed the predicted class of 0.0% of the check texts")
    assert json.loads((tmp_path / "b" / "codistill_export.json").read_text())["check"]["warning"] == loud.warning
