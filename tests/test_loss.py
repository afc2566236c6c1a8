"""The chunked output-layer loss equals plain cross-entropy, in value and in gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lima_align.train import token_loss_sum


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
