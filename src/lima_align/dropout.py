"""LIMA's residual dropout: a rate rising linearly from the bottom layer to the top.

Residual dropout as in the Transformer papers LIMA follows: each sublayer's output is dropped
before it is added to the residual stream, so a layer's attention and its MLP get masks of
their own. Applied through forward hooks on the modules whose output joins the stream, so it
works for Hugging Face decoders without touching their code. The model's own dropout settings
are left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .errors import LimaError


def layer_rates(n_layers: int, bottom: float, top: float) -> list[float]:
    if n_layers == 1:
        return [top]
    return [bottom + (top - bottom) * i / (n_layers - 1) for i in range(n_layers)]


def find_decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks (the longest one whose length is the layer count)."""
    n = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    best = None
    for _, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and len(mod) > 0 and (n is None or len(mod) == n):
            if best is None or len(mod) > len(best):
                best = mod
    if best is None:
        raise RuntimeError("could not find the decoder layers of this model")
    return best


def residual_branches(layer: nn.Module) -> list[nn.Module]:
    """The modules whose outputs a decoder layer adds to its residual stream: attention, then MLP.

    Post-norm layers (Gemma 2/3, OLMo 2) normalise each sublayer's output before adding it, so
    the post-norms' outputs are what joins the stream. Pre-norm layers (Llama, Qwen, Mistral,
    Gemma 1) add the attention and MLP outputs themselves; their `post_attention_layernorm` is
    the MLP's input norm despite its name, which is why `post_feedforward_layernorm` decides.
    """
    parts = dict(layer.named_children())
    if "post_feedforward_layernorm" in parts and "post_attention_layernorm" in parts:
        return [parts["post_attention_layernorm"], parts["post_feedforward_layernorm"]]
    if "self_attn" in parts and "mlp" in parts:
        return [parts["self_attn"], parts["mlp"]]
    # Hooking the whole layer instead would drop a different quantity; better to say so.
    raise LimaError(f"residual dropout: cannot tell where {type(layer).__name__}'s attention and MLP outputs join "
                    f"the residual stream (its parts: {', '.join(parts) or 'none'})",
                    where="train.residual_dropout_top",
                    fix="set train.residual_dropout_bottom=0 and train.residual_dropout_top=0 for this model, "
                        "or teach dropout.residual_branches its layout")


def _dropout_hook(p: float) -> Any:
    def hook(module: nn.Module, args: tuple, output: Any) -> Any:
        if not module.training:
            return output
        # Attention modules return (output, weights); only the output joins the stream.
        if isinstance(output, tuple):
            return (torch.nn.functional.dropout(output[0], p=p, training=True), *output[1:])
        return torch.nn.functional.dropout(output, p=p, training=True)
    return hook


class ResidualDropout:
    def __init__(self, model: nn.Module, bottom: float, top: float):
        self.layers = find_decoder_layers(model)
        self.rates = layer_rates(len(self.layers), bottom, top)
        # Layers at rate 0 are never looked into, so a run without dropout works for any layout.
        self.branches = [residual_branches(layer) if p > 0 else [] for layer, p in zip(self.layers, self.rates)]
        self.handles = [branch.register_forward_hook(_dropout_hook(p))
                        for branches, p in zip(self.branches, self.rates) for branch in branches]

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
