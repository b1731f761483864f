"""BERT and its encoder relatives (MiniLM is a BERT; RoBERTa, XLM-R, CamemBERT, ELECTRA, ERNIE share the layout),
and their sequence classifiers called part by part.

Two speed paths call the parts one by one: the frozen-layer cache (train/frozen_cache.py) runs the bottom
layers once, and the first-token forward (train/first_token.py) runs the last layer for [CLS] only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import Architecture, register_architecture


@dataclass
class EncoderParts:
    model: nn.Module          # the whole ...ForSequenceClassification
    embeddings: nn.Module
    project: nn.Module | None  # ELECTRA's embeddings_project when embedding and hidden sizes differ
    layers: nn.ModuleList
    head_style: str

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def per_token(self, depth: int) -> bool:
        """Cached rows follow the tokens below the top; above it the head reads the first token alone."""
        return depth < self.num_layers

    def attention_mask(self, hidden: torch.Tensor, mask: torch.Tensor):
        """The mask format the model's own layers expect (it depends on the attention implementation)."""
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.model.config, inputs_embeds=hidden, attention_mask=mask)

    def bottom(self, batch: dict, depth: int) -> torch.Tensor:
        """Embeddings then the bottom `depth` layers, as the model's forward runs them: (batch, rows, hidden)."""
        hidden = self.embeddings(input_ids=batch["input_ids"], token_type_ids=batch.get("token_type_ids"))
        if self.project is not None:
            hidden = self.project(hidden)
        hidden = self.layers_from(hidden, batch["attention_mask"], 0, depth)
        return hidden if self.per_token(depth) else hidden[:, :1]

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

    def top(self, hidden: torch.Tensor, mask: torch.Tensor, depth: int) -> torch.Tensor:
        """The logits from the output of the bottom `depth` layers."""
        return self.classify(self.layers_from(hidden, mask, depth, self.num_layers))


def encoder_parts(model: nn.Module) -> EncoderParts | None:
    """The embeddings, layers and head of a BERT-family sequence classifier, or None for other models."""
    from transformers import PreTrainedModel

    from . import architecture_of

    config = getattr(model, "config", None)
    architecture = architecture_of(model)
    style = architecture.head_style if architecture else None  # how its sequence-classification head reads the last layer
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


LAYOUT = dict(
    embeddings=r"(embeddings|embeddings_project)\.",  # ELECTRA projects small embeddings up to the hidden size
    layers=(r"encoder\.layer\.(\d+)\.",),
    # sequence classifiers: pooler + classifier (RoBERTa's classifier.dense/out_proj); tokens: classifier; QA: qa_outputs
    head=r"(pooler|classifier|qa_outputs)\.",
    lora=("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"),
    ia3=r".*\.(key|value|layer\.\d+\.output\.dense)", ia3_feedforward=r".*\.layer\.\d+\.output\.dense",
    attention_output=r".*\.layer\.\d+\.attention\.output\.dense", feedforward_output=r".*\.layer\.\d+\.output\.dense",
)

# sequence classifiers get the frozen-layer cache (encoder_parts); token classifiers and QA read every position
# of the top layer and train uncached
register_architecture(Architecture("bert", ("bert",), head_style="pooler", split=encoder_parts, **LAYOUT))  # a tanh pooler on [CLS]
register_architecture(Architecture("roberta", ("roberta", "xlm-roberta", "camembert", "electra"), head_style="first_token",
                                   split=encoder_parts, **LAYOUT))
register_architecture(Architecture("ernie", ("ernie",), **LAYOUT))  # its task embeddings: no cache or first-token path
