"""Residual dropout: each sublayer's output dropped with its own mask before it joins the stream."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lima_align.dropout import ResidualDropout
from lima_align.errors import LimaError
from lima_align.models import load_model

IDS = torch.tensor([[2, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50]])
# Where attention and MLP outputs join the residual stream: after Gemma 3's post-norms, and
# straight out of Llama's self_attn and mlp (its post_attention_layernorm is the MLP's input norm).
BRANCHES = {"gemma3": ("post_attention_layernorm", "post_feedforward_layernorm"), "llama": ("self_attn", "mlp")}


def _tensor(out):
    return (out[0] if isinstance(out, tuple) else out).detach().clone()


@pytest.fixture(params=["gemma3", "llama"])
def tiny(request, tiny_gemma, tiny_llama):
    path = tiny_gemma if request.param == "gemma3" else tiny_llama
    return request.param, load_model(str(path)).model


def test_attention_and_mlp_outputs_are_dropped_with_masks_of_their_own(tiny):
    kind, model = tiny
    layers = model.get_decoder().layers
    seen: dict[tuple[str, int, str], torch.Tensor] = {}

    def spy(when, i, name):
        def hook(module, args, out):
            seen[when, i, name] = _tensor(out)
        return hook

    for i, layer in enumerate(layers):  # hooks run in the order registered: before and after the dropout
        for name in BRANCHES[kind]:
            getattr(layer, name).register_forward_hook(spy("raw", i, name))
    ResidualDropout(model, 0.0, 0.5)  # two layers: rate 0.0 at the bottom, 0.5 at the top
    for i, layer in enumerate(layers):
        for name in BRANCHES[kind]:
            getattr(layer, name).register_forward_hook(spy("dropped", i, name))
    top = layers[1]
    top.register_forward_pre_hook(lambda m, args, kwargs: seen.update(top_in=_tensor(args[0] if args else
                                                                                     kwargs["hidden_states"])),
                                  with_kwargs=True)
    top.register_forward_hook(lambda m, args, out: seen.update(top_out=_tensor(out)))

    model.train()
    torch.manual_seed(0)
    with torch.no_grad():
        model(IDS)

    for name in BRANCHES[kind]:  # rate 0 at the bottom layer: nothing dropped there
        assert torch.equal(seen["raw", 0, name], seen["dropped", 0, name])
    masks = []
    for name in BRANCHES[kind]:
        raw, dropped = seen["raw", 1, name], seen["dropped", 1, name]
        kept = dropped != 0
        assert 0.3 < kept.float().mean() < 0.7, name  # about half of the elements dropped ...
        assert torch.allclose(dropped[kept], raw[kept] / 0.5), name  # ... and the rest scaled up
        masks.append(kept)
    assert not torch.equal(masks[0], masks[1])  # attention and MLP each get their own mask
    # The layer's update of the residual stream is exactly the two dropped sublayer outputs.
    attn, mlp = (seen["dropped", 1, name] for name in BRANCHES[kind])
    assert torch.allclose(seen["top_out"], seen["top_in"] + attn + mlp, atol=1e-5)


def test_eval_mode_is_untouched_and_removing_the_hooks_restores_the_model(tiny):
    _, model = tiny
    model.eval()
    with torch.no_grad():
        clean = model(IDS).logits
        hooks = ResidualDropout(model, 0.0, 0.5)
        assert torch.equal(model(IDS).logits, clean)
        model.train()
        assert not torch.allclose(model(IDS).logits, clean)
        hooks.remove()
        assert torch.equal(model(IDS).logits, clean)  # training mode, but no dropout left


def test_gradient_checkpointing_recomputes_the_same_masks(tiny_llama):
    """Backward reruns each layer under checkpointing; the dropout there must match the forward's."""
    grads = []
    for checkpointing in (False, True):
        model = load_model(str(tiny_llama)).model
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        ResidualDropout(model, 0.0, 0.5)
        model.train()
        torch.manual_seed(0)
        model(IDS, labels=IDS).loss.backward()
        grads.append(model.get_decoder().layers[0].mlp.down_proj.weight.grad)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


class _Unknown(nn.Module):
    """A decoder whose layers have no attention/MLP parts we know."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"num_hidden_layers": 2})()
        self.layers = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])


def test_an_unknown_layer_layout_is_refused_rather_than_left_undropped():
    with pytest.raises(LimaError, match="cannot tell where Linear's attention and MLP outputs join"):
        ResidualDropout(_Unknown(), 0.0, 0.2)
    assert ResidualDropout(_Unknown(), 0.0, 0.0).handles == []  # no dropout asked: nothing to look into
