"""Shared fixtures: tiny synthetic datasets written to temporary folders (CSV, TSV, JSONL)."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

# Tests never touch the network: Hub code paths are exercised with in-memory stand-ins.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

POSITIVE_WORDS = ["great", "lovely", "superb", "fine", "excellent", "wonderful"]
NEGATIVE_WORDS = ["awful", "boring", "dreadful", "poor", "terrible", "dull"]


def load_benchmark(name: str):
    """A script of benchmarks/ imported as a module (they are not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_rows(n: int, seed: int = 0, classes: tuple[str, ...] = ("negative", "positive")) -> list[dict]:
    """``n`` rows cycling through ``classes``; each text carries a class-specific word, so it is learnable."""
    import random

    rng = random.Random(seed)
    vocab = {0: NEGATIVE_WORDS, 1: POSITIVE_WORDS}
    rows = []
    for i in range(n):
        label = i % len(classes)
        words = vocab.get(label, [f"class{label}word"])
        text = f"the film was {rng.choice(words)} and the plot {rng.choice(words)} number {i}"
        rows.append({"text": text, "label": label})
    return rows


def write_csv(path: Path, rows: list[dict], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def csv_folder(tmp_path: Path) -> Path:
    """A folder with train (60 rows), validation (10) and test (20) CSV files, labels 0/1."""
    folder = tmp_path / "toy"
    write_csv(folder / "train.csv", synthetic_rows(60, seed=1))
    write_csv(folder / "validation.csv", synthetic_rows(10, seed=2))
    write_csv(folder / "test.csv", synthetic_rows(20, seed=3))
    return folder


@pytest.fixture
def jsonl_file(tmp_path: Path) -> Path:
    """One JSONL file of 100 rows with string labels, to be split by the loader."""
    rows = [{"body": r["text"], "stars": ["negative", "positive"][r["label"]]} for r in synthetic_rows(100)]
    return write_jsonl(tmp_path / "reviews.jsonl", rows)


# -- tiny random models, saved as real save_pretrained folders -----------------------------------------

TOY_WORDS = ["the", "film", "was", "and", "plot", "number", "not", "very", "movie", "a"] + POSITIVE_WORDS + NEGATIVE_WORDS


def make_word_tokenizer():
    """A BERT-style whitespace word-level fast tokenizer over the toy vocabulary (+ the numbers 0..199)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + TOY_WORDS + [str(n) for n in range(200)])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")


def make_qwen_tokenizer():
    """A real ``Qwen2Tokenizer`` (byte-level BPE) with a small vocabulary trained on the toy words. Like
    base LLM tokenizers it has no pad token (the loader must set one) and it pads on the left."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(TOY_WORDS)] * 5 + [" ".join(str(n) for n in range(200))], trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split()) for m in model["merges"]]
    return Qwen2Tokenizer(vocab=model["vocab"], merges=merges, eos_token="<|endoftext|>", pad_token=None,
                          unk_token=None, padding_side="left")


def save_tiny_bert(folder: Path, layers: int, width: int, seed: int, num_labels: int = 2) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    tokenizer = make_word_tokenizer()
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=width, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * width, max_position_embeddings=64,
                        num_labels=num_labels, pad_token_id=tokenizer.pad_token_id)
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_qwen(folder: Path, layers: int, width: int, seed: int, num_labels: int = 2) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    tokenizer = make_qwen_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=64, num_labels=num_labels,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id)
    Qwen2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def save_tiny_causal_lm(folder: Path, layers: int = 2, width: int = 32, seed: int = 3) -> Path:
    """A random Qwen2 causal LM with the toy byte-level tokenizer (a stand-in for SmolLM2 in fluency and
    proposal tests)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = make_qwen_tokenizer()
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=width, intermediate_size=2 * width,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.eos_token_id)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_lm(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random causal LM folder."""
    return save_tiny_causal_lm(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory) -> Path:
    """A 4-layer, 32-wide random BERT classifier (2 labels)."""
    return save_tiny_bert(tmp_path_factory.mktemp("teacher"), layers=4, width=32, seed=0)


@pytest.fixture(scope="session")
def tiny_student(tmp_path_factory) -> Path:
    """A 2-layer, 16-wide random BERT with the teacher's tokenizer."""
    return save_tiny_bert(tmp_path_factory.mktemp("student"), layers=2, width=16, seed=1)


@pytest.fixture(scope="session")
def tiny_qwen(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random Qwen2 classifier with a word-level tokenizer and no pad token."""
    return save_tiny_qwen(tmp_path_factory.mktemp("qwen"), layers=2, width=32, seed=2)


def fast_train(**overrides):
    """A tiny training recipe for tests: a few steps, short texts, no head-only probe stage."""
    from codistill.config import TrainConfig

    return TrainConfig(**{"epochs": 2, "min_steps": 4, "batch_size": 4, "lr": 1e-3, "max_length": 32,
                          "eval_batch_size": 16, "probe_steps": 0, "classifier_lr": None, **overrides})


# the tiny recipe as sweep/config-file options (every test sweep and CLI distill uses it)
FAST_TRAIN_OPTIONS = {"epochs": 1, "min_steps": 2, "batch_size": 4, "max_length": 32, "eval_batch_size": 16,
                      "probe_steps": 0}


def run_distill(dataset, teacher, out, *, k: int, student, seed: int = 0, method=None, train=None,
                counterfactuals=None, cod=None, generator=None, llm_teacher=None, cf=None, **kwargs):
    """``codistill.runs.distill`` with the run's options given as keywords (the tests' shorthand), returning
    what ``metrics.json`` holds. The student is required (a test never trains the real backbone by accident)
    and training is :func:`fast_train` unless given."""
    from codistill.config import DistillConfig, RunConfig
    from codistill.runs import distill

    run = RunConfig(teacher=str(teacher) if teacher is not None else None, k=k, seed=seed,
                    counterfactuals=str(counterfactuals) if counterfactuals is not None else None, cod=cod,
                    generator=generator, llm_teacher=llm_teacher, student=student, distill=method or DistillConfig(),
                    train=train or fast_train(), cf=cf or {})
    return distill(dataset, run, out, **kwargs).to_dict()


def lwd_terms(student, teacher, include_embeddings: bool = False):
    """The LWD preset's term modules for a student and teacher (CE, KD, hidden-state MSE)."""
    from codistill.config import DistillConfig, method_terms
    from codistill.losses import build_terms

    specs = method_terms(DistillConfig(method="lwd", include_embeddings=include_embeddings))
    return build_terms(specs, student.num_layers, teacher.num_layers, student.hidden_size, teacher.hidden_size, 2)


class LocalServer:
    """A scripted HTTP server on 127.0.0.1 (a free port) serving ``handler`` (a ``BaseHTTPRequestHandler``
    class) in a thread; ``with`` starts and stops it, ``url`` is its OpenAI-style base URL."""

    def __init__(self, handler) -> None:
        import threading
        from http.server import ThreadingHTTPServer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
