"""Export a classifier folder to ONNX (fp32, or int8 by dynamic quantization) for serving.

Flow of :func:`export_onnx`: load the folder with ``transformers`` -> ``torch.onnx.export`` (the
``torch.export`` path) of ``(input_ids, attention_mask[, token_type_ids]) -> logits`` with dynamic batch and
sequence axes -> (int8) onnxruntime's ``quantize_dynamic`` -> the folder written in a temporary place with
``config.json`` (label names), the tokenizer and a manifest -> loaded back as a user would
(:func:`codistill.predict.load_predictor`) and its probabilities compared with PyTorch's on check texts ->
moved into place. An fp32 export that disagrees beyond the tolerance is an error and nothing is written.

The folder layout (``model.onnx``, ``config.json``, tokenizer files) is the one optimum's
``ORTModelForSequenceClassification.from_pretrained`` and ``pipeline`` read.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import os
import shutil
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from codistill.config import ONNX_OPSET, TrainConfig
from codistill.errors import CodistillError, ConfigError
from codistill.fileio import DIR_MODE, atomic_write_json
from codistill.predict import EXPORT_MANIFEST, ONNX_FILE, ONNX_INPUTS, is_onnx_folder, load_predictor, torch_predictor

OPSET = ONNX_OPSET
CHECK_LIMIT = 256  # check texts used at most (the first ones given)
# below this share of unchanged predictions an int8 export comes with a warning: measured 96.9-99.2% on
# MiniLM and MPNet encoders, 87.1% on the SmolLM2 decoder (whose SST-2 accuracy then fell 5.2 points)
INT8_AGREEMENT_WARNING = 0.95
# fp32 ONNX must give PyTorch's class probabilities to within this (absolute); measured ~1e-7 on MiniLM.
FP32_TOLERANCE = 1e-4
# Texts the export is checked on when none are given: short and long, plain and noisy, so truncation,
# padding on either side and unknown tokens are all exercised.
CHECK_TEXTS = (
    "great",
    "not good at all",
    "The film was a quiet, careful and surprisingly moving piece of work.",
    "I waited two hours for a cold meal and the staff did not care.",
    "@airline thanks for nothing #fail http://t.co/x",
    "an average movie with a few good moments and a lot of dull ones, held together by one fine performance",
    "Absolutely wonderful!!! :)",
    "meh",
    "The plot is thin, the jokes are old and the ending drags on for far too long; still, the lead actor "
    "gives it everything he has, and in a few scenes the film comes alive in a way that almost makes up "
    "for the rest of it, which is more than most comedies manage these days.",
    "12 out of 10, would watch again",
    "This is neither the best nor the worst thing I have seen this year.",
    "Das war nicht gut.",
)


@dataclass
class ExportReport:
    """What :func:`export_onnx` wrote and how its outputs compare with the PyTorch model's.

    Attributes:
        out: the ONNX folder.
        source: the model folder exported.
        precision: ``fp32`` or ``int8``.
        opset: the ONNX opset.
        inputs: the graph's inputs, in order.
        parameters: parameters of the PyTorch model.
        onnx_bytes: size of the ONNX file(s) on disk.
        checked_texts: how many texts the comparison used.
        max_abs_diff: largest absolute difference of a class probability, ONNX vs PyTorch.
        agreement: share of check texts on which both predict the same class.
        tolerance: the bound ``max_abs_diff`` must meet (fp32 only; int8 is reported, not bounded).
        seconds: export time, check included.
        warning: set when an int8 export changes more predictions than :data:`INT8_AGREEMENT_WARNING` allows.
    """

    out: str
    source: str
    precision: str
    opset: int
    inputs: list[str]
    parameters: int
    onnx_bytes: int
    checked_texts: int
    max_abs_diff: float
    agreement: float
    tolerance: float | None
    seconds: float
    warning: str | None = None


def require_onnx():
    """onnx and onnxruntime, or a one-line error saying how to install them."""
    try:
        import onnx
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it)
    except ImportError as exc:
        raise ConfigError(f"ONNX export needs onnx, onnxscript and onnxruntime ({exc.name} is missing): "
                          "pip install 'codistill[onnx]'") from None
    return onnx


class LogitsOnly(nn.Module):
    """The classifier as a function of positional token tensors, returning only the logits."""

    def __init__(self, model: nn.Module, input_names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.input_names = list(input_names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model(**dict(zip(self.input_names, inputs))).logits


def graph_inputs(clf) -> list[str]:
    """The token tensors the tokenizer produces and the model takes, in ``ONNX_INPUTS`` order."""
    produced = clf.tokenizer(["a b", "a"], padding=True, return_tensors="pt")
    accepted = inspect.signature(clf.model.forward).parameters
    return [n for n in ONNX_INPUTS if n in produced and n in accepted]


def _name_axes(model_proto, input_names: Sequence[str]) -> None:
    """Give the exporter's symbolic dimensions the names optimum uses (batch_size, sequence_length)."""
    names: dict[str, str] = {}
    for value in model_proto.graph.input:
        if value.name in input_names:
            for dim, label in zip(value.type.tensor_type.shape.dim, ("batch_size", "sequence_length")):
                if dim.dim_param:
                    names[dim.dim_param] = label
    for value in [*model_proto.graph.input, *model_proto.graph.output, *model_proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param in names:
                dim.dim_param = names[dim.dim_param]
    out_dim = model_proto.graph.output[0].type.tensor_type.shape.dim[0]
    if not out_dim.dim_value:
        out_dim.dim_param = "batch_size"


@contextlib.contextmanager
def _quiet():
    """The exporters' chatter (progress lines on stdout, warnings, log records) hidden for the duration."""
    root = logging.getLogger()
    level = root.level
    torch_log = logging.getLogger("torch.onnx")
    torch_level = torch_log.level
    root.setLevel(logging.ERROR)
    torch_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
        torch_log.setLevel(torch_level)


def _torch_to_onnx(clf, input_names: Sequence[str], path: Path, opset: int) -> None:
    onnx = require_onnx()
    example = clf.tokenizer(["a short text", "a somewhat longer text to pad the other one"], padding=True,
                            return_tensors="pt")
    args = tuple(example[n] for n in input_names)
    auto = torch.export.Dim.AUTO
    try:
        with _quiet():
            program = torch.onnx.export(LogitsOnly(clf.model, input_names).eval(), args, dynamo=True,
                                        input_names=list(input_names), output_names=["logits"],
                                        dynamic_shapes=(tuple({0: auto, 1: auto} for _ in input_names),),
                                        opset_version=opset, verbose=False)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CodistillError(f"torch.onnx could not export {type(clf.model).__name__}: {first[:300]}") from None
    proto = program.model_proto
    _name_axes(proto, input_names)
    onnx.save_model(proto, str(path), save_as_external_data=_large(clf), location=path.name + ".data")


def _large(clf) -> bool:
    """Weights past 1.5 GB go to a file beside the graph: one protobuf cannot hold more than 2 GB."""
    return sum(p.numel() * p.element_size() for p in clf.model.parameters()) > 1_500_000_000


def _quantize_int8(src: Path, dst: Path, large: bool) -> None:
    """Dynamic int8 quantization: int8 weights with one scale per output channel, activations quantized per
    batch at run time. Per channel rather than per tensor: on SST-2 it kept the mpnet teacher at 92.70%
    (fp32 93.25%) where one scale per tensor dropped it to 89.73%, for about 10% more latency at batch 1."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet():
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8, per_channel=True,
                         use_external_data_format=large)


def _portable_tokenizer_class(folder: Path) -> None:
    """transformers 5 names a plain fast tokenizer ``TokenizersBackend``, a class transformers 4 (which
    optimum-onnx requires) lacks; ``PreTrainedTokenizerFast`` names the same class in both."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    if config.get("tokenizer_class") == "TokenizersBackend":
        config["tokenizer_class"] = "PreTrainedTokenizerFast"
        atomic_write_json(path, config)


def _prepare_out(out: Path, source: Path) -> None:
    if out.resolve() == source.resolve():
        raise ConfigError(f"--out {out} is the model folder itself; choose a new folder")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / EXPORT_MANIFEST).is_file())):
        raise ConfigError(f"--out {out} exists and is not a codistill export folder; choose a new folder")


def _replace_folder(tmp: Path, out: Path) -> None:
    """Move the finished folder ``tmp`` to ``out``, replacing an earlier export there."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{time.time_ns()}")
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _onnx_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith(ONNX_FILE))


def export_onnx(model_dir: str | Path, out: str | Path, *, int8: bool = False, opset: int = OPSET,
                check_texts: Sequence[str] | None = None, max_length: int = TrainConfig.max_length,
                tolerance: float = FP32_TOLERANCE) -> ExportReport:
    """Export the classifier in ``model_dir`` (any folder codistill writes, or a Hub name) to an ONNX folder
    ``out`` and check it against PyTorch on ``check_texts`` (default: :data:`CHECK_TEXTS`)."""
    import onnxruntime

    from codistill.evaluate import agreement
    from codistill.models import label_names, load_classifier

    onnx = require_onnx()
    start = time.perf_counter()
    source = Path(model_dir).expanduser()
    if source.is_dir() and is_onnx_folder(source):
        raise ConfigError(f"model '{model_dir}' is already an ONNX folder; export its PyTorch original")
    out = Path(out)
    _prepare_out(out, source)
    clf = load_classifier(str(model_dir), what="model")
    clf.model.eval()
    texts = list(check_texts)[:CHECK_LIMIT] if check_texts else list(CHECK_TEXTS)
    input_names = graph_inputs(clf)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    os.chmod(tmp, DIR_MODE)  # mkdtemp makes it private; the export is an ordinary folder
    try:
        staged = tmp / "fp32"
        staged.mkdir()
        _torch_to_onnx(clf, input_names, staged / ONNX_FILE, opset)
        if int8:
            _quantize_int8(staged / ONNX_FILE, tmp / ONNX_FILE, _large(clf))
        else:
            for f in staged.iterdir():
                f.rename(tmp / f.name)
        shutil.rmtree(staged)
        clf.model.config.save_pretrained(tmp)
        clf.tokenizer.save_pretrained(tmp)
        _portable_tokenizer_class(tmp)
        manifest: dict[str, Any] = {
            "format": "onnx", "precision": "int8" if int8 else "fp32", "opset": opset, "inputs": input_names,
            "outputs": ["logits"], "source": str(model_dir), "label_names": label_names(clf.model.config),
            "is_decoder": clf.is_decoder, "parameters": clf.num_parameters(),
            "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__},
        }
        atomic_write_json(tmp / EXPORT_MANIFEST, manifest)
        exported = load_predictor(tmp, max_length=max_length).probabilities(texts)
        reference = torch_predictor(clf, max_length).probabilities(texts)
        diff = float(np.abs(exported - reference).max())
        agree = agreement(exported.argmax(-1).tolist(), reference.argmax(-1).tolist())
        if not int8 and not diff <= tolerance:
            raise CodistillError(f"the ONNX export of '{model_dir}' differs from PyTorch by {diff:.2e} in a class "
                                 f"probability (tolerance {tolerance:.0e}); nothing was written")
        report = ExportReport(out=str(out), source=str(model_dir), precision=manifest["precision"], opset=opset,
                              inputs=input_names, parameters=manifest["parameters"], onnx_bytes=_onnx_bytes(tmp),
                              checked_texts=len(texts), max_abs_diff=diff, agreement=agree,
                              tolerance=None if int8 else tolerance, seconds=time.perf_counter() - start)
        if int8 and agree < INT8_AGREEMENT_WARNING:
            report.warning = (f"int8 changed the predicted class of {1 - agree:.1%} of the check texts; measure its "
                              "accuracy (codistill predict on labelled data) before shipping it, or ship fp32")
        manifest["check"] = {k: v for k, v in asdict(report).items() if k in (
            "checked_texts", "max_abs_diff", "agreement", "tolerance", "warning")}
        atomic_write_json(tmp / EXPORT_MANIFEST, manifest)
        _replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return report
