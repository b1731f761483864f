"""Llama and the decoders built like it (SmolLM, Mistral, Qwen, Gemma)."""
from __future__ import annotations

from . import Architecture, register_architecture

register_architecture(Architecture(
    "llama", ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "smollm3"),
    embeddings=r"embed_tokens\.",
    layers=(r"layers\.(\d+)\.",),
    head=r"(norm|score|lm_head)\.",  # the final norm trains with the head; `norm.` alone, not the layers' *_layernorm
    lora=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
    ia3=r".*\.(k_proj|v_proj|mlp\.down_proj)", ia3_feedforward=r".*\.mlp\.down_proj",
    attention_output=r".*\.self_attn\.o_proj", feedforward_output=r".*\.mlp\.down_proj",
))
