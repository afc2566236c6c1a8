"""LIMA's residual dropout: a rate rising linearly from the bottom layer to the top.

Applied to each decoder layer's update of the residual stream, `x + dropout(layer(x) - x)`,
through forward hooks, so it works for any Hugging Face decoder without touching its code.
The model's own dropout settings are left alone.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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


class ResidualDropout:
    def __init__(self, model: nn.Module, bottom: float, top: float):
        self.layers = find_decoder_layers(model)
        self.rates = layer_rates(len(self.layers), bottom, top)
        self.handles = []
        for layer, p in zip(self.layers, self.rates):
            if p > 0:
                self.handles.append(layer.register_forward_pre_hook(self._save_input, with_kwargs=True))
                self.handles.append(layer.register_forward_hook(self._make_hook(p), with_kwargs=True))

    @staticmethod
    def _save_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
        module._lima_residual_in = args[0] if args else kwargs["hidden_states"]

    @staticmethod
    def _make_hook(p: float) -> Any:
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            if not module.training:
                return output
            x = module._lima_residual_in
            module._lima_residual_in = None
            out = output[0] if isinstance(output, tuple) else output
            new = x + torch.nn.functional.dropout(out - x, p=p, training=True)
            return (new, *output[1:]) if isinstance(output, tuple) else new
        return hook

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
