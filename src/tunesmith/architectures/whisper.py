"""Whisper's encoder (transformers' WhisperForAudioClassification): two convs over the log-mel frames
with the positional table, transformer layers, the final layer norm, then projector and classifier."""
from __future__ import annotations

import torch
from torch import nn

from . import Architecture, register_architecture


class WhisperSplit:
    """The audio classifier called layer by layer, for the frozen-layer cache: a row per encoder position
    (Whisper attends to every frame, padding included, so every example keeps the same rows)."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.encoder = model.encoder
        self.layers = model.encoder.layers

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    def per_token(self, depth: int) -> bool:
        return False

    def bottom(self, batch: dict, depth: int) -> torch.Tensor:
        encoder = self.encoder
        hidden = nn.functional.gelu(encoder.conv1(batch["input_features"]))
        hidden = nn.functional.gelu(encoder.conv2(hidden)).permute(0, 2, 1)
        hidden = hidden + encoder.embed_positions.weight[:hidden.shape[1]]
        return self.layers_from(hidden, 0, depth)

    def layers_from(self, hidden: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        for layer in self.layers[start:stop]:
            hidden = layer(hidden, None)
        return hidden

    def top(self, hidden: torch.Tensor, mask, depth: int) -> torch.Tensor:
        hidden = self.encoder.layer_norm(self.layers_from(hidden, depth, self.num_layers))
        return self.model.classifier(self.model.projector(hidden).mean(dim=1))


def split(model: nn.Module) -> WhisperSplit | None:
    """Only the plain classifier: a weighted sum of every layer's output, or LayerDrop, needs the whole forward."""
    config = getattr(model, "config", None)
    if (not hasattr(model, "projector") or not hasattr(model, "encoder") or getattr(config, "use_weighted_layer_sum", True)
            or getattr(config, "encoder_layerdrop", 0.0)):
        return None
    return WhisperSplit(model)


register_architecture(Architecture(
    "whisper", ("whisper",),
    embeddings=r"encoder\.(conv1|conv2)\.",
    fixed=r"encoder\.embed_positions\.",  # sinusoidal, frozen by transformers itself; full and gradual must not train it
    layers=(r"encoder\.layers\.(\d+)\.",),
    # layer_weights: the learned mix of every layer's output when config.use_weighted_layer_sum is set
    head=r"(encoder\.layer_norm|projector|classifier)\.|layer_weights$",
    lora=("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"),
    ia3=r".*\.(k_proj|v_proj|fc2)", ia3_feedforward=r".*\.fc2",
    attention_output=r".*\.self_attn\.out_proj", feedforward_output=r".*\.fc2",
    split=split,
))
