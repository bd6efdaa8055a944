"""A sequence classifier over the mean of an encoder's token states (sentence-transformers pooling).

Sentence-embedding checkpoints such as all-MiniLM-L6-v2 were trained so that the attention-masked
mean of the last hidden states carries the sentence; their [CLS] state and pooler were never tuned.
`AutoModelForSequenceClassification` always classifies [CLS], so this class classifies the mean.

It is a Hugging Face remote-code model: `save_pretrained` copies this file into the model directory
and records it in config.json's `auto_map`, so any loader that passes `trust_remote_code=True`
(the local server, the SageMaker handler, batch transform) rebuilds it from the directory alone.
Keep this file self-contained: it may import torch and transformers only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class MeanPoolingConfig(PretrainedConfig):
    """The encoder's own config (any AutoModel architecture) plus the classification head's settings."""

    model_type = "reviewpipe_mean_pooling"

    def __init__(
        self, encoder: dict[str, Any] | None = None, classifier_dropout: float = 0.1, **kwargs: Any
    ) -> None:
        self.encoder = dict(encoder or {})
        self.classifier_dropout = classifier_dropout
        # Read by loaders that cap the token length at the model's positions.
        kwargs.setdefault("max_position_embeddings", self.encoder.get("max_position_embeddings", 512))
        super().__init__(**kwargs)

    def encoder_config(self) -> PretrainedConfig:
        settings = dict(self.encoder)
        return AutoConfig.for_model(settings.pop("model_type"), **settings)


def without_pooler(build: Any, *args: Any, **kwargs: Any) -> PreTrainedModel:
    """`build(*args)` without the [CLS] pooler where the architecture has that switch (BERT, RoBERTa, ...)."""
    try:
        return build(*args, add_pooling_layer=False, **kwargs)
    except TypeError:
        return build(*args, **kwargs)


class MeanPoolingForSequenceClassification(PreTrainedModel):
    """logits = Linear(Dropout(masked mean of the encoder's last hidden states))."""

    config_class = MeanPoolingConfig
    base_model_prefix = "encoder"

    def __init__(self, config: MeanPoolingConfig) -> None:
        super().__init__(config)
        encoder_config = config.encoder_config()
        self.encoder = without_pooler(AutoModel.from_config, encoder_config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(encoder_config.hidden_size, config.num_labels)
        self.post_init()

    @classmethod
    def from_encoder(cls, encoder: PreTrainedModel, **config: Any) -> MeanPoolingForSequenceClassification:
        """A new head on a pretrained encoder (its weights are kept; the head is freshly initialised)."""
        model = cls(MeanPoolingConfig(encoder=encoder.config.to_dict(), **config))
        if getattr(encoder, "pooler", None) is not None:
            encoder.pooler = None  # unused here: it would only carry weights that never get a gradient
        model.encoder = encoder
        return model

    def _init_weights(self, module: nn.Module) -> None:
        if module is getattr(self, "classifier", None):
            std = getattr(self.config.encoder_config(), "initializer_range", 0.02)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> SequenceClassifierOutput:
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.encoder(**inputs).last_hidden_state
        if attention_mask is None:
            pooled = hidden.mean(dim=1)
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.float(), labels)
        return SequenceClassifierOutput(loss=loss, logits=logits)


MeanPoolingConfig.register_for_auto_class()
MeanPoolingForSequenceClassification.register_for_auto_class("AutoModelForSequenceClassification")
