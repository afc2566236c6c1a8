"""The training loss: summed cross-entropy at the trained positions only, the output layer applied a chunk of
positions at a time so the (positions x vocabulary) logits never exist whole (for Gemma's 262k-word vocabulary
they are most of a step's memory and compute)."""

from __future__ import annotations

import torch
from torch import nn

from .turns import IGNORE


def output_layer(lm: nn.Module) -> nn.Module:
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base.get_output_embeddings()


def decoder(lm: nn.Module) -> nn.Module:
    base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
    return base.get_decoder()


class _ChunkedLinearCE(torch.autograd.Function):
    """Sum of cross-entropy of `hidden @ weight.T`, one chunk of positions at a time.

    The gradients are worked out chunk by chunk during the forward pass and kept, so the
    (positions x vocabulary) logits never exist whole and are never recomputed: checkpointing
    the chunks instead cost a LoRA step on Gemma 270M a quarter of its speed (benchmarks/README.md).
    """

    @staticmethod
    def forward(ctx, hidden, weight, targets, softcap, chunk):  # noqa: ANN001 (autograd signature)
        dtype = torch.get_autocast_dtype(hidden.device.type) if torch.is_autocast_enabled(hidden.device.type) \
            else hidden.dtype
        w = weight.to(dtype)
        grad_h = torch.empty_like(hidden)
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        for s in range(0, hidden.shape[0], chunk):
            h = hidden[s:s + chunk].to(dtype)
            t = targets[s:s + chunk]
            logits = (h @ w.T).float()
            if softcap:
                capped = torch.tanh(logits / softcap)
                logits = capped * softcap
            lse = torch.logsumexp(logits, dim=-1)
            total += (lse - logits.gather(1, t[:, None]).squeeze(1)).sum()
            d = torch.softmax(logits, dim=-1)  # d(loss)/d(logits) = softmax - onehot
            d[torch.arange(t.shape[0], device=t.device), t] -= 1
            if softcap:
                d *= 1 - capped * capped
            grad_h[s:s + chunk] = (d.to(dtype) @ w).to(hidden.dtype)
            if grad_w is not None:
                grad_w += (d.to(dtype).T @ h).float()
        ctx.save_for_backward(grad_h, grad_w if grad_w is not None else torch.empty(0))
        ctx.has_grad_w = grad_w is not None
        return total

    @staticmethod
    def backward(ctx, grad_out):  # noqa: ANN001
        grad_h, grad_w = ctx.saved_tensors
        gw = (grad_w * grad_out).to(grad_w.dtype) if ctx.has_grad_w else None
        return grad_h * grad_out, gw, None, None, None


def linear_weight(head: nn.Module) -> torch.Tensor | None:
    """The matrix of a bias-free linear output layer, else None.

    peft's trainable-token wrapper (the EOT's row under LoRA) answers `.weight` with its merged
    matrix, the trained rows swapped in and still in the autograd graph, so it takes the chunked
    path too; calling the wrapper per chunk would keep a merged copy of the matrix per chunk.
    """
    inner = getattr(head, "original_module", head)  # the layer peft's wrapper holds
    if type(inner) is nn.Linear and inner.bias is None:
        return head.weight
    return None


def token_loss_sum(hidden: torch.Tensor, head: nn.Module, targets: torch.Tensor, softcap: float | None,
                   chunk_elems: int = 1 << 25) -> torch.Tensor:
    """Sum of cross-entropy over the given positions, the output layer applied chunk by chunk.

    A chunk of 2**25 logits (128 positions of Gemma's 262k words) keeps the float32 logits, softmax
    and gradient of one chunk near 0.5 GB; 2**27 put the quickstart's peak 1.4 GB higher at the
    same speed on a CPU."""
    weight = linear_weight(head)
    if weight is not None:
        return _ChunkedLinearCE.apply(hidden, weight, targets, softcap, max(1, chunk_elems // weight.shape[0]))
    # Any other head: call the module, keep the logits per chunk.
    vocab = getattr(head, "out_features", None) or head.weight.shape[0]
    chunk = max(1, chunk_elems // vocab)
    total = hidden.new_zeros((), dtype=torch.float32)
    for s in range(0, hidden.shape[0], chunk):
        logits = head(hidden[s:s + chunk]).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        total = total + nn.functional.cross_entropy(logits, targets[s:s + chunk], reduction="sum")
    return total


class TrainedPositionLoss(nn.Module):
    """Wraps the LM so DDP/FSDP see one forward; returns (loss_sum, trained_positions)."""

    def __init__(self, lm: nn.Module):
        super().__init__()
        self.lm = lm
        self.softcap = getattr(getattr(lm, "config", None), "final_logit_softcapping", None)
        # FSDP's transformer-based wrap policy reads the decoder layer classes from the root module.
        base = lm.get_base_model() if hasattr(lm, "get_base_model") else lm
        self._no_split_modules = list(getattr(base, "_no_split_modules", None) or [])
        # DeepSpeed's "auto" bucket sizes are read from the root module's config (hidden size).
        self.config = getattr(base, "config", None)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, targets: torch.Tensor,
                weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # No attention mask and no cache: transformers then reads packed examples off the
        # restarting position ids and keeps them apart (with a cache it does not).
        hidden = decoder(self.lm)(input_ids=input_ids, position_ids=position_ids, attention_mask=None,
                                  use_cache=False).last_hidden_state
        sel = targets != IGNORE
        loss = token_loss_sum(hidden[sel], output_layer(self.lm), targets[sel], self.softcap)
        return loss * weight.squeeze(), sel.sum()
