"""The architecture registry: every parameter of every described family lands in a group, in order from
input to output; unknown families get one sentence from the methods that need layers, and keep working
with those that need only the head."""
from __future__ import annotations

import pytest
import torch
import transformers as T

from tunesmith.architectures import (ARCHITECTURES, architecture_of, frozen_prefix_length, known_model_types, lora_targets,
                                     parameter_groups, set_trainable)
from tunesmith.config import MethodConfig
from tunesmith.errors import TunesmithError
from tunesmith.methods import adapt_model

TEXT = dict(vocab_size=64, num_labels=3)


def tiny_bert(cls, **extra):
    return cls(T.BertConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, **TEXT, **extra))


def tiny_roberta(cls):
    return cls(T.RobertaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, **TEXT))


def tiny_electra(cls):  # embeddings smaller than the hidden size: embeddings_project belongs to the input stage
    return cls(T.ElectraConfig(embedding_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, **TEXT))


def tiny_distilbert(cls):
    return cls(T.DistilBertConfig(dim=16, hidden_dim=32, n_layers=3, n_heads=2, vocab_size=64, num_labels=2))


def tiny_llama(cls):
    return cls(T.LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                             pad_token_id=0, **TEXT))


def tiny_mobilenet(cls):
    return cls(T.MobileNetV2Config(depth_multiplier=0.35, image_size=32, num_labels=3, tf_padding=False))  # plain, as the embedded one


def small_efficientnet_lite():
    from tunesmith.assets.efficientnet_lite import EfficientNetLiteConfig, EfficientNetLiteForImageClassification

    return EfficientNetLiteForImageClassification(EfficientNetLiteConfig(num_labels=3))


def tiny_whisper(cls, **extra):
    return cls(T.WhisperConfig(d_model=16, encoder_layers=3, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                               encoder_ffn_dim=32, decoder_ffn_dim=32, num_mel_bins=8, max_source_positions=10, vocab_size=64,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1, num_labels=3, **extra))


# (family, model, expected layer groups, the head's module prefixes); one row per task class each family serves
MODELS = [
    ("bert", lambda: tiny_bert(T.BertForSequenceClassification), 3, {"bert.pooler", "classifier"}),
    ("bert", lambda: tiny_bert(T.BertForTokenClassification), 3, {"classifier"}),
    ("bert", lambda: tiny_bert(T.BertForQuestionAnswering), 3, {"qa_outputs"}),
    ("roberta", lambda: tiny_roberta(T.RobertaForSequenceClassification), 3, {"classifier"}),
    ("roberta", lambda: tiny_roberta(T.RobertaForTokenClassification), 3, {"classifier"}),
    ("roberta", lambda: tiny_electra(T.ElectraForSequenceClassification), 3, {"classifier"}),
    ("distilbert", lambda: tiny_distilbert(T.DistilBertForSequenceClassification), 3, {"pre_classifier", "classifier"}),
    ("distilbert", lambda: tiny_distilbert(T.DistilBertForQuestionAnswering), 3, {"qa_outputs"}),
    ("llama", lambda: tiny_llama(T.LlamaForSequenceClassification), 3, {"model.norm", "score"}),
    ("llama", lambda: tiny_llama(T.LlamaForCausalLM), 3, {"model.norm", "lm_head"}),
    # 17 blocks: 16 inverted residuals, then the final 1x1 conv as the top layer
    ("mobilenet_v2", lambda: tiny_mobilenet(T.MobileNetV2ForImageClassification), 17, {"classifier"}),
    ("efficientnet_lite", small_efficientnet_lite, 17, {"classifier"}),  # 16 MBConv blocks, then the final 1x1 conv
    ("whisper", lambda: tiny_whisper(T.WhisperForAudioClassification), 3, {"encoder.layer_norm", "projector", "classifier"}),
    ("whisper", lambda: tiny_whisper(T.WhisperForAudioClassification, use_weighted_layer_sum=True), 3,
     {"", "encoder.layer_norm", "projector", "classifier"}),  # "": layer_weights sits on the model itself
]


def module_of(name: str) -> str:
    return name.rpartition(".")[0]


@pytest.mark.parametrize("family,build,layers,head", MODELS, ids=[f"{m[0]}-{i}" for i, m in enumerate(MODELS)])
def test_every_parameter_lands_in_a_group_in_order(family, build, layers, head):
    torch.manual_seed(0)
    model = build()
    groups = parameter_groups(model)
    assert groups.architecture == family and groups.complete, groups.unmatched[:5]
    assert groups.num_layers == layers
    assert {prefix_of(n, head) for n, _ in groups.head} == head  # the head is these modules, all of them
    assert groups.embeddings, "the input stage is a group of its own"
    named = dict(model.named_parameters())
    grouped = [n for _, params in groups.ordered() for n, _ in params] + [n for n, _ in groups.fixed]
    assert sorted(grouped) == sorted(named)  # each parameter exactly once (a fixed table in none of the groups)
    # input to output: the layer groups follow the module order of the model's own forward
    order = {n: i for i, n in enumerate(named)}
    firsts = [order[params[0][0]] for params in groups.layers]
    assert firsts == sorted(firsts)



@pytest.mark.parametrize("method", ["full", "freeze", "gradual", "bitfit", "head"])
def test_whispers_sinusoidal_positions_stay_fixed_under_every_method(method):
    """transformers freezes the encoder's sinusoidal table itself; full (every weight) must not thaw it, and
    gradual never reaches it, as it sits in no group."""
    model, groups = adapt_model(tiny_whisper(T.WhisperForAudioClassification), MethodConfig(method=method, freeze_layers=1))
    assert [n for n, _ in groups.fixed] == ["encoder.embed_positions.weight"]
    assert not model.encoder.embed_positions.weight.requires_grad
    assert all("embed_positions" not in n for _, params in groups.ordered() for n, _ in params)

def prefix_of(name: str, prefixes: set[str]) -> str | None:
    """The longest of `prefixes` that the parameter's module name starts with ('' for a model-level parameter)."""
    module = module_of(name)
    matches = [p for p in prefixes if (p and (module == p or module.startswith(p + "."))) or (not p and module == "")]
    return max(matches, key=len) if matches else None


def test_every_family_is_tested():
    assert {m[0] for m in MODELS} == set(ARCHITECTURES) - {"ernie"}  # ERNIE shares BERT's layout entry for entry
    assert ARCHITECTURES["ernie"].layers == ARCHITECTURES["bert"].layers


@pytest.mark.parametrize("family,build", [(m[0], m[1]) for m in MODELS if m[0] != "llama" or "Causal" not in str(m[1])],
                         ids=[m[0] for m in MODELS if m[0] != "llama" or "Causal" not in str(m[1])])
def test_lora_default_targets_exist_in_the_layers(family, build):
    """LoRA's default targets name real modules, every one of them inside a layer group (never the head)."""
    import re

    model = build()
    targets = lora_targets(architecture_of(model), model)
    names = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Conv1d))]
    if isinstance(targets, str):
        hit = [n for n in names if re.fullmatch(targets, n)]
    else:
        hit = [n for n in names if any(n == t or n.endswith("." + t) for t in targets)]
    assert hit
    layer_params = {n for params in parameter_groups(model).layers for n, _ in params}
    assert all(f"{n}.weight" in layer_params for n in hit)


def test_head_method_on_a_conv_net_trains_only_the_classifier():
    """The bug this registry fixes: MobileNetV2's blocks matched no table and silently trained as 'head'."""
    model = tiny_mobilenet(T.MobileNetV2ForImageClassification)
    model, groups = adapt_model(model, MethodConfig(method="head"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"classifier.weight", "classifier.bias"}
    assert frozen_prefix_length(groups) == groups.num_layers + 1  # embeddings and every block: a fixed feature extractor


def test_freeze_counts_conv_blocks():
    model = tiny_mobilenet(T.MobileNetV2ForImageClassification)
    model, groups = adapt_model(model, MethodConfig(method="freeze", freeze_layers=10))
    frozen_blocks = [i for i, params in enumerate(groups.layers) if not any(p.requires_grad for _, p in params)]
    assert frozen_blocks == list(range(10))


def tiny_gpt2():
    return T.GPT2ForSequenceClassification(T.GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=64, num_labels=2, pad_token_id=0))


def test_an_unknown_family_keeps_the_methods_that_need_only_the_head():
    model = tiny_gpt2()
    assert architecture_of(model) is None and "gpt2" not in known_model_types()
    groups = parameter_groups(model)
    assert not groups.complete and {n for n, _ in groups.head} == {"score.weight"}  # outside the base model
    assert frozen_prefix_length(groups) == 0
    model, groups = adapt_model(model, MethodConfig(method="head"))
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {"score.weight"}


@pytest.mark.parametrize("method,option", [("freeze", "--method freeze"), ("gradual", "--method gradual")])
def test_an_unknown_family_gets_one_sentence_from_methods_that_need_layers(method, option):
    with pytest.raises(TunesmithError) as caught:
        adapt_model(tiny_gpt2(), MethodConfig(method=method))
    message = str(caught.value)
    assert message.startswith(option) and "'gpt2'" in message and "--method full" in message and "\n" not in message


def test_layer_wise_learning_rates_need_the_layers():
    from tunesmith.train.optim import group_learning_rates

    groups = parameter_groups(tiny_gpt2())
    assert group_learning_rates(groups, 1e-3, None)  # plain learning rates need nothing
    with pytest.raises(TunesmithError, match="--layer-lr-decay needs the model's layers"):
        group_learning_rates(groups, 1e-3, 0.8)


def test_a_parameter_the_description_misses_makes_the_groups_incomplete():
    model = tiny_bert(T.BertForSequenceClassification)
    model.bert.register_parameter("extra_scale", torch.nn.Parameter(torch.ones(1)))
    groups = parameter_groups(model)
    assert [n for n, _ in groups.unmatched] == ["bert.extra_scale"] and not groups.complete
    with pytest.raises(TunesmithError, match=r"bert description matches none for 1 of them \(bert.extra_scale\)"):
        groups.require_layers("--method freeze")
    set_trainable(groups.head, True)  # methods that need only the head still work


def test_lora_refuses_a_tensorflow_padded_mobilenet_in_one_sentence():
    model = T.MobileNetV2ForImageClassification(T.MobileNetV2Config(depth_multiplier=0.35, image_size=32, num_labels=3))
    with pytest.raises(TunesmithError, match="pads the TensorFlow way"):
        adapt_model(model, MethodConfig(method="lora"))
