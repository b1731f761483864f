"""DistilBERT: BERT with six layers under other names."""
from __future__ import annotations

from . import Architecture, register_architecture

register_architecture(Architecture(
    "distilbert", ("distilbert",),
    embeddings=r"embeddings\.",
    layers=(r"transformer\.layer\.(\d+)\.",),
    head=r"(pre_classifier|classifier|qa_outputs)\.",
    lora=("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
    ia3=r".*\.(k_lin|v_lin|ffn\.lin2)", ia3_feedforward=r".*\.ffn\.lin2",
    attention_output=r".*\.attention\.out_lin", feedforward_output=r".*\.ffn\.lin2",
))
