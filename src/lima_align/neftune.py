"""NEFTune (Jain et al. 2023, "NEFTune: Noisy Embeddings Improve Instruction Finetuning"): during
training, uniform noise is added to the input embeddings, scaled by alpha / sqrt(L * d), where L is the
length of the sequence and d the hidden size.

Our rows are packed: several examples share a row, each one's positions restarting at 0. L is each
example's own number of tokens, read off the restarting position ids, so an example gets the noise it
would get alone and padding never dilutes it (implementations that take L from the padded batch add
less noise to a short example in a batch of long ones). Noise is added only while the model is in
training mode: evaluation, generation and a loaded checkpoint never see it, and nothing of it is saved.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def segment_lengths(position_ids: torch.Tensor) -> torch.Tensor:
    """For each position of (batch, seq) position ids, the length of the example it belongs to, where an
    example starts wherever the position id is 0 (a packed row) or at the start of the row."""
    b, n = position_ids.shape
    idx = torch.arange(n, device=position_ids.device).expand(b, n)
    starts = (position_ids == 0) | (idx == 0)
    seg = starts.long().cumsum(dim=1) - 1  # example number within the row
    counts = torch.zeros(b, n, dtype=torch.long, device=position_ids.device)
    counts.scatter_add_(1, seg, torch.ones_like(seg))
    return counts.gather(1, seg)


class NEFTune:
    """The hooks that add the noise: one on the decoder that notes each forward's position ids (or
    attention mask), one on the input embeddings that adds noise in training mode."""

    def __init__(self, model: nn.Module, alpha: float):
        self.alpha = float(alpha)
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.embeddings = base.get_input_embeddings()
        self._lengths: torch.Tensor | None = None
        self.handles = [
            base.get_decoder().register_forward_pre_hook(self._note_lengths, with_kwargs=True),
            self.embeddings.register_forward_hook(self._add_noise),
        ]

    def _note_lengths(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        pos, mask = kwargs.get("position_ids"), kwargs.get("attention_mask")
        if pos is not None and pos.dim() == 2:
            self._lengths = segment_lengths(pos)
        elif isinstance(mask, torch.Tensor) and mask.dim() == 2:  # padded batch: real tokens of each row
            self._lengths = mask.sum(dim=1, keepdim=True).expand_as(mask)
        else:
            self._lengths = None

    def _add_noise(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        if not module.training or self.alpha == 0:
            return output
        lengths = self._lengths
        self._lengths = None  # used once: a later call without the decoder around gets the row's length
        if lengths is None or lengths.shape != output.shape[:2]:
            lengths = torch.full(output.shape[:2], output.shape[1], device=output.device)
        scale = self.alpha / torch.sqrt(lengths.clamp(min=1).to(torch.float32) * output.shape[-1])
        noise = torch.empty_like(output).uniform_(-1, 1)
        return output + noise * scale.unsqueeze(-1).to(output.dtype)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def add_neftune(model: nn.Module, alpha: float) -> NEFTune | None:
    """Install NEFTune on a model (None when alpha is 0: nothing installed)."""
    if not alpha or not math.isfinite(alpha):
        return None
    return NEFTune(model, alpha)
