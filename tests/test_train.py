"""Training: the recipe's schedules, that it learns, that a killed run resumes to the same weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import lima_align.train as train_mod
from lima_align.config import load_recipe
from lima_align.dropout import ResidualDropout, layer_rates
from lima_align.generate import Decoding, Generator, load_for_generation
from lima_align.config import ModelConfig, TurnsConfig
from lima_align.models import load_model
from lima_align.records import Message
from lima_align.train import lr_at, train


def recipe_for(model_dir, data, out, *extra):
    return load_recipe(None, [f"model.name={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}",
                              "train.batch_size=4", "train.epochs=4", "train.lr=3e-3", "train.lr_final=3e-4",
                              "train.residual_dropout_top=0.1", "train.save_from_epoch=2", "train.save_to_epoch=2",
                              "train.state_every_steps=3", "train.precision=fp32", *extra])


def metrics(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_lr_schedule_is_lima_linear_decay_without_warmup():
    r = load_recipe("lima")
    total = 150
    assert lr_at(0, total, r) == pytest.approx(1e-5)
    assert lr_at(total - 1, total, r) == pytest.approx(1e-6)
    assert lr_at(total // 2, total, r) == pytest.approx(1e-5 + (1e-6 - 1e-5) * (total // 2) / (total - 1))
    assert all(lr_at(s, total, r) > lr_at(s + 1, total, r) for s in range(total - 1))


def test_each_process_draws_its_own_dropout_masks_and_one_process_keeps_its_seeds():
    from lima_align.train import step_seed

    # One process: the seeds runs have always used, so a run resumed after this change reproduces.
    assert [step_seed(7, s, 0) for s in range(3)] == [7 * 1_000_003 + s for s in range(3)]
    # Several: every (step, process) pair of a run seeds differently (the same seed on two
    # processes meant identical masks on the rows each of them trains).
    assert step_seed(7, 5, 1) != step_seed(7, 5, 0)
    assert len({step_seed(7, s, r) for s in range(2000) for r in range(64)}) == 2000 * 64


def test_residual_dropout_rates_rise_linearly_bottom_to_top():
    rates = layer_rates(18, 0.0, 0.3)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.3)
    assert rates[9] == pytest.approx(0.3 * 9 / 17)
    assert layer_rates(80, 0.0, 0.2)[-1] == pytest.approx(0.2)


def test_residual_dropout_acts_in_training_only(tiny_llama):
    model = load_model(str(tiny_llama)).model
    ids = torch.tensor([[2, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        clean = model(ids).logits
        hooks = ResidualDropout(model, 0.0, 0.5)
        model.eval()
        assert torch.equal(model(ids).logits, clean)
        model.train()
        assert not torch.allclose(model(ids).logits, clean)
        hooks.remove()
        model.eval()
        assert torch.equal(model(ids).logits, clean)


def test_full_finetune_overfits_eight_examples(tiny_gemma, examples_file, tmp_path):
    # No dropout, so the run is the same on every machine and its margin is the optimiser's alone (the
    # recipe's dropout is tested in test_train_reference.py). Measured: 6.01 -> 0.33 over 30 steps.
    run = train(recipe_for(tiny_gemma, examples_file, tmp_path / "run", "train.epochs=30", "train.batch_size=8",
                           "train.lr=3e-2", "train.lr_final=3e-3", "train.residual_dropout_top=0.0",
                           "train.state_every_steps=100", "train.save_from_epoch=30", "train.save_to_epoch=30"))
    m = metrics(run)
    assert len(m) == 30 and all(x["examples"] == 8 for x in m)
    assert m[0]["loss"] > 5.5  # about ln(401): the model starts knowing nothing of the examples
    assert m[-1]["loss"] < 1.0  # ... and ends predicting most of their tokens
    ckpt = run / "checkpoints" / "epoch-30"
    meta = json.loads((ckpt / "lima_align_checkpoint.json").read_text())
    assert meta["turns"]["eot"] == "<|eot|>" and meta["method"] == "full"
    assert json.loads((run / "done.json").read_text())["steps"] == 30
    assert not (run / "state").exists()


def test_resume_after_kill_matches_uninterrupted(tiny_gemma, examples_file, tmp_path, monkeypatch):
    straight = train(recipe_for(tiny_gemma, examples_file, tmp_path / "a"))
    real_lr_at = train_mod.lr_at

    def dies_at_step_5(step, total, recipe):
        if step == 5:  # five steps done; state was last saved after step 4, so step 5 is redone
            raise KeyboardInterrupt("killed")
        return real_lr_at(step, total, recipe)

    monkeypatch.setattr(train_mod, "lr_at", dies_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        train(recipe_for(tiny_gemma, examples_file, tmp_path / "b"))
    assert json.loads((tmp_path / "b" / "state" / "progress.json").read_text())["step"] == 4
    monkeypatch.setattr(train_mod, "lr_at", real_lr_at)
    resumed = train(recipe_for(tiny_gemma, examples_file, tmp_path / "b"))

    assert [x["step"] for x in metrics(resumed)] == list(range(1, 9))
    assert [x["loss"] for x in metrics(resumed)] == pytest.approx([x["loss"] for x in metrics(straight)], rel=1e-5)
    for epoch in ("epoch-02", "epoch-04"):
        a = load_file(straight / "checkpoints" / epoch / "model.safetensors")
        b = load_file(resumed / "checkpoints" / epoch / "model.safetensors")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.allclose(a[k], b[k], atol=1e-6), k


def test_changed_recipe_in_same_folder_is_refused(tiny_gemma, examples_file, tmp_path):
    from lima_align.errors import LimaError

    train(recipe_for(tiny_gemma, examples_file, tmp_path / "r", "train.epochs=1", "train.save_from_epoch=1",
                     "train.save_to_epoch=1"))
    with pytest.raises(LimaError, match="different recipe"):
        train(recipe_for(tiny_gemma, examples_file, tmp_path / "r", "train.epochs=2", "train.save_from_epoch=1",
                         "train.save_to_epoch=1"))


def test_lora_trains_and_its_checkpoint_generates(tiny_llama, examples_file, tmp_path):
    run = train(recipe_for(tiny_llama, examples_file, tmp_path / "lora", "train.method=lora", "train.epochs=2",
                           "train.lr=1e-2", "train.lr_final=1e-3"))
    m = metrics(run)
    assert m[-1]["loss"] < m[0]["loss"]
    ckpt = run / "checkpoints" / "epoch-02"
    assert (ckpt / "adapter_config.json").exists()
    lm, fmt = load_for_generation(ModelConfig(name=str(ckpt), dtype="float32"), TurnsConfig())
    assert lm.adapter == str(ckpt) and fmt.eot_id == lm.tokenizer.eos_token_id
    g = Generator(lm, fmt, Decoding(max_new_tokens=5))
    calls = {"n": 0}

    def eot_on_third_call(module, args, output):  # prefill and one step give two tokens, then the EOT
        calls["n"] += 1
        if calls["n"] > 2:
            output[..., fmt.eot_id] += 1e4
        return output

    handle = g.model.get_output_embeddings().register_forward_hook(eot_on_third_call)
    reply = g.generate([[Message("user", "Hello?")]])[0]
    handle.remove()
    assert (reply.finish_reason, reply.output_tokens) == ("eot", 2)
    assert g.generate([[Message("user", "Hello?")]])[0].output_tokens <= 5


def test_lora_with_explicit_eot_trains_that_row(tiny_llama, examples_file, tmp_path):
    run = train(recipe_for(tiny_llama, examples_file, tmp_path / "lora-eot", "train.method=lora",
                           "turns.eot=<|eot|>", "train.epochs=2", "train.lr=1e-2", "train.lr_final=1e-3"))
    base = load_model(str(tiny_llama))
    lm, fmt = load_for_generation(ModelConfig(name=str(run / "checkpoints" / "epoch-02"), dtype="float32"),
                                  TurnsConfig())
    eot = fmt.eot_id
    assert lm.tokenizer.convert_ids_to_tokens(eot) == "<|eot|>"
    assert eot >= base.model.get_input_embeddings().weight.shape[0]  # a new row ...
    row = lm.model.get_input_embeddings().weight[eot]
    mean = base.model.get_input_embeddings().weight.mean(0)
    assert not torch.allclose(row, mean, atol=1e-3)  # ... that moved away from its initialisation


@pytest.mark.parametrize("kind", ["llama", "gemma3"])
def test_lora_with_explicit_eot_trains_its_output_row_too(kind, tiny_llama, tiny_gemma, examples_file, tmp_path,
                                                          monkeypatch):
    """The untied Llama has an output row of its own for the EOT, which must learn to predict it;
    the tied Gemma shares one row between input and output."""
    built = {}
    real_build = train_mod.build_model

    def build_and_note(recipe, fmt, base):
        model = real_build(recipe, fmt, base)
        built.update(eot=fmt.eot_id, head=train_mod.output_layer(model).weight.detach().clone(),
                     emb=model.get_input_embeddings().weight.detach().clone())
        return model

    monkeypatch.setattr(train_mod, "build_model", build_and_note)
    run = train(recipe_for(tiny_llama if kind == "llama" else tiny_gemma, examples_file, tmp_path / "run",
                           "train.method=lora", "turns.eot=<|eot|>", "train.epochs=2", "train.lr=1e-2",
                           "train.lr_final=1e-3"))
    lm = load_model(str(run / "checkpoints" / "epoch-02")).model  # as generation loads it: adapter merged
    assert type(lm.get_output_embeddings()) is torch.nn.Linear
    assert (lm.get_output_embeddings().weight is lm.get_input_embeddings().weight) == (kind == "gemma3")
    eot = built["eot"]
    for now, before in ((lm.get_output_embeddings().weight, built["head"]),
                        (lm.get_input_embeddings().weight, built["emb"])):
        others = torch.arange(now.shape[0]) != eot
        assert torch.equal(now[others], before[others])  # LoRA leaves every other row alone ...
        assert not torch.allclose(now[eot], before[eot], atol=1e-3)  # ... and the EOT's rows learned


def test_one_process_trains_recipes_of_different_precision_one_after_another(tiny_llama, examples_file, tmp_path):
    """`dialogue train` and `ablate` train several recipes in one process; accelerate keeps one state per
    process and refused a second Accelerator with another precision before train() reset it."""
    from accelerate.state import AcceleratorState

    for i, precision in enumerate(("fp32", "bf16", "fp32")):
        run = train(recipe_for(tiny_llama, examples_file, tmp_path / f"p{i}", "train.method=lora", "train.epochs=1",
                               f"train.precision={precision}"))
        assert (run / "done.json").exists()
        assert AcceleratorState().mixed_precision == ("bf16" if precision == "bf16" else "no")


def test_full_finetune_with_frozen_embeddings_keeps_the_vocabulary_matrix(tiny_gemma, examples_file, tmp_path):
    run = train(recipe_for(tiny_gemma, examples_file, tmp_path / "run", "train.freeze_embeddings=true",
                           "turns.eot=auto", "train.epochs=2", "train.save_to_epoch=2"))
    m = metrics(run)
    assert m[-1]["loss"] < m[0]["loss"]
    before = load_model(str(tiny_gemma), dtype="float32").model
    after = load_model(str(run / "checkpoints" / "epoch-02"), dtype="float32").model
    assert torch.equal(before.get_input_embeddings().weight, after.get_input_embeddings().weight)
    assert torch.equal(before.get_output_embeddings().weight, after.get_output_embeddings().weight)
    moved = [n for (n, a), b in zip(before.named_parameters(), after.parameters()) if not torch.equal(a, b)]
    assert moved and all("embed" not in n for n in moved)  # the decoder layers trained
    trainable = json.loads((run / "run.json").read_text())["trainable_parameters"]
    assert trainable == sum(p.numel() for p in before.parameters()) - before.get_input_embeddings().weight.numel()
    # auto chose EOS (a frozen row cannot learn a new token), and the checkpoint says how it was trained
    lm, fmt = load_for_generation(ModelConfig(name=str(run / "checkpoints" / "epoch-02")), TurnsConfig())
    assert fmt.eot_id == lm.tokenizer.eos_token_id and "freeze_embeddings" in fmt.reason


def test_frozen_embeddings_end_turns_with_eos():
    from lima_align.errors import LimaError

    with pytest.raises(LimaError, match="turns.eot"):
        load_recipe(None, ["train.freeze_embeddings=true", "turns.eot=new"])
    assert load_recipe(None, ["train.freeze_embeddings=true", "turns.eot=eos"]).train.freeze_embeddings


def test_training_hands_freed_memory_back_before_returning(tiny_llama, examples_file, tmp_path, monkeypatch):
    # glibc kept 4 GB of freed training memory resident; the quickstart then loaded the checkpoint on top of it
    calls = []
    monkeypatch.setattr(train_mod, "release_freed_memory", lambda: calls.append(1))
    train(recipe_for(tiny_llama, examples_file, tmp_path / "run", "train.epochs=1", "train.save_from_epoch=1",
                     "train.save_to_epoch=1"))
    assert calls == [1]
