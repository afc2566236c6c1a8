"""Generation: stops at the end-of-turn token, never samples other special tokens, resumes exactly."""

from __future__ import annotations

import json

import pytest
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


def generated_ids(g, conversations):
    """(replies, the raw generated ids): decoded text hides special tokens and which token was drawn."""
    seen = []
    real_generate = g.model.generate

    def capture(**kwargs):
        out = real_generate(**kwargs)
        seen.append(out[:, kwargs["input_ids"].shape[1]:])
        return out

    g.model.generate = capture
    try:
        replies = g.generate(conversations)
    finally:
        g.model.generate = real_generate
    return replies, seen[0]


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
    replies, generated = generated_ids(g, PROMPT * 3)
    handle.remove()
    for r in replies:
        assert r.finish_reason == "length" and r.output_tokens == 12
    assert generated.shape == (3, 12)
    assert not any(t in banned for t in generated.flatten().tolist())


def reference_greedy(model, prompt, n, banned, stops, penalty):
    """Greedy decoding written out plainly: the whole sequence through the model at every step, special
    tokens banned, LIMA's penalty on the tokens generated so far (divide a positive logit, multiply a
    negative one), stop at an end marker."""
    ids = list(prompt)
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].clone()
        logits[banned] = float("-inf")
        for t in set(ids[len(prompt):]):
            logits[t] = logits[t] / penalty if logits[t] > 0 else logits[t] * penalty
        t = int(logits.argmax())
        if t in stops:
            break
        ids.append(t)
    return ids[len(prompt):]


def test_greedy_answers_match_a_plain_decoding_loop(tiny_llama):
    g = gen_for(tiny_llama, temperature=0.0, max_new_tokens=12)  # LIMA's penalty 1.2
    replies, ids = generated_ids(g, PROMPT)
    want = reference_greedy(g.model, g.prompt_ids(PROMPT[0]), 12, g.suppress, g.fmt.stop_ids, 1.2)
    assert ids[0, :len(want)].tolist() == want
    assert replies[0].output_tokens == len(want) > 0


def test_batched_greedy_answers_equal_one_at_a_time(tiny_llama):
    """Left padding: every prompt ends where generation starts, so a batch changes no answer."""
    g = gen_for(tiny_llama, temperature=0.0, max_new_tokens=10)
    convs = [[Message("user", "Hi?")], [Message("user", "Write a poem about the sea, then explain gravity.")],
             [Message("user", "What is the capital of Italy?")]]
    assert len({len(g.prompt_ids(c)) for c in convs}) == 3  # three widths: two rows are padded
    alone = [g.generate([c])[0] for c in convs]
    assert g.generate(convs) == alone
    assert all(r.output_tokens > 0 for r in alone)


def test_a_prompts_sample_does_not_depend_on_its_batch(tiny_llama):
    g = gen_for(tiny_llama, temperature=1.0, top_p=0.95, max_new_tokens=16)
    a = [Message("user", "How do I boil an egg?")]
    longer = [Message("user", "Write a poem about the sea, then explain gravity to a child.")]
    other = [Message("user", "What is the capital of Italy?")]
    alone = g.generate([a])[0].text
    assert alone  # sampled text, not empty
    assert g.generate([longer, a])[1].text == alone  # left-padded beside a longer prompt
    assert g.generate([a, other, longer])[0].text == alone
    assert gen_for(tiny_llama, temperature=1.0, top_p=0.95, max_new_tokens=16, seed=1).generate([a])[0].text != alone


def write_prompts(path, n):
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": f"Question {i}?"}]}) + "\n")
    return path


def test_generate_file_resumes_without_duplicates_or_loss(tiny_llama, tmp_path):
    prompts = write_prompts(tmp_path / "prompts.jsonl", 5)
    out = tmp_path / "gens.jsonl"
    cfg = GenerateConfig(prompts=str(prompts), output=str(out), max_new_tokens=8, batch_size=2, temperature=1.0)
    model = ModelConfig(name=str(tiny_llama), dtype="float32")
    generate_file(model, TurnsConfig(), cfg)
    lines = out.read_text().splitlines()
    assert len(lines) == 5
    rec = json.loads(lines[0])
    assert {"prompt_id", "model", "messages", "output", "finish_reason", "tokens", "decoding"} <= set(rec)
    assert rec["decoding"]["top_p"] == 0.9 and rec["decoding"]["repetition_penalty"] == 1.2
    assert rec["decoding"]["repetition_penalty_scope"] == "generated"
    # Simulate a kill mid-write: two whole records survive, the third is half written.
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:20])
    generate_file(model, TurnsConfig(), cfg)
    again = out.read_text().splitlines()
    assert again[:2] == lines[:2]
    ids = [json.loads(line)["prompt_id"] for line in again]
    assert sorted(ids) == [f"p{i}" for i in range(5)]
    # The resumed answers are the ones an uninterrupted run wrote (the batches differ now).
    text = {json.loads(x)["prompt_id"]: json.loads(x)["output"] for x in lines}
    assert {json.loads(x)["prompt_id"]: json.loads(x)["output"] for x in again} == text


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


def reference_distribution(scores, temperature, top_p):
    """Written out plainly: softmax(logits / T), keep the most likely tokens until their mass reaches p."""
    probs = torch.softmax(scores / temperature, -1)
    out = torch.zeros_like(probs)
    for r in range(probs.shape[0]):
        order = probs[r].argsort(descending=True)
        mass = 0.0
        for t in order.tolist():
            if mass >= top_p:
                break
            out[r, t] = probs[r, t]
            mass += probs[r, t].item()
    return out / out.sum(-1, keepdim=True)


def sampler_distribution(sampler, scores):
    probs, idx = sampler.distribution(scores)
    dense = torch.zeros_like(scores).scatter(1, idx, probs)
    return dense / dense.sum(-1, keepdim=True)


def test_temperature_comes_before_the_nucleus():
    from lima_align.decoding import Decoding
    from lima_align.sampler import LimaSampler

    torch.manual_seed(0)
    for scale in (0.5, 3.0, 12.0):  # flat to peaked distributions; flat ones take the full-sort fallback
        scores = torch.randn(4, 5000) * scale
        sampler = LimaSampler(Decoding(temperature=0.7, top_p=0.9, repetition_penalty=1.0), [[1]] * 4, 1, [])
        ours = sampler_distribution(sampler, scores)
        assert torch.allclose(ours, reference_distribution(scores, 0.7, 0.9), atol=1e-6)
    # A case where the order matters: at T = 1 the nucleus holds three tokens, at T = 0.7 two.
    scores = torch.log(torch.tensor([[0.6, 0.25, 0.1, 0.05]]))
    sampler = LimaSampler(Decoding(temperature=0.7, top_p=0.9, repetition_penalty=1.0), [[1]], 1, [])
    kept = (sampler_distribution(sampler, scores) > 0).sum().item()
    assert kept == (reference_distribution(scores, 0.7, 0.9) > 0).sum().item() == 2
    assert (reference_distribution(scores, 1.0, 0.9) > 0).sum().item() == 3


def test_draws_follow_the_distribution_and_only_the_drawn_token_survives():
    from lima_align.decoding import Decoding
    from lima_align.sampler import LimaSampler

    scores = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    want = reference_distribution(scores, 0.7, 0.9)[0]
    counts = torch.zeros(4)
    for i in range(2000):
        sampler = LimaSampler(Decoding(temperature=0.7, top_p=0.9, repetition_penalty=1.0, seed=i), [[1]], 1, [])
        out = sampler(torch.tensor([[1]]), scores.clone())
        assert torch.isfinite(out).sum() == 1
        counts[out[0].argmax()] += 1
    assert want[3] == 0 and counts[3] == 0  # outside the nucleus: never drawn
    assert torch.allclose(counts / 2000, want, atol=0.04)


def test_repetition_penalty_hits_generated_tokens_not_the_prompt():
    from lima_align.decoding import Decoding
    from lima_align.sampler import LimaSampler

    eot, word = 3, 5
    prompt = [1, 7, eot]  # every user turn ends with the end-of-turn token
    scores = torch.zeros(1, 10)
    scores[0, eot], scores[0, word] = 2.4, 1.2
    ids = torch.tensor([prompt])
    gen = LimaSampler(Decoding(repetition_penalty=1.2), [prompt], 3, [])
    assert gen.adjust(ids, scores)[0, eot] == pytest.approx(2.4)  # LIMA: the prompt is not penalised
    every = LimaSampler(Decoding(repetition_penalty=1.2, repetition_penalty_scope="all"), [prompt], 3, [])
    assert every.adjust(ids, scores)[0, eot] == pytest.approx(2.0)
    after = torch.tensor([prompt + [word]])  # once generated, a token is penalised
    assert gen.adjust(after, scores)[0, word] == pytest.approx(1.0)
    neg = scores.clone()
    neg[0, word] = -1.0
    assert gen.adjust(after, neg)[0, word] == pytest.approx(-1.2)
    # Padding is never penalised under "all" (the pad token is often EOS).
    padded = LimaSampler(Decoding(repetition_penalty=1.2, repetition_penalty_scope="all"), [[7, 8]], 3, [])
    assert padded.adjust(torch.tensor([[0, 7, 8]]), torch.ones(1, 10))[0, 0] == pytest.approx(1.0)


def test_only_special_tokens_are_banned(tiny_llama):
    from transformers import AutoTokenizer

    from lima_align.decoding import banned_tokens

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    tok.add_tokens(["\n\n", "<b>"])  # ordinary text the tokenizer lists as added (as Gemma's newlines)
    tok.add_special_tokens({"additional_special_tokens": ["<unused0>"]})
    banned = banned_tokens(tok, [tok.eos_token_id])
    ordinary = tok.convert_tokens_to_ids(["\n\n", "<b>"])
    assert not set(ordinary) & set(banned)
    assert {tok.convert_tokens_to_ids("<unused0>"), tok.bos_token_id, tok.pad_token_id} <= set(banned)
    assert tok.eos_token_id not in banned


def test_progress_callback_counts_finished_answers(tiny_llama):
    g = gen_for(tiny_llama)
    handle = boost(g.model, [g.fmt.eot_id], after_calls=3)
    seen = []
    g.generate(PROMPT * 2, on_step=seen.append)
    handle.remove()
    assert seen == [0, 0, 0, 0]  # one call per step: three tokens, then the end of turn
    from lima_align.decoding import Decoding
    from lima_align.sampler import LimaSampler

    sampler = LimaSampler(Decoding(), [[1], [1]], 1, [], stop_ids=[9])
    assert sampler.finished_rows(torch.tensor([[1, 4, 9, 0], [1, 4, 5, 6]])) == 1


def test_chat_keeps_history_and_resets(tiny_llama):
    from lima_align.config import GenerateConfig
    from lima_align.generate import chat

    lines = iter(["Hello?", "And then?", "/reset", "New topic?", "/quit"])
    printed = []
    history = chat(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(),
                   GenerateConfig(max_new_tokens=3), input_fn=lambda _: next(lines), print_fn=printed.append)
    assert [m.role for m in history] == ["user", "assistant"] and history[0].content == "New topic?"
    assert "(history cleared)" in printed and sum(p.startswith("assistant>") for p in printed) == 3


def test_records_carry_the_answer_ids_without_a_user_turn_the_model_began(tiny_llama):
    """output_ids are what `analyze shift` ranks: the answer's own tokens, not a "User:" turn after it."""
    from lima_align.generate import generation_record
    from lima_align.records import Conversation

    g = gen_for(tiny_llama)
    answer = g.tok("Rome is the capital.", add_special_tokens=False)["input_ids"]
    tail = g.tok("\nUser: and France?", add_special_tokens=False)["input_ids"]

    def scripted(**kwargs):  # the model answers, then starts the user's next turn itself
        ids = kwargs["input_ids"]
        return torch.cat([ids, torch.tensor([answer + tail]).expand(len(ids), -1)], dim=1)

    g.model.generate = scripted
    reply = g.generate(PROMPT)[0]
    assert reply.text == "Rome is the capital." and reply.finish_reason == "stop"
    assert reply.output_ids == answer and reply.output_tokens == len(answer + tail)
    rec = generation_record(Conversation("p0", PROMPT[0]), reply, "m", g.dec)
    assert rec["output_ids"] == answer


# ----------------------------------------------------------------- LIMA's settings through the backend

WORDS = [300, 301, 302, 303]  # ordinary tokens (" g", " m", " s", " t"): no end marker or stop string
PROBS = [0.6, 0.25, 0.1, 0.05]
EIGHT = [[Message("user", f"Question {i}?")] for i in range(8)]


def fixed_next_token(model, logits):
    """Every step's scores become these logits ({token: logit}, all other tokens far below): the model's
    next-token distribution is then known exactly, whatever the prompt and the tokens so far."""
    tokens, values = list(logits), torch.tensor(list(logits.values()))

    def hook(module, args, output):
        out = torch.full_like(output, -1e4)
        out[..., tokens] = values.to(output.dtype)
        return out

    return model.get_output_embeddings().register_forward_hook(hook)


def draw_shares(tiny_llama, **dec):
    """Shares of WORDS among 8 prompts x 64 tokens sampled by Generator from PROBS."""
    g = gen_for(tiny_llama, max_new_tokens=64, repetition_penalty=1.0, **dec)
    handle = fixed_next_token(g.model, dict(zip(WORDS, torch.tensor(PROBS).log().tolist())))
    _, ids = generated_ids(g, EIGHT)
    handle.remove()
    assert ids.shape == (8, 64)
    return torch.stack([(ids == w).float().mean() for w in WORDS])


@pytest.mark.parametrize("temperature,top_p", [(0.7, 0.9), (1.0, 0.9), (0.7, 1.0), (0.0, 0.9)])
def test_temperature_and_top_p_decide_which_tokens_are_drawn(tiny_llama, temperature, top_p):
    """512 draws through transformers' generate. From 0.6/0.25/0.1/0.05: at T 0.7 the nucleus of p 0.9
    holds two tokens (0.72 + 0.21 reach 0.9), at T 1 three, without a cut (p 1) all four; T 0 is greedy."""
    got = draw_shares(tiny_llama, temperature=temperature, top_p=top_p)
    if temperature == 0:
        want = torch.tensor([1.0, 0, 0, 0])
    else:
        want = reference_distribution(torch.tensor(PROBS).log()[None], temperature, top_p)[0]
    assert ((got > 0) == (want > 0)).all(), (got, want)  # the sampled set
    assert torch.allclose(got, want, atol=0.05), (got, want)


def test_repetition_penalty_through_the_backend(tiny_llama):
    """Greedy over two tokens a (logit 1.0) and b (0.9): once a is penalised (1.0 / 1.2 = 0.83) b wins,
    then both are penalised and a wins again. Negative logits are multiplied (-1.0 -> -1.2)."""
    g = gen_for(tiny_llama, temperature=0.0, max_new_tokens=5)
    a, b = 312, WORDS[1]  # a (" boil") is in the prompt, b is not
    assert a in g.prompt_ids(PROMPT[0]) and b not in g.prompt_ids(PROMPT[0])

    def answer(logits, **dec):
        g.dec = Decoding(**{"max_new_tokens": 5, "temperature": 0.0, **dec})
        handle = fixed_next_token(g.model, logits)
        _, ids = generated_ids(g, PROMPT)
        handle.remove()
        return ["ab"[[a, b].index(t)] for t in ids[0].tolist()]

    assert answer({a: 1.0, b: 0.9}, repetition_penalty=1.0) == list("aaaaa")
    assert answer({a: 1.0, b: 0.9}, repetition_penalty=1.2) == list("abaaa")
    assert answer({a: -1.0, b: -1.1}, repetition_penalty=1.2) == list("abaaa")
    # scope "all" penalises the prompt's tokens too: a starts penalised
    assert answer({a: 1.0, b: 0.9}, repetition_penalty=1.2, repetition_penalty_scope="all") == list("baaaa")


def test_each_prompt_draws_from_its_own_seeded_stream(tiny_llama):
    """With a next-token distribution that ignores the prompt, rows differ only by their random streams:
    a prompt's stream is keyed by the decoding seed and its own token ids."""
    g = gen_for(tiny_llama, temperature=1.0, top_p=1.0, repetition_penalty=1.0, max_new_tokens=16)
    uniform = dict.fromkeys(WORDS, 0.0)
    a, b = PROMPT[0], [Message("user", "What is the capital of Italy?")]
    handle = fixed_next_token(g.model, uniform)
    _, ids = generated_ids(g, [a, b, a])
    assert torch.equal(ids[0], ids[2])  # the same prompt, the same draws, in any row
    assert not torch.equal(ids[0], ids[1])  # another prompt, other draws (4**-16 to match by chance)
    g.dec = Decoding(max_new_tokens=16, temperature=1.0, top_p=1.0, repetition_penalty=1.0, seed=1)
    _, reseeded = generated_ids(g, [a])
    handle.remove()
    assert not torch.equal(reseeded[0], ids[0])  # another decoding seed, other draws


def test_seeds_a_multiple_of_2_31_apart_sample_differently():
    """Every accepted seed gets its own stream: folding seeds modulo 2**31 made 0, 2**62 and 2**64
    (and -1, 2**63 - 1) sample the same text."""
    from lima_align.decoding import Decoding, prompt_seed
    from lima_align.sampler import LimaSampler

    seeds = [0, 1, 2 ** 31, 2 ** 32 - 1, 2 ** 62, 2 ** 63 - 1, 2 ** 64, -1]
    assert len({prompt_seed(s, [5, 6]) for s in seeds}) == len(seeds)
    assert all(0 <= prompt_seed(s, [5, 6]) < 2 ** 63 for s in seeds)  # a signed 64-bit generator seed
    assert prompt_seed(0, [5, 6]) != prompt_seed(0, [5, 7])  # the prompt is part of the key

    def draws(seed):
        sampler = LimaSampler(Decoding(temperature=1.0, top_p=1.0, repetition_penalty=1.0, seed=seed), [[5, 6]], 2, [])
        return [int(sampler(torch.tensor([[5, 6]]), torch.zeros(1, 1000)).argmax()) for _ in range(8)]

    assert len({tuple(draws(s)) for s in seeds}) == len(seeds)  # 1000**-8 to match by chance


def test_a_prompt_that_leaves_no_room_for_the_answer_is_refused_not_shortened(tiny_llama, tmp_path):
    """One long prompt capped every answer of its batch to the room it left (one token when it filled
    the context): generate refuses before generating instead, naming the prompt and the fix."""
    from lima_align.errors import LimaError

    prompts = tmp_path / "prompts.jsonl"
    rows = [("short", "Hi?"), ("long", "Tell me about eggs and the sea. " * 25)]
    prompts.write_text("".join(json.dumps({"id": i, "messages": [{"role": "user", "content": c}]}) + "\n"
                               for i, c in rows))
    out = tmp_path / "gens.jsonl"
    model = ModelConfig(name=str(tiny_llama), dtype="float32")
    long_n = len(gen_for(tiny_llama).prompt_ids([Message("user", rows[1][1])]))
    assert 300 < long_n < 500  # the tiny model's context is 512
    cfg = GenerateConfig(prompts=str(prompts), output=str(out), max_new_tokens=600 - long_n, batch_size=2)
    with pytest.raises(LimaError) as e:
        generate_file(model, TurnsConfig(), cfg, log=lambda *_: None)
    msg = str(e.value)
    assert "1 of 2 prompts do not fit" in msg and "'long'" in msg and f"is {long_n} tokens" in msg
    assert "context of 512 tokens" in msg and f"at most {512 - long_n}" in msg and msg.startswith(f"{prompts}: ")
    assert not out.exists() or out.read_text() == ""  # nothing generated
    # Within the context, the short prompt batched beside the long one keeps its whole budget.
    g = gen_for(tiny_llama, max_new_tokens=512 - long_n, temperature=1.0)
    handle = boost(g.model, [g.tok.convert_tokens_to_ids("Ġthe")])  # never the end of turn: answers run to length
    convs = [[Message("user", c)] for _, c in rows]
    replies = g.generate(convs)
    assert [(r.finish_reason, r.output_tokens) for r in replies] == [("length", 512 - long_n)] * 2
    # Generator.generate on its own (chat, serve, dialogue batches): a prompt with less room than
    # max_new_tokens gets what is left, and the prompts batched with it are not cut to that.
    g.dec = Decoding(max_new_tokens=512 - long_n + 20, temperature=1.0)
    replies = g.generate(convs + [[Message("user", "Bye?")]])
    assert [r.output_tokens for r in replies] == [512 - long_n + 20, 512 - long_n, 512 - long_n + 20]
    assert replies[0] == g.generate(convs[:1])[0]  # the same answer alone
    handle.remove()


def test_a_file_of_another_models_answers_is_refused_before_loading(tiny_llama, tmp_path, monkeypatch):
    import lima_align.generate as generate
    from lima_align.errors import LimaError

    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    out = tmp_path / "gens.jsonl"
    out.write_text(json.dumps({"prompt_id": "p0", "model": "other", "messages": [], "output": "x"}) + "\n")
    before = out.read_bytes()
    monkeypatch.setattr(generate, "load_for_generation", lambda *a: pytest.fail("the model was loaded"))
    cfg = GenerateConfig(prompts=str(prompts), output=str(out), max_new_tokens=4)
    with pytest.raises(LimaError) as e:  # appending would mix two models and skip p0 as answered
        generate_file(ModelConfig(name=str(tiny_llama)), TurnsConfig(), cfg, log=lambda *_: None)
    p = e.value.problems[0]
    assert p.where == f"{out}:1" and "'other'" in p.what and repr(str(tiny_llama)) in p.what
    assert "--output" in p.fix and out.read_bytes() == before


def test_a_finished_file_loads_no_model(tiny_llama, tmp_path, monkeypatch):
    import lima_align.generate as generate

    prompts = write_prompts(tmp_path / "prompts.jsonl", 2)
    out = tmp_path / "gens.jsonl"
    # The label a run of this model writes is its folder's path, known before the model loads.
    out.write_text("".join(json.dumps({"prompt_id": f"p{i}", "model": str(tiny_llama)}) + "\n" for i in range(2)))
    monkeypatch.setattr(generate, "load_for_generation", lambda *a: pytest.fail("the model was loaded"))
    said = []
    generate_file(ModelConfig(name=str(tiny_llama)), TurnsConfig(), GenerateConfig(prompts=str(prompts),
                  output=str(out)), log=said.append)
    assert said == [f"{out}: all 2 prompts already answered"]


def test_generate_file_renders_each_prompt_once(tiny_llama, tmp_path, monkeypatch):
    calls = []
    render = Generator.prompt_ids
    monkeypatch.setattr(Generator, "prompt_ids", lambda self, m: calls.append(1) or render(self, m))
    cfg = GenerateConfig(prompts=str(write_prompts(tmp_path / "prompts.jsonl", 3)), output=str(tmp_path / "g.jsonl"),
                         max_new_tokens=2, batch_size=2)
    generate_file(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(), cfg, log=lambda *_: None)
    assert len(calls) == 3 and len((tmp_path / "g.jsonl").read_text().splitlines()) == 3
