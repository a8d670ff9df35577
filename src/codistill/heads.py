"""A classification head transformers does not have: a BERT-family classifier that reads the *sentence
embedding* (the mean of its last layer over the real tokens, which sentence-transformers backbones such as
all-MiniLM-L6-v2 were trained to make meaningful) instead of the [CLS] token.

``BertForSequenceClassification`` classifies from ``tanh(W h_[CLS])``; on all-MiniLM-L6-v2 the [CLS] state
was never trained for anything, while the mean-pooled one is the model's whole point. The class here is
registered with transformers' auto classes under its own ``model_type`` (``codistill_bert_mean``), so a saved
student loads back as itself wherever codistill is imported, and plain transformers refuses the unknown type
rather than silently reading [CLS].
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification, BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

from codistill.config import POOLINGS
from codistill.errors import ConfigError
from codistill.losses import masked_mean_pool

MEAN_MODEL_TYPE = "codistill_bert_mean"


class BertMeanConfig(BertConfig):
    """A :class:`~transformers.BertConfig` under its own model type, so the auto classes pick the mean head."""

    model_type = MEAN_MODEL_TYPE


class BertMeanForSequenceClassification(BertPreTrainedModel):
    """``logits = W dropout(mean_t h_L[t]) + b`` over real tokens (``attention_mask``), ``(B, T) -> (B, C)``.

    The encoder is ``BertModel`` without its pooler; hidden states and attentions are returned like
    ``BertForSequenceClassification``'s, so every loss term and layer map works unchanged.
    """

    config_class = BertMeanConfig

    def __init__(self, config: BertMeanConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, output_attentions: bool | None = None,
                return_dict: bool | None = None, **kwargs) -> SequenceClassifierOutput:
        out = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                        output_hidden_states=output_hidden_states, output_attentions=output_attentions,
                        return_dict=True)
        hidden = out.last_hidden_state
        mask = attention_mask if attention_mask is not None else torch.ones(hidden.shape[:2], device=hidden.device)
        logits = self.classifier(self.dropout(masked_mean_pool(hidden, mask)))
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states,
                                        attentions=out.attentions)


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
