"""The chunked output-layer loss equals plain cross-entropy, in value and in gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lima_align.loss import token_loss_sum


@pytest.mark.parametrize("softcap", [None, 30.0])
@pytest.mark.parametrize("train_head", [True, False])
def test_chunked_loss_matches_reference(softcap, train_head):
    torch.manual_seed(0)
    head = nn.Linear(16, 50, bias=False)
    head.weight.requires_grad_(train_head)
    hidden = torch.randn(37, 16, requires_grad=True)
    targets = torch.randint(0, 50, (37,))

    logits = head(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    ref = nn.functional.cross_entropy(logits, targets, reduction="sum")
    ref.backward()
    ref_h = hidden.grad.clone()
    ref_w = head.weight.grad.clone() if train_head else None
    hidden.grad = None
    head.weight.grad = None

    ours = token_loss_sum(hidden, head, targets, softcap, chunk_elems=50 * 8)  # chunks of 8 positions
    (ours * 0.5).backward()  # a scaled loss, as in training
    assert torch.allclose(ours, ref, rtol=1e-5)
    assert torch.allclose(hidden.grad, 0.5 * ref_h, atol=1e-5)
    if train_head:
        assert torch.allclose(head.weight.grad, 0.5 * ref_w, atol=1e-5)
    else:
        assert head.weight.grad is None


def test_a_head_with_trainable_token_rows_takes_the_chunked_path_and_trains_only_those_rows():
    """peft's wrapper around the output layer (the EOT's row under LoRA) uses its merged matrix."""
    from peft.utils.other import TrainableTokensWrapper

    torch.manual_seed(0)
    linear = nn.Linear(16, 50, bias=False)
    linear.weight.requires_grad_(False)
    head = TrainableTokensWrapper(linear, "default", token_indices=[7])
    delta = head.token_adapter.trainable_tokens_delta["default"]
    hidden = torch.randn(37, 16)
    targets = torch.randint(0, 50, (37,))
    targets[:5] = 7

    ref = nn.functional.cross_entropy(head(hidden), targets, reduction="sum")
    ref.backward()
    ref_grad = delta.grad.clone()
    delta.grad = None

    calls = []
    head.register_forward_hook(lambda *a: calls.append(1))
    ours = token_loss_sum(hidden, head, targets, None, chunk_elems=50 * 8)  # chunks of 8 positions
    ours.backward()
    assert calls == []  # one merged matrix for all chunks, not the module (and a merged copy) per chunk
    assert torch.allclose(ours, ref, rtol=1e-5)
    assert torch.allclose(delta.grad, ref_grad, atol=1e-5) and linear.weight.grad is None
