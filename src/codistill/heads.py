"""The student's classification head: ``cls`` (the model's own) or ``mean`` (the mean of the last layer over the
real tokens, :mod:`codistill.modeling_bert_mean`), and the switch between them.

The mean head's classes are registered with transformers' auto classes here, so a saved mean-pooling student
loads back as itself wherever codistill is imported; elsewhere it loads with ``trust_remote_code=True`` from
the modeling file saved beside its weights.
"""

from __future__ import annotations

from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

from codistill.config import POOLINGS
from codistill.errors import ConfigError
from codistill.modeling_bert_mean import MEAN_MODEL_TYPE, BertMeanConfig, BertMeanForSequenceClassification

AutoConfig.register(MEAN_MODEL_TYPE, BertMeanConfig, exist_ok=True)
AutoModelForSequenceClassification.register(BertMeanConfig, BertMeanForSequenceClassification, exist_ok=True)


MEAN_CAPABLE = ("bert", MEAN_MODEL_TYPE)


def resolve_pooling(model: nn.Module, pooling: str) -> str:
    """``auto`` -> ``mean`` for a BERT-family model (MiniLM, BERT), else ``cls``; other names unchanged."""
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got '{pooling}'")
    if pooling == "auto":
        return "mean" if model.config.model_type in MEAN_CAPABLE else "cls"
    return pooling


def with_pooling(model: nn.Module, pooling: str) -> nn.Module:
    """``model`` classifying from ``pooling`` (``auto``: :func:`resolve_pooling`): ``cls`` returns it
    unchanged; ``mean`` returns a :class:`BertMeanForSequenceClassification` with the same encoder weights
    (the [CLS] pooler dropped) and a fresh head (the caller seeds torch). Only BERT-family encoders (MiniLM,
    BERT) have the mean head."""
    pooling = resolve_pooling(model, pooling)
    if pooling == "cls" or model.config.model_type == MEAN_MODEL_TYPE:
        return model
    if model.config.model_type != "bert":
        raise ConfigError(f"pooling 'mean' is available for BERT-family students (MiniLM, BERT), not "
                          f"'{model.config.model_type}'; use pooling 'cls'")
    options = {k: v for k, v in model.config.to_dict().items() if k not in ("model_type", "architectures")}
    config = BertMeanConfig.from_dict(options)
    mean = BertMeanForSequenceClassification(config)
    missing, unexpected = mean.bert.load_state_dict(model.bert.state_dict(), strict=False)
    if missing or any(not key.startswith("pooler.") for key in unexpected):
        raise RuntimeError(f"encoder weights do not carry over: missing {missing}, unexpected {unexpected}")
    return mean.to(next(model.parameters()).device)
