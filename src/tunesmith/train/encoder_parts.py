"""The embeddings, layers and head of a BERT-family sequence classifier, called one by one.

Two speed-ups need them: the frozen-layer cache (train/frozen_cache.py) runs the bottom layers
once, and the first-token forward (train/first_token.py) runs the last layer for [CLS] only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

# model_type -> how its sequence-classification head reads the last hidden states
HEAD_STYLE = {"bert": "pooler", "roberta": "first_token", "xlm-roberta": "first_token", "camembert": "first_token", "electra": "first_token"}


@dataclass
class EncoderParts:
    model: nn.Module          # the whole ...ForSequenceClassification
    embeddings: nn.Module
    project: nn.Module | None  # ELECTRA's embeddings_project when embedding and hidden sizes differ
    layers: nn.ModuleList
    head_style: str

    def attention_mask(self, hidden: torch.Tensor, mask: torch.Tensor):
        """The mask format the model's own layers expect (it depends on the attention implementation)."""
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)

    def bottom(self, batch: dict, num_layers: int) -> torch.Tensor:
        """Embeddings then the bottom `num_layers` layers, as the model's forward runs them."""
        hidden = self.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        if self.project is not None:
            hidden = self.project(hidden)
        return self.layers_from(hidden, batch["attention_mask"], 0, num_layers)

    def layers_from(self, hidden: torch.Tensor, mask: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if stop > start:
            extended = self.attention_mask(hidden, mask)
            for layer in self.layers[start:stop]:
                hidden = layer(hidden, extended)
        return hidden

    def classify(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.head_style == "pooler":  # BERT: tanh pooler on [CLS], dropout, linear
            return self.model.classifier(self.model.dropout(self.model.base_model.pooler(hidden)))
        return self.model.classifier(hidden)  # RoBERTa/ELECTRA heads take [:, 0] themselves


def encoder_parts(model: nn.Module) -> EncoderParts | None:
    """The embeddings, layers and head of a supported classifier, or None for other architectures."""
    from transformers import PreTrainedModel

    config = getattr(model, "config", None)
    style = HEAD_STYLE.get(getattr(config, "model_type", None))
    if style is None or not isinstance(model, PreTrainedModel) or config.is_decoder or getattr(config, "add_cross_attention", False):
        return None
    base = model.base_model
    layers = getattr(getattr(base, "encoder", None), "layer", None)
    if (base is model or not type(model).__name__.endswith("ForSequenceClassification") or not hasattr(base, "embeddings")
            or not isinstance(layers, nn.ModuleList) or not hasattr(model, "classifier")):
        return None
    if style == "pooler" and (getattr(base, "pooler", None) is None or not hasattr(model, "dropout")):
        return None
    return EncoderParts(model, base.embeddings, getattr(base, "embeddings_project", None), layers, style)
