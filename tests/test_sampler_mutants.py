"""Sampler behaviour that mutation testing (benchmarks/mutation.py) found unchecked: the nucleus's
full-sort fallback (no existing test reached it), the nucleus boundary, counting finished answers."""

from __future__ import annotations

import torch

from lima_align.decoding import Decoding
from lima_align.sampler import LimaSampler, nucleus


def exact_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The nucleus written out plainly, as a dense (rows, vocab) tensor of kept probabilities."""
    top, idx = probs.sort(-1, descending=True)
    keep = (top.cumsum(-1) - top) < top_p
    return torch.zeros_like(probs).scatter(1, idx, top * keep)


def dense(kept: torch.Tensor, idx: torch.Tensor, vocab: int) -> torch.Tensor:
    return torch.zeros(kept.shape[0], vocab, dtype=kept.dtype).scatter(1, idx, kept)


def two_rows(vocab: int) -> torch.Tensor:
    # differently ordered rows, so a sort or sum across the batch shows
    logits = torch.stack([torch.linspace(0.0, 3.0, vocab), torch.linspace(3.0, 0.0, vocab) ** 1.5])
    return logits.softmax(-1)


def test_the_full_sort_fallback_gives_the_exact_nucleus():
    probs = two_rows(50)
    top2 = probs.sort(-1, descending=True).values[:, :2].sum(-1)
    assert bool((top2 < 0.9).all())  # two candidates cannot hold the nucleus: the fallback must run
    kept, idx = nucleus(probs, 0.9, k=2)
    assert torch.allclose(dense(kept, idx, 50), exact_nucleus(probs, 0.9))
    kept, idx = nucleus(probs, 0.9)
    assert torch.allclose(dense(kept, idx, 50), exact_nucleus(probs, 0.9))


def test_a_flat_distribution_over_a_large_vocabulary_is_sampled_from_its_exact_nucleus():
    # 5000 nearly equal logits: the 4096 most likely tokens hold about 0.8 of the mass, less than top_p
    scores = torch.stack([torch.linspace(0.0, 0.3, 5000), torch.linspace(0.3, 0.0, 5000)])
    sampler = LimaSampler(Decoding(temperature=0.7, top_p=0.9, repetition_penalty=1.0), [[1], [2]], 1, [])
    kept, idx = sampler.distribution(scores)
    want = exact_nucleus((scores / 0.7).softmax(-1), 0.9)
    got = dense(kept, idx, 5000)
    assert ((got > 0).sum(-1) > 4096).all()
    assert torch.allclose(got, want, atol=1e-7)


def test_the_nucleus_stops_once_its_mass_reaches_top_p():
    # Exactly representable: after 0.5 and 0.25 the mass is 0.75 = top_p, so the last 0.25 is left out.
    kept, idx = nucleus(torch.tensor([[0.25, 0.5, 0.25]]), 0.75)
    assert kept.tolist() == [[0.5, 0.25, 0.0]]
    assert idx[0, 0].item() == 1


def test_finished_rows_counts_answers_not_stop_tokens():
    sampler = LimaSampler(Decoding(), [[1], [1]], 1, [], stop_ids=[9])
    assert sampler.finished_rows(torch.tensor([[1, 4, 9, 9], [1, 4, 5, 6]])) == 1  # one answer, two stops
    assert sampler.finished_rows(torch.tensor([[1, 9, 5, 0], [1, 4, 9, 0]])) == 2
    assert sampler.finished_rows(torch.tensor([[1, 9], [1, 5]])) == 1  # the first generated token counts
    assert sampler.finished_rows(torch.tensor([[1], [1]])) == 0  # nothing generated yet


def test_every_token_of_a_full_nucleus_can_be_drawn():
    # top_p 1: the nucleus is the whole vocabulary, its last token included
    scores = torch.log(torch.tensor([[0.5, 0.5]]))
    drawn = set()
    for seed in range(40):
        sampler = LimaSampler(Decoding(temperature=1.0, top_p=1.0, repetition_penalty=1.0, seed=seed), [[1]], 1, [])
        drawn.add(int(sampler(torch.tensor([[1]]), scores.clone())[0].argmax()))
    assert drawn == {0, 1}


def test_the_models_own_repetition_penalty_never_reaches_the_sampler(tiny_llama):
    from transformers import AutoModelForCausalLM

    from lima_align.sampler import generation_kwargs

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    favourite = 100  # made the most likely token at every step, so greedy repeats it
    hook = model.lm_head.register_forward_hook(
        lambda m, i, out: out + 8.0 * (torch.arange(out.shape[-1]) == favourite).float())
    prompt = torch.tensor([[2, 50, 60]])

    def greedy():
        s = LimaSampler(Decoding(temperature=0.0, repetition_penalty=1.0), [prompt[0].tolist()], 3, [])
        return model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, pad_token_id=0,
                              **generation_kwargs(s))[0, 3:].tolist()

    try:
        assert greedy() == [favourite] * 6
        # a checkpoint's generation_config may carry settings of its own; the sampler alone decides
        model.generation_config.update(repetition_penalty=50.0, do_sample=True, top_k=2, top_p=0.5, temperature=3.0)
        assert greedy() == [favourite] * 6
    finally:
        hook.remove()


def test_any_penalty_other_than_one_is_applied():
    # 2.0 as well as LIMA's 1.2: a generated token's positive logit is halved, a negative one doubled
    sampler = LimaSampler(Decoding(repetition_penalty=2.0), [[1]], 1, [])
    scores = torch.tensor([[0.0, 3.0, -1.0, 2.0]])
    out = sampler.adjust(torch.tensor([[1, 1, 2]]), scores)
    assert out.tolist() == [[0.0, 1.5, -2.0, 2.0]]


def test_prompts_of_different_lengths_are_penalised_under_scope_all():
    # left-padded to width 3: each row penalises its own prompt's tokens, never the padding id 0
    sampler = LimaSampler(Decoding(repetition_penalty=2.0, repetition_penalty_scope="all"), [[5, 9], [6, 7, 8]], 3, [])
    out = sampler.adjust(torch.tensor([[0, 5, 9], [6, 7, 8]]), torch.ones(2, 10))
    assert (out[0] == 0.5).nonzero().flatten().tolist() == [5, 9]
    assert (out[1] == 0.5).nonzero().flatten().tolist() == [6, 7, 8]


def test_banned_ids_beyond_the_models_vocabulary_are_ignored():
    # a tokenizer may list more ids than the model's output layer has rows
    sampler = LimaSampler(Decoding(repetition_penalty=1.0), [[1]], 1, [1, 4])
    out = sampler.adjust(torch.tensor([[1]]), torch.zeros(1, 4))
    assert out.tolist() == [[0.0, float("-inf"), 0.0, 0.0]]


def test_when_the_k_most_likely_tokens_hold_top_p_the_nucleus_is_cut_from_them_alone():
    # Exactly representable masses; the three most likely hold 0.875 >= 0.8 but the two most likely 0.75 < 0.8,
    # so the cut needs all three, found without sorting the vocabulary: only k columns come back.
    masses = [0.5, 0.25, 0.125, 0.0625, 0.03125, 0.03125]
    order = [[3, 0, 5, 1, 4, 2], [1, 2, 0, 4, 3, 5]]  # token ids of the masses, most likely first
    probs = torch.zeros(2, 6)
    for r, ids in enumerate(order):
        probs[r, ids] = torch.tensor(masses)
    kept, idx = nucleus(probs, 0.8, k=3)
    assert kept.tolist() == [[0.5, 0.25, 0.125]] * 2
    assert idx.tolist() == [o[:3] for o in order]
    # mass of the k reaching top_p exactly is enough too (0.5 + 0.25 = 0.75)
    kept, idx = nucleus(probs[:1], 0.75, k=2)
    assert kept.tolist() == [[0.5, 0.25]] and idx.tolist() == [[3, 0]]


def test_top_p_one_keeps_the_whole_vocabulary_even_tokens_too_unlikely_to_move_a_running_sum():
    # exp(-20) / (1 + 3 exp(-20)): about 2e-9, lost when added to the first token's float32 1.0
    scores = torch.tensor([[20.0, 0.0, 0.0, 0.0]])
    sampler = LimaSampler(Decoding(temperature=1.0, top_p=1.0, repetition_penalty=1.0), [[1]], 1, [])
    kept, idx = sampler.distribution(scores)
    assert (dense(kept, idx, 4) > 0).all()
    assert (dense(*nucleus(scores.softmax(1), 0.999999), 4) > 0).tolist() == [[True, False, False, False]]


def test_the_returned_scores_give_the_drawn_token_probability_one():
    # log 1 = 0 at the drawn token and log 0 elsewhere: greedy picks it, and a caller reading the scores
    # (output_scores) sees a distribution, not just a maximum
    scores = torch.log(torch.tensor([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3]]))
    for dec in (Decoding(temperature=0.0, repetition_penalty=1.0), Decoding(seed=3, repetition_penalty=1.0)):
        out = LimaSampler(dec, [[1], [2]], 1, [])(torch.tensor([[1], [2]]), scores.clone())
        assert out.exp().sum(1).tolist() == [1.0, 1.0]
        assert out.max(1).values.tolist() == [0.0, 0.0]


def test_draws_are_the_inverse_cdf_of_the_rows_own_float64_uniforms():
    # Answers sampled with a seed stay the same after an upgrade or a resume only while the draw is defined
    # exactly: one float64 uniform per step from the generator seeded with prompt_seed(seed, prompt).
    import math

    from lima_align.decoding import prompt_seed

    prompt = [5, 6]
    sampler = LimaSampler(Decoding(temperature=1.0, top_p=1.0, repetition_penalty=1.0, seed=7), [prompt], 2, [])
    stream = torch.Generator().manual_seed(prompt_seed(7, prompt))
    for _ in range(20):
        drawn = int(sampler(torch.tensor([prompt]), torch.zeros(1, 8)).argmax())  # eight tokens of 1/8 each
        u = torch.rand(1, generator=stream, dtype=torch.float64).item()
        assert drawn == max(math.ceil(8 * u) - 1, 0)  # the first token whose cumulative mass reaches u


def test_a_token_of_probability_zero_is_never_drawn():
    # banned tokens between allowed ones (the whole vocabulary, unsorted) and tokens cut from the nucleus
    drawn = {1.0: set(), 0.8: set()}
    for seed in range(300):
        for top_p in drawn:
            dec = Decoding(temperature=1.0, top_p=top_p, repetition_penalty=1.0, seed=seed)
            sampler = LimaSampler(dec, [[1]], 1, [0, 2, 4])
            scores = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.25, 0.1, 0.05]]))
            drawn[top_p].add(int(sampler(torch.tensor([[1]]), scores).argmax()))
    assert drawn[1.0] == {1, 3, 5}
    assert drawn[0.8] == {3, 1}  # after the ban 0.5, 0.4 and 0.1: the first two reach 0.8


def test_a_batch_of_empty_prompts_penalises_only_generated_tokens_under_scope_all():
    sampler = LimaSampler(Decoding(repetition_penalty=2.0, repetition_penalty_scope="all"), [[], []], 0, [])
    out = sampler.adjust(torch.tensor([[3], [1]]), torch.ones(2, 5))
    assert out.tolist() == [[1.0, 1.0, 1.0, 0.5, 1.0], [1.0, 0.5, 1.0, 1.0, 1.0]]


def test_generating_leaves_torchs_global_random_stream_alone(tiny_llama):
    # a checkpoint's generation_config may ask for sampling: transformers would then draw each (already
    # decided) token again from the global stream, and code seeded before generating (training after an
    # evaluation, say) would see other random numbers
    from transformers import AutoModelForCausalLM

    from lima_align.sampler import generation_kwargs

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).eval()
    model.generation_config.update(do_sample=True)
    prompt = torch.tensor([[2, 50, 60]])
    sampler = LimaSampler(Decoding(temperature=0.7, top_p=0.9, seed=1), [prompt[0].tolist()], 3, [])
    torch.manual_seed(0)
    untouched = torch.rand(4)
    torch.manual_seed(0)
    model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=4, pad_token_id=0,
                   **generation_kwargs(sampler))
    assert torch.equal(torch.rand(4), untouched)
