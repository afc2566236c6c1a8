"""NEFTune (train.neftune_alpha): noise on the input embeddings while training, scaled per example of a packed
row, and never at evaluation, in generation or in a saved checkpoint."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lima_align.checkpoint import checkpoint_path
from lima_align.config import ModelConfig, TurnsConfig, load_recipe
from lima_align.generate import load_for_generation
from lima_align.models import load_model
from lima_align.neftune import add_neftune, segment_lengths
from lima_align.train import train


def test_segment_lengths_follow_restarting_positions():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2, 3], [5, 6, 0, 1, 2, 3, 0, 0, 1]])
    assert segment_lengths(pos).tolist() == [[3, 3, 3, 2, 2, 4, 4, 4, 4], [2, 2, 4, 4, 4, 4, 1, 2, 2]]


def embedding_outputs(model):
    """Record what the layers receive from the input embeddings (after NEFTune's hook)."""
    seen = []
    model.get_input_embeddings().register_forward_hook(lambda m, a, out: seen.append(out.detach().clone()))
    return seen


def test_noise_in_training_only_scaled_by_each_packed_examples_length(tiny_llama):
    model = load_model(str(tiny_llama)).model
    d = model.config.hidden_size
    hook = add_neftune(model, 5.0)
    seen = embedding_outputs(model)
    ids = torch.tensor([[2, 40, 41, 2, 42, 43, 44, 45, 46, 47]])
    pos = torch.tensor([[0, 1, 2, 0, 1, 2, 3, 4, 5, 6]])  # two packed examples: 3 and 7 tokens
    with torch.no_grad():
        model.eval()
        clean = model(ids, position_ids=pos).logits
        model.train()
        model(ids, position_ids=pos)
        model.eval()
        assert torch.equal(model(ids, position_ids=pos).logits, clean)  # off again at evaluation
    noise = seen[1] - seen[0]
    assert torch.equal(seen[2], seen[0])
    for part, n in ((noise[0, :3], 3), (noise[0, 3:], 7)):
        bound = 5.0 / math.sqrt(n * d)
        assert part.abs().max() <= bound * (1 + 1e-5)
        assert part.abs().max() > 0.9 * bound  # uniform over [-bound, bound]: n * d draws reach near it
    # The first example is shorter, so its noise is larger than the whole row's length would give.
    assert noise[0, :3].abs().max() > 5.0 / math.sqrt(10 * d)
    hook.remove()
    model.train()
    with torch.no_grad():
        model(ids, position_ids=pos)
    assert torch.equal(seen[3], seen[0])  # removed: no noise even in training mode
    assert add_neftune(model, 0.0) is None


def test_a_padded_batch_takes_each_rows_real_tokens(tiny_llama):
    model = load_model(str(tiny_llama)).model
    d = model.config.hidden_size
    add_neftune(model, 5.0)
    seen = embedding_outputs(model)
    ids = torch.tensor([[2, 40, 41, 42, 43, 44, 45, 46], [0, 0, 0, 0, 0, 0, 2, 47]])
    mask = torch.tensor([[1] * 8, [0] * 6 + [1] * 2])
    model.train()
    with torch.no_grad():
        model(ids, attention_mask=mask)
        model.eval()
        model(ids, attention_mask=mask)
    noise = seen[0] - seen[1]
    assert noise[1].abs().max() > 5.0 / math.sqrt(8 * d)  # 2 real tokens, not the padded 8
    assert noise[1].abs().max() <= 5.0 / math.sqrt(2 * d) * (1 + 1e-5)


def test_generation_is_unchanged_by_the_hook(tiny_llama):
    model = load_model(str(tiny_llama)).model
    ids = torch.tensor([[2, 40, 41, 42]])
    model.eval()
    before = model.generate(ids, max_new_tokens=6, do_sample=False)
    hook = add_neftune(model, 50.0)
    model.eval()
    assert torch.equal(model.generate(ids, max_new_tokens=6, do_sample=False), before)
    hook.remove()


def run_for(model_dir, data, out, *extra):
    return load_recipe(None, [f"model.name={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}",
                              "train.batch_size=4", "train.epochs=1", "train.lr=3e-3", "train.lr_final=3e-4",
                              "train.residual_dropout_top=0.0", "train.save_from_epoch=1", "train.save_to_epoch=1",
                              "train.precision=fp32", *extra])


@pytest.mark.parametrize("method", ["full", "lora"])
def test_training_loss_changes_and_the_checkpoint_carries_no_noise(tiny_gemma, examples_file, tmp_path, method):
    def losses(run):
        return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    quiet = lambda *_: None  # noqa: E731
    plain = train(run_for(tiny_gemma, examples_file, tmp_path / "plain", f"train.method={method}"), log=quiet)
    noisy = train(run_for(tiny_gemma, examples_file, tmp_path / "noisy", f"train.method={method}",
                          "train.neftune_alpha=5"), log=quiet)
    again = train(run_for(tiny_gemma, examples_file, tmp_path / "again", f"train.method={method}",
                          "train.neftune_alpha=5"), log=quiet)
    assert losses(noisy)[0] != pytest.approx(losses(plain)[0], rel=1e-6)  # the first step's forward had noise
    assert losses(again) == losses(noisy)  # seeded: the same noise on a rerun
    # The saved checkpoint, loaded as generate loads it, has no hook: even in training mode nothing is added.
    lm, _ = load_for_generation(ModelConfig(name=str(checkpoint_path(noisy, 1)), dtype="float32"), TurnsConfig())
    model = lm.model
    emb = model.get_input_embeddings()
    assert not emb._forward_hooks and not emb._forward_pre_hooks
    model.train()
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    with torch.no_grad():
        assert torch.equal(emb(ids), emb(ids))
