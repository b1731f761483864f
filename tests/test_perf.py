"""Speed levers change speed only: the same numbers with and without them (tiny model, seconds)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

import tunesmith
from tunesmith import perf
from tunesmith.architectures import parameter_groups
from tunesmith.train.first_token import first_token_forward
from tunesmith.train.optim import build_optimizer


def tiny_classifier(folder, attention="sdpa", labels=3):
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    logging.set_verbosity_error()
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_pretrained(folder, num_labels=labels, attn_implementation=attention)


def padded_pairs(folder):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    return tokenizer(["the film was good", "bad", "a very boring and dull plot of the movie"], ["it is", "good film", "the"],
                     padding=True, return_tensors="pt")


def gradients(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


# -- first-token last layer -------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_first_token_forward_gives_the_models_logits_and_gradients(tiny_model, attention):
    model = tiny_classifier(tiny_model, attention).eval()  # eval: no dropout, so both passes are deterministic
    batch = padded_pairs(tiny_model)
    assert batch["attention_mask"].min() == 0 and "token_type_ids" in batch  # padding and segments are exercised
    forward = first_token_forward(model)
    assert forward is not None
    expected = model(**batch).logits
    expected.square().sum().backward()
    expected_grads = gradients(model)
    model.zero_grad(set_to_none=True)
    got = forward(**batch).logits
    got.square().sum().backward()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    got_grads = gradients(model)
    assert got_grads.keys() == expected_grads.keys() and len(got_grads) == len(list(model.parameters()))
    for name in expected_grads:
        torch.testing.assert_close(got_grads[name], expected_grads[name], rtol=1e-4, atol=1e-6)


def test_first_token_forward_works_through_a_peft_lora_model(tiny_model):
    from peft import LoraConfig, get_peft_model

    model = tiny_classifier(tiny_model, labels=2)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=["query", "value", "output.dense"],
                                             init_lora_weights=False)).eval()  # random B: the adapters change the output
    batch = padded_pairs(tiny_model)
    forward = first_token_forward(model)
    assert forward is not None
    torch.testing.assert_close(forward(**batch).logits, model(**batch).logits, rtol=1e-5, atol=1e-6)


def test_first_token_forward_declines_what_it_cannot_do_exactly(tiny_model):
    model = tiny_classifier(tiny_model)
    groups = parameter_groups(model)
    assert first_token_forward(model, groups) is not None
    for _, p in groups.embeddings + groups.layers[0]:  # frozen bottom layers run in eval mode through a model hook
        p.requires_grad_(False)
    assert first_token_forward(model, groups) is None
    assert first_token_forward(model) is not None  # inference runs in eval mode anyway
    model.config._attn_implementation = "flash_attention_2"  # kernels that take no 4-D mask keep the model's forward
    assert first_token_forward(model) is None
    assert first_token_forward(torch.nn.Linear(2, 2)) is None


# -- FLOP accounting --------------------------------------------------------------------------

def test_training_flops_per_token_counts_six_two_and_four_times_the_weights(tiny_model):
    model = tiny_classifier(tiny_model)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert perf.training_flops_per_token(model)["total"] == 6 * linear  # full fine-tune
    groups = parameter_groups(model)
    for _, p in groups.embeddings + groups.layers[0]:
        p.requires_grad_(False)
    layer0 = sum(p.numel() for n, p in groups.layers[0] if n.endswith("weight") and p.dim() == 2)
    assert perf.training_flops_per_token(model, groups)["total"] == 2 * layer0 + 6 * (linear - layer0)
    assert perf.training_flops_per_token(model, groups, frozen_forward=False)["total"] == 6 * (linear - layer0)

    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_classifier(tiny_model), LoraConfig(task_type="SEQ_CLS", r=2, target_modules=["query", "value"]))
    flops = perf.training_flops_per_token(lora)
    assert flops["weight_grads"] < 0.2 * flops["forward"]  # only the adapters and the head get weight gradients
    assert flops["activation_grads"] == flops["forward"]  # ... but the backward runs through every layer


def test_throughput_arithmetic():
    result = perf.throughput(tokens=1000, seconds=2.0, flops_per_token=6e6, matmul_rate=1e10)
    assert result["tokens_per_second"] == 500 and result["achieved_gflops"] == 3.0 and result["flop_utilisation"] == 0.3
    assert perf.measure_matmul_rate("cpu", torch.float32, 64, 0.01) > 0


# -- optimizer --------------------------------------------------------------------------------

def test_fused_adamw_makes_the_same_update_as_foreach(tiny_model):
    from tunesmith.config import TrainConfig

    steps = []
    for fused in (True, False):
        model = tiny_classifier(tiny_model)
        optimizer = build_optimizer(parameter_groups(model), TrainConfig(lr=1e-2), None)
        if not fused:  # the same groups and settings through the multi-tensor path
            optimizer = torch.optim.AdamW(optimizer.param_groups, lr=1e-2, foreach=True)
        else:
            assert optimizer.defaults["fused"]
        model(**padded_pairs(tiny_model)).logits.square().sum().backward()
        optimizer.step()
        steps.append({n: p.detach().clone() for n, p in model.named_parameters()})
    for name in steps[0]:
        torch.testing.assert_close(steps[0][name], steps[1][name], rtol=1e-5, atol=1e-7)


# -- whole runs -------------------------------------------------------------------------------

def run(tmp_path, reviews_csv, tiny_options, name, **options):
    return tunesmith.finetune(reviews_csv, out=str(tmp_path / name), **{**tiny_options, **options})


def test_gradient_accumulation_gives_the_same_weights(tmp_path, reviews_csv, tiny_options):
    one = run(tmp_path, reviews_csv, tiny_options, "accum1", dropout=0.0, grad_accum=1, epochs=2)
    two = run(tmp_path, reviews_csv, tiny_options, "accum2", dropout=0.0, grad_accum=2, epochs=2)
    a, b = load_file(str(one.path / "model.safetensors")), load_file(str(two.path / "model.safetensors"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5)
    assert one.metrics["train"]["tokens"] == two.metrics["train"]["tokens"] > 0


def test_run_reports_throughput_and_reuses_the_best_validation_pass(tmp_path, reviews_csv, tiny_options):
    from conftest import toy_reviews

    validation = tmp_path / "validation.csv"
    toy_reviews(48, seed=3).to_csv(validation, index=False)
    result = run(tmp_path, reviews_csv, tiny_options, "run", validation=str(validation), epochs=3)
    train = result.metrics["train"]
    assert train["flops_per_token"] == pytest.approx(perf.training_flops_per_token(result._load()[0])["total"])
    assert train["tokens_per_second"] > 0 and 0 < train["flop_utilisation"] < 5
    assert train["achieved_gflops"] == pytest.approx(train["tokens_per_second"] * train["flops_per_token"] / 1e9, rel=1e-3)
    # the validation metrics written are those of the restored best weights, as a fresh evaluation finds them
    fresh = result.evaluate(validation)
    assert result.metrics["validation"]["accuracy"] == pytest.approx(fresh["accuracy"])
    assert result.metrics["validation"]["confusion_matrix"] == fresh["confusion_matrix"]


def test_freeze_word_embeddings_keeps_them_and_trains_the_rest(tmp_path, reviews_csv, tiny_options, tiny_model):
    result = run(tmp_path, reviews_csv, tiny_options, "frozen", freeze_word_embeddings=True)
    base, tuned = load_file(str(tiny_model / "model.safetensors")), load_file(str(result.path / "model.safetensors"))
    words, positions = "bert.embeddings.word_embeddings.weight", "bert.embeddings.position_embeddings.weight"
    assert torch.equal(tuned[words], base[words.removeprefix("bert.")])
    assert not torch.equal(tuned[positions], base[positions.removeprefix("bert.")])  # the rest of the embeddings trains
    assert result.metrics["parameters"]["trainable"] == result.metrics["parameters"]["total"] - tuned[words].numel()


def test_conv_nets_report_throughput_without_a_flop_count():
    """A convolution's FLOPs depend on its feature maps, which weights do not tell: no utilisation is claimed."""
    import transformers as tf

    conv = tf.MobileNetV2ForImageClassification(tf.MobileNetV2Config(depth_multiplier=0.35, image_size=32, num_labels=3))
    assert not perf.counts_every_flop(conv)
    assert perf.throughput(1000, 2.0, None, 1e11) == {"tokens_per_second": 500.0, "flop_utilisation": None}
