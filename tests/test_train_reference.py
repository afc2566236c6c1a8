"""Training checked against computations written out here: the step's loss and gradient, the learning rate
each optimizer step used, residual dropout on the trained model, weight-decay groups, the data filters."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import lima_align.train as train_mod
from lima_align.config import load_recipe
from lima_align.models import load_model
from lima_align.packing import rows_for_rank
from lima_align.records import Conversation, Message
from lima_align.train import param_groups, prepare_data, train
from lima_align.turns import IGNORE, TurnFormat


def recipe(model_dir, data, out, *extra):
    return load_recipe(None, [f"model.name={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}",
                              "train.precision=fp32", "train.state_every_steps=100", "train.save_from_epoch=1",
                              "train.save_to_epoch=1", "train.residual_dropout_top=0.0", *extra])


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def watch_build(monkeypatch, on_build=None):
    """Keep what train() builds: the model (the object it trains) and the turn format; on_build(model) runs
    before training starts."""
    built = {}
    real_build = train_mod.build_model

    def build(recipe, fmt, base):
        built["model"] = real_build(recipe, fmt, base)
        built["fmt"] = fmt
        if on_build is not None:
            on_build(built["model"])
        return built["model"]

    monkeypatch.setattr(train_mod, "build_model", build)
    return built


def test_step_loss_and_gradient_are_the_mean_over_trained_tokens(tiny_llama, examples_file, tmp_path, monkeypatch):
    """One step over all eight examples, packed into several rows of at most 48 tokens: the logged loss
    and the gradient the optimizer gets are those of (sum of token losses) / (trained tokens)."""
    grads, before = {}, {}

    def on_build(model):
        before["model"] = copy.deepcopy(model)
        for name, p in model.named_parameters():
            if p.requires_grad:  # runs after each row's backward adds to .grad: the last call sees the step's sum
                p.register_post_accumulate_grad_hook(lambda p, name=name: grads.__setitem__(name, p.grad.clone()))

    built = watch_build(monkeypatch, on_build)
    r = recipe(tiny_llama, examples_file, tmp_path / "run", "train.batch_size=8", "train.epochs=1",
               "data.max_seq_len=48", "train.micro_batch_tokens=48")
    (m,) = metrics(train(r))

    data = prepare_data(r, built["fmt"], train_mod.load_training_conversations(r))
    lengths = [len(e.input_ids) for e in data.encoded]
    assert len(rows_for_rank(list(range(8)), lengths, 48, 1, 0)) > 2  # several rows, so rows != tokens
    model = before["model"]  # the weights before the step; every example through it on its own
    total = torch.zeros(())
    for e in data.encoded:
        logits = model(torch.tensor([e.input_ids])).logits[0, :-1]
        total = total + nn.functional.cross_entropy(logits, torch.tensor(e.labels[1:]), ignore_index=IGNORE,
                                                    reduction="sum")
    n = sum(e.n_trained for e in data.encoded)
    assert m["trained_tokens"] == n > 8 * 3
    (total / n).backward()
    assert m["loss"] == pytest.approx((total / n).item(), rel=1e-4)
    ref = {k: p.grad for k, p in model.named_parameters() if p.requires_grad}
    assert grads.keys() == ref.keys()
    for k, g in grads.items():
        assert torch.allclose(g, ref[k], rtol=1e-4, atol=1e-7), k


def scheduled_lr(step, total, lr, lr_final, warmup):
    """Linear warmup to lr over the first `warmup` steps (step s gets lr * (s + 1) / warmup), then lr decays
    linearly to lr_final, reached at the last step."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr + (lr_final - lr) * (step - warmup) / (total - 1 - warmup)


def test_each_optimizer_step_uses_the_scheduled_learning_rate(tiny_llama, examples_file, tmp_path):
    """Read off the optimizer itself at every step, and from metrics.jsonl; 10 steps, 3 of warmup."""
    used, groups = [], []

    def before_step(opt, args, kwargs):
        used.append({g["lr"] for g in opt.param_groups})
        groups.append([(g["weight_decay"], {p.ndim for p in g["params"]}) for g in opt.param_groups])

    handle = register_optimizer_step_pre_hook(before_step)
    try:
        run = train(recipe(tiny_llama, examples_file, tmp_path / "run", "train.batch_size=4", "train.epochs=5",
                           "train.warmup_steps=3", "train.lr=1e-3", "train.lr_final=1e-4", "train.weight_decay=0.1"))
    finally:
        handle.remove()
    want = [scheduled_lr(s, 10, 1e-3, 1e-4, 3) for s in range(10)]
    assert want[:4] == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 1e-3]) and want[-1] == pytest.approx(1e-4)
    assert all(len(u) == 1 for u in used)  # every parameter group at the same rate
    assert [u.pop() for u in used] == pytest.approx(want, rel=1e-9)
    assert [x["lr"] for x in metrics(run)] == pytest.approx(want, rel=1e-9)
    # AdamW's groups: matrices decayed, norm weights (1-D) not
    assert groups[0] == [(0.1, {2}), (0.0, {1})]


def test_weight_decay_groups_leave_norms_biases_and_frozen_parameters_out(tiny_gemma):
    model = load_model(str(tiny_gemma)).model
    model.get_decoder().layers[0].mlp.up_proj.bias = nn.Parameter(torch.zeros(64))  # a bias to sort
    model.get_decoder().layers[1].mlp.down_proj.weight.requires_grad_(False)
    decay, no_decay = param_groups(model, 0.1)
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.1, 0.0)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    not_decayed = {names[id(p)] for p in no_decay["params"]}
    assert "model.embed_tokens.weight" in decayed and "model.layers.0.self_attn.q_proj.weight" in decayed
    assert "model.layers.0.mlp.up_proj.bias" in not_decayed
    assert all("norm" in n or n.endswith(".bias") for n in not_decayed)
    assert {n for n in names.values() if "norm" in n} <= not_decayed
    assert "model.layers.1.mlp.down_proj.weight" not in decayed | not_decayed  # frozen: not optimised at all
    assert len(decayed) + len(not_decayed) == sum(p.requires_grad for p in model.parameters())


def test_the_trained_model_drops_each_sublayer_output_at_the_recipe_rate(tiny_llama, examples_file, tmp_path,
                                                                          monkeypatch):
    """Residual dropout 0.1 at the bottom layer, 0.3 at the top (two layers), on the model train() trained."""
    built = watch_build(monkeypatch)
    train(recipe(tiny_llama, examples_file, tmp_path / "run", "train.batch_size=8", "train.epochs=1",
                 "train.residual_dropout_bottom=0.1", "train.residual_dropout_top=0.3"))
    model = built["model"]
    raw, out = {}, {}
    for i, layer in enumerate(model.get_decoder().layers):
        for name in ("self_attn", "mlp"):  # where Llama's sublayer outputs join the residual stream
            def spy(store, key=(i, name)):
                return lambda m, args, o: store.__setitem__(key, (o[0] if isinstance(o, tuple) else o).clone())
            getattr(layer, name).register_forward_hook(spy(raw), prepend=True)  # before the dropout hook
            getattr(layer, name).register_forward_hook(spy(out))  # after it
    ids = torch.randint(3, 400, (1, 256), generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model.train()
    with torch.no_grad():
        model(ids)
    assert len(raw) == 4
    for (i, name), r in raw.items():
        rate = (0.1, 0.3)[i]
        kept = out[i, name] != 0
        assert (1 - kept.float().mean()).item() == pytest.approx(rate, abs=0.03), (i, name)
        assert torch.allclose(out[i, name][kept], r[kept] / (1 - rate), atol=1e-6), (i, name)
    model.eval()
    with torch.no_grad():
        model(ids)
    assert all(torch.equal(out[k], raw[k]) for k in raw)  # no dropout outside training


def conv(cid, *turns):
    roles = ["user", "assistant"] * len(turns)
    return Conversation(cid, [Message(role, text) for role, text in zip(roles, turns)])


def test_prepare_data_trims_to_max_seq_len_and_drops_examples_with_nothing_to_train(tiny_llama):
    from transformers import AutoTokenizer

    r = load_recipe(None, [f"model.name={tiny_llama}", "data.max_seq_len=24", "train.micro_batch_tokens=24"])
    fmt = TurnFormat(AutoTokenizer.from_pretrained(tiny_llama), r.turns, method="full")
    convs = [conv("short", "Hi?", "Rome."),
             conv("long", "Hi?", "The quick brown fox jumps over the lazy dog. " * 4),  # its answer is cut at 24
             conv("late", "Explain gravity to a child. " * 6, "Rome."),  # the answer starts past token 24
             conv("unanswered", "Hi?")]
    full = {c.id: fmt.encode(c) for c in convs}
    assert len(full["short"].input_ids) <= 24 < len(full["long"].input_ids)
    assert full["late"].labels[:24] == [IGNORE] * 24 and full["late"].n_trained > 0
    assert full["unanswered"].n_trained == 0

    data = prepare_data(r, fmt, convs)
    assert data.ids == ["short", "long"]
    assert data.encoded[0] == full["short"]
    assert data.encoded[1].input_ids == full["long"].input_ids[:24]
    assert data.encoded[1].labels == full["long"].labels[:24]
    rep = data.report
    assert (rep["examples"], rep["trimmed_to_max_seq_len"], rep["dropped_nothing_to_train"],
            rep["dropped_too_long"]) == (2, 2, 2, 0)  # "late" was trimmed, then had nothing left
    assert rep["tokens"] == len(full["short"].input_ids) + 24 and rep["max_len"] == 24
    assert rep["trained_tokens"] == full["short"].n_trained + data.encoded[1].n_trained

    # max_example_tokens drops long examples whole instead of trimming them
    r = load_recipe(None, [f"model.name={tiny_llama}", "data.max_seq_len=24", "train.micro_batch_tokens=24",
                           "data.max_example_tokens=24"])
    data = prepare_data(r, fmt, convs)
    assert data.ids == ["short"]
    assert (data.report["dropped_too_long"], data.report["trimmed_to_max_seq_len"],
            data.report["dropped_nothing_to_train"]) == (2, 0, 1)
