"""Which sublayers each architecture family adapts: the one table for LoRA/DoRA, IA3 and bottleneck adapters.

Names are matched the way PEFT matches them: a plain string matches a module whose dotted name ends
with it (`output.dense` matches `encoder.layer.3.output.dense`); a string with regex characters
must match the whole dotted name. --target-modules overrides the LoRA/DoRA/IA3 targets.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import TunesmithError


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]
    lora: tuple[str, ...]     # every linear map inside a block: attention and feed-forward
    ia3: str                  # IA3 scales keys, values and the feed-forward activations ...
    ia3_feedforward: str      # ... the latter on the input of the feed-forward output projection
    attention_output: str     # the sublayer after which a Houlsby adapter sits (attention output projection)
    feedforward_output: str   # the sublayer after which both Houlsby and Pfeiffer adapters sit


FAMILIES = (
    Family("bert", ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie"),
           lora=("query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"),
           ia3=r".*\.(key|value|layer\.\d+\.output\.dense)", ia3_feedforward=r".*\.layer\.\d+\.output\.dense",
           attention_output=r".*\.layer\.\d+\.attention\.output\.dense", feedforward_output=r".*\.layer\.\d+\.output\.dense"),
    Family("distilbert", ("distilbert",),
           lora=("q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"),
           ia3=r".*\.(k_lin|v_lin|ffn\.lin2)", ia3_feedforward=r".*\.ffn\.lin2",
           attention_output=r".*\.attention\.out_lin", feedforward_output=r".*\.ffn\.lin2"),
    Family("llama", ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "gemma3_text", "smollm3"),
           lora=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"),
           ia3=r".*\.(k_proj|v_proj|mlp\.down_proj)", ia3_feedforward=r".*\.mlp\.down_proj",
           attention_output=r".*\.self_attn\.o_proj", feedforward_output=r".*\.mlp\.down_proj"),
)


def family_of(model) -> Family | None:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return next((f for f in FAMILIES if model_type in f.model_types), None)


def user_targets(option: str | None) -> list[str] | None:
    """--target-modules 'query,value' -> ['query', 'value']; None when not given."""
    if not option:
        return None
    names = [n.strip() for n in option.split(",") if n.strip()]
    if not names:
        raise TunesmithError("--target-modules is empty; give comma-separated module names such as 'query,value'.")
    return names


def model_type_of(model) -> str:
    return getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__


def known_model_types() -> str:
    return ", ".join(t for f in FAMILIES for t in f.model_types)
