"""The mean-pooling BERT classifier, self-contained: this file imports only torch and transformers, because
``save_pretrained`` copies it beside a student's weights (``auto_map`` in its ``config.json``), so the student
loads without codistill::

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

``BertForSequenceClassification`` classifies from ``tanh(W h_[CLS])``; on all-MiniLM-L6-v2 the [CLS] state
was never trained for anything, while the mean of the last layer over the real tokens is the sentence
embedding the model was trained to make. The class lives under its own ``model_type``
(``codistill_bert_mean``), so transformers never reads such a student as a [CLS] classifier.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput

MEAN_MODEL_TYPE = "codistill_bert_mean"


def masked_mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of the real tokens: ``(B, T, D), (B, T) -> (B, D)``."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)


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


# save_pretrained writes auto_map and copies this file beside the weights
BertMeanConfig.register_for_auto_class()
BertMeanForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
