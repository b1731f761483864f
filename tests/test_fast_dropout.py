"""The cheaper CPU dropout: right keep rate and scale, gradients through the same mask, padding still
masked in attention, and everything restored after training."""
import torch
import torch.nn.functional as F
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from tunesmith.train.fast_dropout import _torch_dropout, cheaper_dropout, fast_dropout, keep_mask


def test_keep_rate_and_expectation():
    torch.manual_seed(0)
    mask, scale = keep_mask(torch.Size([1000, 1000]), 0.1)
    assert abs(mask.float().mean().item() - 0.9) < 0.002
    assert abs(mask.float().mean().item() * scale - 1.0) < 0.003
    # the two 15-bit lanes of a draw are both uniform
    assert abs(mask.view(-1)[0::2].float().mean().item() - mask.view(-1)[1::2].float().mean().item()) < 0.003
    x = torch.ones(500, 1000)
    assert abs(fast_dropout(x, 0.3).mean().item() - 1.0) < 0.01


def test_gradient_uses_the_forward_mask():
    x = torch.randn(64, 128, requires_grad=True)
    y = fast_dropout(x, 0.5)
    y.sum().backward()
    dropped = y == 0
    assert dropped.float().mean().item() > 0.3
    assert torch.equal(x.grad == 0, dropped)
    assert torch.allclose(x.grad[~dropped], torch.full_like(x.grad[~dropped], 2.0))


def test_eval_and_edge_cases_fall_back_to_torch():
    x = torch.randn(10, 10)
    assert torch.equal(fast_dropout(x, 0.1, training=False), x)
    assert torch.equal(fast_dropout(x, 0.0), x)
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros_like(x))
    assert torch.isfinite(fast_dropout(x, 0.99999)).all()  # rounds to p = 1: torch's dropout, no division by zero


def test_model_outputs_match_eager_attention_and_state_is_restored(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2, attn_implementation="sdpa")
    batch = tokenizer(["short", "a much longer text that pads the first one a lot"], padding=True, return_tensors="pt")
    model.eval()
    reference = model(**batch).logits
    with cheaper_dropout(model, torch.device("cpu")):
        assert F.dropout is fast_dropout
        assert torch.allclose(model(**batch).logits, reference, atol=1e-6)  # evaluation: sdpa, same mask
        model.train()
        torch.manual_seed(3)
        trained = model(**batch).logits
    assert F.dropout is _torch_dropout and model.config._attn_implementation == "sdpa"
    # the same draws through the model's eager attention: identical, so padding stayed masked
    model.set_attn_implementation("eager")
    F.dropout = fast_dropout
    try:
        torch.manual_seed(3)
        eager = model(**batch).logits
    finally:
        F.dropout = _torch_dropout
    assert torch.equal(trained, eager)
    # and a padded position does not change the first text's output
    model.eval()
    alone = model(**tokenizer(["short"], return_tensors="pt")).logits
    assert torch.allclose(alone[0], reference[0], atol=1e-5)
