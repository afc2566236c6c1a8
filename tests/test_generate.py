"""Generation: stops at the end-of-turn token, never samples other special tokens, resumes exactly."""

from __future__ import annotations

import json

import torch

from lima_align.config import GenerateConfig, ModelConfig, TurnsConfig
from lima_align.generate import Decoding, Generator, generate_file, load_for_generation, trim_history
from lima_align.records import Message


def boost(model, token_ids, after_calls=0, amount=1e4):
    """Make the model strongly prefer some tokens after a few forward calls (a controllable stub LM)."""
    calls = {"n": 0}

    def hook(module, args, output):
        calls["n"] += 1
        if calls["n"] > after_calls:
            output[..., token_ids] += amount
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def gen_for(path, **dec):
    lm, fmt = load_for_generation(ModelConfig(name=str(path), dtype="float32"), TurnsConfig(format="plain"))
    return Generator(lm, fmt, Decoding(**{"max_new_tokens": 12, **dec}))


PROMPT = [[Message("user", "How do I boil an egg?")]]


def test_generation_stops_at_eot(tiny_llama):
    g = gen_for(tiny_llama)
    handle = boost(g.model, [g.fmt.eot_id], after_calls=2)  # prefill and one step give 2 tokens, then EOT
    reply = g.generate(PROMPT)[0]
    handle.remove()
    assert reply.finish_reason == "eot" and reply.output_tokens == 2


def test_special_tokens_other_than_eot_are_never_sampled(tiny_llama):
    g = gen_for(tiny_llama, temperature=1.0)
    tok = g.tok
    banned = [tok.bos_token_id, tok.pad_token_id]
    handle = boost(g.model, banned)
    seen = []
    real_generate = g.model.generate

    def capture(**kwargs):  # keep the raw ids: decoded text hides special tokens
        out = real_generate(**kwargs)
        seen.append(out[:, kwargs["input_ids"].shape[1]:])
        return out

    g.model.generate = capture
    replies = g.generate(PROMPT * 3)
    handle.remove()
    for r in replies:
        assert r.finish_reason == "length" and r.output_tokens == 12
    generated = seen[0]
    assert generated.shape == (3, 12)
    assert not any(t in banned for t in generated.flatten().tolist())


def test_same_seed_same_output_and_greedy_is_deterministic(tiny_llama):
    a = gen_for(tiny_llama, seed=3).generate(PROMPT, seed_key="p1")[0].text
    b = gen_for(tiny_llama, seed=3).generate(PROMPT, seed_key="p1")[0].text
    assert a == b
    g0 = gen_for(tiny_llama, temperature=0.0)
    assert g0.generate(PROMPT)[0].text == g0.generate(PROMPT)[0].text


def write_prompts(path, n):
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": f"Question {i}?"}]}) + "\n")
    return path


def test_generate_file_resumes_without_duplicates_or_loss(tiny_llama, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 5)
    out = tmp_path / "gens.jsonl"
    cfg = GenerateConfig(prompts=str(prompts), output=str(out), max_new_tokens=4, batch_size=2)
    model = ModelConfig(name=str(tiny_llama), dtype="float32")
    generate_file(model, TurnsConfig(), cfg)
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    rec = json.loads(lines[0])
    assert {"prompt_id", "model", "messages", "output", "finish_reason", "tokens", "decoding"} <= set(rec)
    assert rec["decoding"]["top_p"] == 0.9 and rec["decoding"]["repetition_penalty"] == 1.2
    # Simulate a kill mid-write: two whole records survive, the third is half written.
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    generate_file(model, TurnsConfig(), cfg)
    again = out.read_text().splitlines()
    assert again[:2] == lines[:2]
    ids = [json.loads(line)["prompt_id"] for line in again]
    assert sorted(ids) == [f"p{i}" for i in range(5)]


def test_history_is_trimmed_oldest_first_and_reported(tiny_llama):
    g = gen_for(tiny_llama)
    history = []
    for i in range(6):
        history += [Message("user", f"Question number {i} about eggs?"), Message("assistant", f"Answer {i}.")]
    history.append(Message("user", "Last question?"))
    g.context = len(g.prompt_ids(history)) - 5
    kept, dropped = trim_history(g, history, reserve=0)
    assert dropped == 2 and kept == history[2:]
    assert kept[-1].content == "Last question?"
    g.context = 10_000
    assert trim_history(g, history, reserve=0) == (history, 0)


def test_model_generates_in_bf16_or_fp32_only_as_asked(tiny_llama):
    g = gen_for(tiny_llama)
    assert next(g.model.parameters()).dtype == torch.float32


def test_fast_top_p_equals_transformers_top_p():
    from transformers.generation.logits_process import TopPLogitsWarper

    from lima_align.generate import FastTopP

    torch.manual_seed(0)
    for scale in (0.5, 3.0, 12.0):  # flat to peaked distributions; flat ones need the fallback
        scores = torch.randn(4, 5000) * scale
        ours = FastTopP(0.9, k=256)(None, scores.clone())
        ref = TopPLogitsWarper(0.9)(None, scores.clone())
        assert torch.equal(torch.isinf(ours), torch.isinf(ref))


def test_chat_keeps_history_and_resets(tiny_llama):
    from lima_align.config import GenerateConfig
    from lima_align.generate import chat

    lines = iter(["Hello?", "And then?", "/reset", "New topic?", "/quit"])
    printed = []
    history = chat(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(),
                   GenerateConfig(max_new_tokens=3), input_fn=lambda _: next(lines), print_fn=printed.append)
    assert [m.role for m in history] == ["user", "assistant"] and history[0].content == "New topic?"
    assert "(history cleared)" in printed and sum(p.startswith("assistant>") for p in printed) == 3
