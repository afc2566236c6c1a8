"""Generation behaviour that mutation testing (benchmarks/mutation.py) found unchecked: which prompts share a
batch and how long each answer may run, the plain format's stop string at batch and length boundaries,
answer_prompts' batches, records, refusals and progress bar, the model label a resumed file is checked
against, check_context's words at its boundaries, and chat's commands and history budget."""

from __future__ import annotations

import builtins
import json
import re
from types import SimpleNamespace

import pytest
import torch

import lima_align.generate as generate
from lima_align.config import GenerateConfig, ModelConfig, TurnsConfig
from lima_align.decoding import Decoding, Reply
from lima_align.errors import LimaError
from lima_align.generate import (Generator, answer_prompts, batch_progress, chat, check_context, generate_file,
                                 load_for_generation, resolve_dtype)
from lima_align.models import load_model
from lima_align.records import Message
from lima_align.turns import TurnFormat

ANSWER = "Rome is the capital."
WORD = 271  # " the": ordinary text, no end marker or stop string


def tiny(path, fmt="plain", **dec):
    lm, f = load_for_generation(ModelConfig(name=str(path), dtype="float32"), TurnsConfig(format=fmt))
    return Generator(lm, f, Decoding(**{"max_new_tokens": 4, "temperature": 1.0, **dec}))


def scripted_rows(model, rows, then=WORD):
    """Row i of every batch emits rows[i] token by token, then `then` (a controllable stub LM); the model's
    own scores are drowned."""
    calls = {"n": 0}

    def hook(module, args, output):
        step = calls["n"]
        calls["n"] += 1
        for i, seq in enumerate(rows[:output.shape[0]]):
            output[i, ..., seq[step] if step < len(seq) else then] += 1e4
        return output

    return model.get_output_embeddings().register_forward_hook(hook)


def spy_batches(g):
    """The row count of every model.generate call (one call per batch)."""
    sizes = []
    real = g.model.generate

    def spy(**kwargs):
        sizes.append(kwargs["input_ids"].shape[0])
        return real(**kwargs)

    g.model.generate = spy
    return sizes


def words(n):
    return [Message("user", "Hi" + " the" * n)]


# ----------------------------------------------------------------- resolve_dtype, load_for_generation


def test_auto_dtype_is_bfloat16_only_where_bfloat16_is_fast(monkeypatch):
    monkeypatch.setattr(generate, "bf16_is_fast", lambda: True)
    assert resolve_dtype("auto") == "bfloat16" and resolve_dtype("float32") == "float32"
    monkeypatch.setattr(generate, "bf16_is_fast", lambda: False)
    assert resolve_dtype("auto") == "float32" and resolve_dtype("bfloat16") == "bfloat16"


def test_the_model_is_loaded_as_configured_and_gets_a_pad_token(tiny_llama, monkeypatch):
    asked = {}

    def loading(name, **kw):  # the tokenizer of a base model often has no pad token
        asked.update(kw, name=name)
        lm = load_model(name, dtype="float32")
        lm.tokenizer.pad_token = None
        return lm

    monkeypatch.setattr(generate, "load_model", loading)
    monkeypatch.setattr(generate, "bf16_is_fast", lambda: False)
    lm, fmt = load_for_generation(ModelConfig(name=str(tiny_llama), revision="v1", cache_dir="/nowhere"),
                                  TurnsConfig(format="plain"))
    assert asked == {"name": str(tiny_llama), "dtype": "float32", "revision": "v1", "cache_dir": "/nowhere"}
    assert lm.tokenizer.pad_token == lm.tokenizer.eos_token == "<eos>"
    assert fmt.kind == "plain" and fmt.stop_ids == [lm.tokenizer.eos_token_id]


def test_an_end_of_turn_token_the_tokenizer_lacks_is_refused_not_added(tiny_llama):
    # training adds a new end-of-turn token; a loaded model never learnt one, so generating with it is refused
    with pytest.raises(LimaError) as e:
        load_for_generation(ModelConfig(name=str(tiny_llama), dtype="float32"),
                            TurnsConfig(format="plain", eot="<|im_end|>"))
    p = e.value.problems[0]
    assert p.where == "turns.eot" and p.what == "end-of-turn token '<|im_end|>' is not in this tokenizer"


def test_a_model_config_without_a_context_length_gets_8192(tiny_llama):
    g = tiny(tiny_llama)
    assert g.context == 512 and g.cache == "dynamic"
    model = SimpleNamespace(config=SimpleNamespace(vocab_size=400))  # as configs that keep it elsewhere
    model.eval = lambda: model
    assert Generator(SimpleNamespace(model=model, tokenizer=g.tok), g.fmt, g.dec).context == 8192


# ----------------------------------------------------------------- batches and how long answers may run


def test_prompts_with_room_for_the_whole_answer_share_one_batch(tiny_llama):
    g = tiny(tiny_llama)
    convs = [words(1), words(5), words(3)]
    lengths = [len(g.prompt_ids(c)) for c in convs]
    g.context = max(lengths) + 4  # the longest has exactly max_new_tokens of room left: still not cramped
    sizes = spy_batches(g)
    handle = scripted_rows(g.model, [[]] * 3)
    replies = g.generate(convs)
    handle.remove()
    assert sizes == [3]
    assert [(r.finish_reason, r.output_tokens, r.prompt_tokens) for r in replies] == [("length", 4, n) for n in lengths]


def test_cramped_prompts_go_one_at_a_time_and_keep_their_order(tiny_llama):
    g = tiny(tiny_llama)
    convs = [words(6), words(1), words(3), words(9)]
    lengths = [len(g.prompt_ids(c)) for c in convs]
    g.context = lengths[0] + 2  # rooms: 2, 7, 5, -1 of max_new_tokens 4
    sizes = spy_batches(g)
    handle = scripted_rows(g.model, [[]] * 3)
    replies = g.generate(convs)
    handle.remove()
    assert sizes == [2, 1, 1]  # the two with room together, then each cramped one alone
    assert [r.prompt_tokens for r in replies] == lengths
    # a cramped answer runs to the room its prompt leaves, at least one token when the prompt fills the context
    assert [r.output_tokens for r in replies] == [2, 4, 4, 1]
    assert {r.finish_reason for r in replies} == {"length"}


def test_cramped_prompts_of_one_length_share_a_batch(tiny_llama):
    g = tiny(tiny_llama)
    convs = [words(4), words(4)]
    g.context = len(g.prompt_ids(convs[0])) + 3
    sizes = spy_batches(g)
    handle = scripted_rows(g.model, [[]] * 2)
    replies = g.generate(convs)
    handle.remove()
    assert sizes == [2] and [r.output_tokens for r in replies] == [3, 3]


def test_cramped_prompts_of_different_lengths_and_none_with_room(tiny_llama):
    g = tiny(tiny_llama)
    convs = [words(2), words(4)]
    lengths = [len(g.prompt_ids(c)) for c in convs]
    g.context = lengths[1]  # the longer prompt fills the context: it still gets one token
    sizes = spy_batches(g)
    handle = scripted_rows(g.model, [[]])
    replies = g.generate(convs)
    handle.remove()
    assert sizes == [1, 1] and [r.output_tokens for r in replies] == [lengths[1] - lengths[0], 1]


def test_a_prompt_with_exactly_the_answers_room_beside_a_cramped_one(tiny_llama):
    """Room for exactly max_new_tokens is not cramped: that prompt is answered once, in full, and the
    streamer and step callback follow every batch of a split."""
    g = tiny(tiny_llama)
    convs = [words(1), words(4)]
    lengths = [len(g.prompt_ids(c)) for c in convs]
    g.context = lengths[0] + 4  # rooms: 4 (max_new_tokens) and 1
    assert g.context - lengths[1] == 1
    sizes = spy_batches(g)
    handle = scripted_rows(g.model, [[]])
    ends, steps = [], []
    streamer = SimpleNamespace(put=lambda value: None, end=lambda: ends.append(len(sizes)))
    replies = g.generate(convs, streamer=streamer, on_step=steps.append)
    handle.remove()
    assert sizes == [1, 1] and [r.output_tokens for r in replies] == [4, 1]
    assert [r.prompt_tokens for r in replies] == lengths
    assert ends == [1, 2] and steps == [0] * 5  # 4 steps of the first batch, 1 of the second


# ----------------------------------------------------------------- the plain format's stop string


def test_a_row_that_began_a_user_turn_stops_there_and_loses_its_padding(tiny_llama):
    g = tiny(tiny_llama, max_new_tokens=16)
    tok = g.tok
    answer = tok(ANSWER, add_special_tokens=False)["input_ids"]
    user = tok("\nUser:", add_special_tokens=False)["input_ids"]
    convs = [words(1), words(2)]
    handle = scripted_rows(g.model, [answer + user + [WORD] * 20, [WORD] * 20])
    batched = g.generate(convs)
    handle.remove()
    first = batched[0]
    # the stop string ends the row right after "User:"; the padding up to the other row's length is not output
    assert (first.text, first.finish_reason, first.output_ids) == (ANSWER, "stop", answer)
    assert first.output_tokens == len(answer + user)
    assert (batched[1].finish_reason, batched[1].output_tokens) == ("length", 16)
    handle = scripted_rows(g.model, [answer + user + [WORD] * 20])
    assert g.generate(convs[:1]) == [first]  # the same reply alone
    handle.remove()


def scripted_generate(g, tail):
    """model.generate replaced: every row gets `tail` after its prompt (no stop string or token checks)."""
    def fake(**kwargs):
        ids = kwargs["input_ids"]
        return torch.cat([ids, torch.tensor([tail]).expand(len(ids), -1)], dim=1)

    g.model.generate = fake


def test_a_user_turn_that_completes_on_the_last_allowed_token_is_a_stop(tiny_llama):
    g = tiny(tiny_llama)
    answer = g.tok(ANSWER, add_special_tokens=False)["input_ids"]
    user = g.tok("\nUser:", add_special_tokens=False)["input_ids"]
    g.dec = Decoding(max_new_tokens=len(answer + user))
    scripted_generate(g, answer + user)
    r = g.generate([words(1)])[0]
    assert (r.text, r.finish_reason, r.output_tokens, r.output_ids) == (ANSWER, "stop", len(answer + user), answer)


def test_a_user_turn_before_the_end_of_turn_token_is_cut_but_the_turn_ended(tiny_llama):
    g = tiny(tiny_llama)
    answer = g.tok(ANSWER, add_special_tokens=False)["input_ids"]
    user = g.tok("\nUser: and", add_special_tokens=False)["input_ids"]
    g.dec = Decoding(max_new_tokens=30)
    scripted_generate(g, answer + user + [g.fmt.eot_id, WORD])
    r = g.generate([words(1)])[0]
    assert (r.text, r.finish_reason, r.output_tokens, r.output_ids) == (ANSWER, "eot", len(answer + user), answer)


def test_user_turns_are_plain_text_in_a_chat_template(tiny_llama):
    lm = load_model(str(tiny_llama), dtype="float32")
    lm.tokenizer.chat_template = ("{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}<eos>{% endfor %}"
                                  "{% if add_generation_prompt %}<assistant>{% endif %}")
    fmt = TurnFormat(lm.tokenizer, TurnsConfig(format="template"), for_training=False)
    g = Generator(lm, fmt, Decoding(max_new_tokens=30))
    said = lm.tokenizer(ANSWER + "\nUser: and", add_special_tokens=False)["input_ids"]
    passed = {}

    def fake(**kwargs):
        passed.update(kwargs)
        ids = kwargs["input_ids"]
        return torch.cat([ids, torch.tensor([said + [fmt.eot_id]]).expand(len(ids), -1)], dim=1)

    g.model.generate = fake
    r = g.generate([[Message("user", "Hi?")]])[0]
    assert "stop_strings" not in passed
    assert (r.text, r.finish_reason, r.output_ids) == (ANSWER + "\nUser: and", "eot", said)


# ----------------------------------------------------------------- answer_prompts with a stand-in generator


class StandIn:
    """What answer_prompts uses of a generator (prompt_ids, generate, dec, context): one token per character."""

    def __init__(self, context=512, max_new_tokens=8, short=0):
        self.dec, self.context, self.short = Decoding(max_new_tokens=max_new_tokens), context, short
        self.batches, self.started = [], 0

    def prompt_ids(self, messages):
        return list(range(len(messages[-1].content)))

    def generate(self, conversations, *, on_step=None, encoded=None, streamer=None):
        self.batches.append([m[-1].content for m in conversations])
        assert encoded == [self.prompt_ids(m) for m in conversations]
        for step in range(1, 9):  # eight steps: the bar shows the step and the answers still running
            if on_step:
                on_step(0 if step < 8 else len(conversations) - 1)
        return [Reply("re: " + m[-1].content, "eot", len(e), 2, [5, 6])
                for m, e in zip(conversations, encoded)][self.short:]


def write_prompts(path, texts):
    path.write_text("".join(json.dumps({"id": f"p{i}", "messages": [{"role": "user", "content": t}]}) + "\n"
                            for i, t in enumerate(texts)))
    return path


TEXTS = ["a" * 9, "b" * 3, "c" * 7, "d" * 1, "e" * 5]


def test_prompts_are_answered_shortest_first_in_batches_of_step(tmp_path):
    out = tmp_path / "g.jsonl"
    g = GenerateConfig(prompts=str(write_prompts(tmp_path / "p.jsonl", TEXTS)), output=str(out))
    gen = StandIn()
    said = []
    assert answer_prompts(g, "runs/m1", lambda: gen, step=2, meta={"shots": 3}, log=said.append) == out
    assert gen.batches == [["d", "bbb"], ["eeeee", "ccccccc"], ["a" * 9]]
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["prompt_id"] for r in recs] == ["p3", "p1", "p4", "p2", "p0"]
    r = recs[0]
    assert (r["id"], r["model"], r["output"], r["finish_reason"], r["output_ids"]) == ("m1:p3", "runs/m1", "re: d",
                                                                                       "eot", [5, 6])
    assert r["tokens"] == {"prompt": 1, "output": 2} and r["meta"] == {"shots": 3} and said == []
    # a rerun answers nothing and starts no generator
    answer_prompts(g, "runs/m1", lambda: pytest.fail("started"), step=2, log=said.append)
    assert said == [f"{out}: all 5 prompts already answered"]


def test_limit_answers_the_first_prompts_only(tmp_path):
    out = tmp_path / "g.jsonl"
    g = GenerateConfig(prompts=str(write_prompts(tmp_path / "p.jsonl", TEXTS)), output=str(out), limit=2)
    gen = StandIn()
    answer_prompts(g, "m", lambda: gen, step=8)
    assert gen.batches == [["bbb", "a" * 9]]
    assert "meta" not in json.loads(out.read_text().splitlines()[0])


def test_a_generator_that_drops_answers_writes_nothing_of_that_batch(tmp_path):
    out = tmp_path / "g.jsonl"
    g = GenerateConfig(prompts=str(write_prompts(tmp_path / "p.jsonl", TEXTS)), output=str(out))
    with pytest.raises(ValueError):
        answer_prompts(g, "m", lambda: StandIn(short=1), step=8)
    assert not out.exists() or out.read_text() == ""


def test_a_prompt_over_the_context_is_refused_in_the_callers_words(tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", TEXTS)
    g = GenerateConfig(prompts=str(prompts), output=str(tmp_path / "g.jsonl"))
    with pytest.raises(LimaError) as e:
        answer_prompts(g, "m", lambda: StandIn(context=15), step=8)
    p = e.value.problems[0]
    assert p.where == str(prompts) and p.what.startswith("1 of 5 prompts do not fit: the longest ('p0') is 9 tokens,")
    assert p.fix == "shorten or leave out those prompts, or lower max_new_tokens (generate.max_new_tokens) to at most 6"
    with pytest.raises(LimaError) as e:
        answer_prompts(g, "m", lambda: StandIn(context=15), step=8, where="icl.prompts", added=" with the examples",
                       fix="use fewer examples")
    p = e.value.problems[0]
    assert p.where == "icl.prompts" and "is 9 tokens with the examples, plus" in p.what
    assert p.fix.startswith("use fewer examples, or lower")


def test_the_progress_bar_counts_prompts_done_before_and_now(tmp_path, capsys):
    out = tmp_path / "g.jsonl"
    out.write_text(json.dumps({"prompt_id": "p0", "model": "runs/m1"}) + "\n")
    g = GenerateConfig(prompts=str(write_prompts(tmp_path / "p.jsonl", TEXTS)), output=str(out))
    answer_prompts(g, "runs/m1", lambda: StandIn(), step=3)
    err = capsys.readouterr().err
    shown = [int(n) for n in re.findall(r"\| (\d)/5 \[", err)]
    assert [n for i, n in enumerate(shown) if i == 0 or n != shown[i - 1]] == [1, 3, 4, 5]  # one answered before
    assert err.lstrip("\r").startswith("generate m1: ") and "prompt/s" in err
    assert "token 8, 1 answers running" in err  # the running batch's step, cleared once its answers are written
    assert err.rstrip().endswith("prompt/s]")


def test_batch_progress_moves_the_bar_as_answers_finish():
    shown = []
    bar = SimpleNamespace(n=10, refresh=lambda: shown.append(bar.n),
                          set_postfix_str=lambda s, refresh=True: shown.append((s, refresh)))
    step = batch_progress(bar, 3)
    for finished in [0, 1, 1, 2, 2, 2, 2, 2, 3]:
        step(finished)
    assert shown == [10, 11, 11, 12, 12, 12, 12, ("token 8, 1 answers running", False), 12, 13]


# ----------------------------------------------------------------- generate_file: labels, backends, batches


def test_the_label_is_the_configured_one_else_the_loaded_models_path(tiny_llama, tmp_path):
    prompts = write_prompts(tmp_path / "p.jsonl", ["Hi?", "Bye?", "Why?"])
    g = tiny(tiny_llama)
    sizes = spy_batches(g)
    handle = scripted_rows(g.model, [[g.fmt.eot_id]] * 2)
    lm_fmt = (g.lm, g.fmt)
    cfg = GenerateConfig(prompts=str(prompts), output=str(tmp_path / "a.jsonl"), max_new_tokens=4, batch_size=2)
    generate_file(ModelConfig(name="not/loaded/again"), TurnsConfig(), cfg, lm_fmt=lm_fmt, log=print)
    assert sizes == [2, 1]
    assert {json.loads(x)["model"] for x in (tmp_path / "a.jsonl").read_text().splitlines()} == {str(tiny_llama)}
    cfg = GenerateConfig(prompts=str(prompts), output=str(tmp_path / "b.jsonl"), model_label="mine", limit=1,
                         max_new_tokens=4)
    generate_file(ModelConfig(name="not/loaded/again"), TurnsConfig(), cfg, lm_fmt=lm_fmt, log=print)
    handle.remove()
    assert json.loads((tmp_path / "b.jsonl").read_text())["model"] == "mine"


def test_the_static_cache_setting_reaches_the_model(tiny_llama, tmp_path):
    g = tiny(tiny_llama)
    seen = []
    real = g.lm.model.generate
    g.lm.model.generate = lambda **kw: seen.append(kw.get("cache_implementation")) or real(**kw)
    handle = scripted_rows(g.lm.model, [[g.fmt.eot_id]])
    for cache in ("static", "dynamic"):
        cfg = GenerateConfig(prompts=str(write_prompts(tmp_path / "p.jsonl", ["Hi?"])), max_new_tokens=2,
                             output=str(tmp_path / f"{cache}.jsonl"), cache=cache)
        generate_file(ModelConfig(name=str(tiny_llama)), TurnsConfig(), cfg, lm_fmt=(g.lm, g.fmt), log=print)
    handle.remove()
    assert seen == ["static", None]


def test_the_vllm_backend_writes_in_chunks_of_1024_prompts_or_a_larger_batch(tiny_llama, tmp_path, monkeypatch):
    import lima_align.vllm_backend as vllm_backend

    gen = StandIn()
    monkeypatch.setattr(vllm_backend, "load_generator", lambda *a: (gen, "ignored"))
    prompts = write_prompts(tmp_path / "p.jsonl", ["x" * (1 + i % 5) for i in range(1030)])
    out = tmp_path / "g.jsonl"
    cfg = GenerateConfig(prompts=str(prompts), output=str(out), backend="vllm", batch_size=8)
    generate_file(ModelConfig(name=str(tiny_llama)), TurnsConfig(), cfg, lm_fmt=("unused", "unused"), log=print)
    assert [len(b) for b in gen.batches] == [1024, 6]
    assert json.loads(out.read_text().splitlines()[0])["model"] == str(tiny_llama)  # the folder vLLM loads
    gen.batches.clear()
    cfg.output, cfg.batch_size = str(tmp_path / "h.jsonl"), 1029
    generate_file(ModelConfig(name=str(tiny_llama)), TurnsConfig(), cfg, log=print)
    assert [len(b) for b in gen.batches] == [1029, 1]


def test_the_embedded_models_label_is_its_prepared_folder_in_the_cache(tmp_path, monkeypatch):
    from lima_align.models import EMBEDDED, embedded_path

    folder = embedded_path(str(tmp_path / "cache"))
    monkeypatch.setenv("LIMA_ALIGN_CACHE", str(tmp_path / "default"))  # where it is without cache_dir
    for f in (folder, embedded_path()):
        f.mkdir(parents=True)
        (f / "lima_align_model.json").write_text("{}")
    out = tmp_path / "g.jsonl"
    out.write_text(json.dumps({"prompt_id": "p0", "model": str(folder)}) + "\n")
    monkeypatch.setattr(generate, "load_for_generation", lambda *a: pytest.fail("the model was loaded"))
    said = []
    cfg = GenerateConfig(prompts=str(write_prompts(tmp_path / "p.jsonl", ["Hi?"])), output=str(out))
    generate_file(ModelConfig(name=EMBEDDED, cache_dir=str(tmp_path / "cache")), TurnsConfig(), cfg, log=said.append)
    assert said == [f"{out}: all 1 prompts already answered"]


# ----------------------------------------------------------------- check_context


def test_check_context_boundaries_and_words():
    check_context({"a": 10, "b": 12}, 500, 512, where="w")  # 12 + 500 = 512 fits exactly
    with pytest.raises(LimaError) as e:
        check_context({"a": 13, "b": 520, "c": 12, "d": 514}, 500, 512, where="w", added=" with 2 shots", fix="fix it")
    p = e.value.problems[0]
    assert p.where == "w"
    assert p.what == ("3 of 4 prompts do not fit: the longest ('b') is 520 tokens with 2 shots, plus max_new_tokens "
                      "500 makes 1020, more than the model's context of 512 tokens")
    assert p.fix == "fix it, the prompt alone fills the context, so fewer answer tokens cannot help"
    with pytest.raises(LimaError) as e:
        check_context({"a": 512}, 1, 512, where="w")
    assert e.value.problems[0].fix.endswith(", the prompt alone fills the context, so fewer answer tokens cannot help")
    with pytest.raises(LimaError) as e:
        check_context({"a": 511}, 2, 512, where="w")
    assert e.value.problems[0].what == ("1 of 1 prompts do not fit: the longest ('a') is 511 tokens, plus "
                                        "max_new_tokens 2 makes 513, more than the model's context of 512 tokens")
    assert e.value.problems[0].fix == ("shorten or leave out those prompts, or lower max_new_tokens "
                                       "(generate.max_new_tokens) to at most 1")


# ----------------------------------------------------------------- chat


def chat_with(tiny_llama, monkeypatch, lines, **g):
    """chat() on the tiny model whose every answer ends at once (an empty reply); what it printed."""
    real = generate.load_for_generation

    def loading(*a):
        lm, fmt = real(*a)
        scripted_rows(lm.model, [[]], then=fmt.eot_id)
        return lm, fmt

    monkeypatch.setattr(generate, "load_for_generation", loading)
    lines, printed = iter(lines), []
    history = chat(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(), GenerateConfig(**g),
                   input_fn=lambda _: next(lines), print_fn=printed.append)
    return history, printed


def test_chat_skips_blank_lines_and_exit_leaves(tiny_llama, monkeypatch):
    history, printed = chat_with(tiny_llama, monkeypatch, ["  ", "Hello?", "", "/exit", "Never read"])
    assert history == [Message("user", "Hello?"), Message("assistant", "")]
    assert printed[0].startswith(f"chatting with {tiny_llama} (turn format 'plain'; end of turn = '<eos>'")
    assert printed[0].endswith(")\n/reset clears the history, /quit leaves") and printed[1:] == ["assistant> "]


def test_chat_keeps_a_quarter_of_the_context_for_a_long_answer(tiny_llama, monkeypatch):
    g = tiny(tiny_llama)
    first = [Message("user", "Hi?"), Message("assistant", "")]
    n = next(n for n in range(600) if len(g.prompt_ids(first + words(n))) == 512 - 128)
    long = "Hi" + " the" * n
    history, printed = chat_with(tiny_llama, monkeypatch, ["Hi?", long, "/quit"], max_new_tokens=400)
    assert len(history) == 4 and not any("context full" in p for p in printed)  # 128 tokens left: it fits
    history, printed = chat_with(tiny_llama, monkeypatch, ["Hi?", long + " the", "/quit"], max_new_tokens=400)
    assert history[0].content == long + " the" and "(context full: dropped the oldest 2 turns)" in printed
    # with a short max_new_tokens only that much is kept free
    history, printed = chat_with(tiny_llama, monkeypatch, ["Hi?", long + " the" * 20, "/quit"], max_new_tokens=101)
    assert len(history) == 4 and not any("context full" in p for p in printed)
    history, printed = chat_with(tiny_llama, monkeypatch, ["Hi?", long + " the" * 20, "/quit"], max_new_tokens=129)
    assert "(context full: dropped the oldest 2 turns)" in printed


def test_chat_in_a_terminal_streams_the_answer(tiny_llama, monkeypatch, capsys):
    lines = iter(["Hello?"])

    def typed(prompt):
        print(prompt, end="")
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    monkeypatch.setattr(builtins, "input", typed)
    real = generate.load_for_generation

    def loading(*a):
        lm, fmt = real(*a)
        scripted_rows(lm.model, [lm.tokenizer(" Rome", add_special_tokens=False)["input_ids"]], then=fmt.eot_id)
        return lm, fmt

    monkeypatch.setattr(generate, "load_for_generation", loading)
    printed = []
    history = chat(ModelConfig(name=str(tiny_llama), dtype="float32"), TurnsConfig(), GenerateConfig(max_new_tokens=8),
                   print_fn=printed.append)
    out = capsys.readouterr().out
    assert history == [Message("user", "Hello?"), Message("assistant", "Rome")]
    # the answer's tokens, not the prompt's or the end-of-turn token, right after the label; nothing via print_fn
    assert out == "you> assistant>  Rome\nyou> " and len(printed) == 1


def test_a_prompts_file_ending_in_an_assistant_turn_is_refused_before_starting(tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"id": "p0", "messages": [{"role": "user", "content": "Hi?"},
                                                            {"role": "assistant", "content": "Hello."}]}) + "\n")
    g = GenerateConfig(prompts=str(prompts), output=str(tmp_path / "g.jsonl"))
    with pytest.raises(LimaError) as e:
        answer_prompts(g, "m", lambda: pytest.fail("started"), step=8)
    assert "a prompt must end with a user turn" in str(e.value)


# ----------------------------------------------------------------- trim_history


def counting_gen(tiny_llama, context):
    """What trimming uses of a Generator (tok, prompt_ids, context), counting the prompts it renders."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), for_training=False)
    g = SimpleNamespace(tok=tok, context=context, renders=0)

    def prompt_ids(messages):
        g.renders += 1
        return fmt.encode_prompt(messages)

    g.prompt_ids = prompt_ids
    return g


def history(turns, system=False):
    sizes = [1, 3, 8, 2, 12, 5]
    msgs = [Message("user" if i % 2 == 0 else "assistant", f"turn {i}" + " egg" * sizes[i % 6]) for i in range(turns)]
    return ([Message("system", "Be brief.")] if system else []) + msgs


def test_a_history_that_fits_is_kept_whatever_its_roles(tiny_llama):
    g = counting_gen(tiny_llama, 10_000)
    odd = [Message("user", "Hi?"), Message("system", "Be brief."), Message("user", "Bye?")]
    assert generate.trim_history(g, odd, reserve=0) == (odd, 0)


def test_a_history_ending_in_an_assistant_turn_that_cannot_fit_is_dropped_whole(tiny_llama):
    # turns go two at a time, so an even number of turns can lose them all (as dropping pairs one by one did)
    msgs = history(4, system=True)
    g = counting_gen(tiny_llama, len(counting_gen(tiny_llama, 0).prompt_ids(msgs[:1] + msgs[3:])) - 1)
    assert generate.trim_history(g, msgs, reserve=0) == (msgs[:1], 4)
    g.context += 1  # the last exchange fits
    assert generate.trim_history(g, msgs, reserve=0) == (msgs[:1] + msgs[3:], 2)


@pytest.mark.parametrize("keep,renders", [(3, 4), (41, 7), (3001, 12)])  # measured: 2, 5 and 10 renders
def test_a_long_history_is_trimmed_with_a_handful_of_renders(tiny_llama, keep, renders):
    """Rendering 4,001 turns again for every dropped pair took minutes: turns are counted newest first and only
    the few drops a lower bound on the kept part's length leaves open are bisected on the rendered prompt."""
    msgs = history(4001, system=True)
    g = counting_gen(tiny_llama, 0)
    g.context = len(g.prompt_ids(msgs[:1] + msgs[-keep:]))  # exactly the newest `keep` turns fit
    g.renders = 0
    kept, dropped = generate.trim_history(g, msgs, reserve=0)
    assert (kept, dropped) == (msgs[:1] + msgs[-keep:], 4001 - keep)
    assert g.renders <= renders


def test_chat_keeps_whole_tokens_free_and_prints_only_through_print_fn(tiny_llama, monkeypatch, capsys):
    real = generate.load_for_generation

    def loading(*a):  # a context that is no multiple of 4: a quarter of it is 127 tokens, not 127.5
        lm, fmt = real(*a)
        lm.model.config.max_position_embeddings = 510
        return lm, fmt

    monkeypatch.setattr(generate, "load_for_generation", loading)
    g = tiny(tiny_llama)
    first = [Message("user", "Hi?"), Message("assistant", "")]
    n = next(n for n in range(600) if len(g.prompt_ids(first + words(n))) == 510 - 127)
    history, printed = chat_with(tiny_llama, monkeypatch, ["Hi?", "Hi" + " the" * n, "/quit"], max_new_tokens=400)
    assert len(history) == 4 and not any("context full" in p for p in printed)
    assert capsys.readouterr().out == ""  # not a terminal: nothing streamed to stdout


# ----------------------------------------------------------------- what reaches transformers' generate


def raw_new_tokens(g, conversations):
    """(replies, how many tokens generate() produced per row, end markers and padding included)."""
    seen = []
    real = g.model.generate

    def spy(**kwargs):
        out = real(**kwargs)
        seen.append(out.shape[1] - kwargs["input_ids"].shape[1])
        return out

    g.model.generate = spy
    try:
        return g.generate(conversations), seen
    finally:
        g.model.generate = real


def test_generation_stops_at_our_end_of_turn_when_the_model_names_no_eos(tiny_llama):
    g = tiny(tiny_llama, max_new_tokens=8)
    g.model.generation_config.eos_token_id = None
    handle = scripted_rows(g.model, [[WORD, WORD, g.fmt.eot_id]])
    replies, produced = raw_new_tokens(g, [words(1)])
    handle.remove()
    assert (replies[0].finish_reason, replies[0].output_tokens, produced) == ("eot", 2, [3])


def test_rows_are_padded_with_our_pad_token_when_the_model_names_none(tiny_llama):
    """A row that began a user turn is padded to its batch's length; padded with EOS (transformers' fallback)
    it would read as an end of turn."""
    g = tiny(tiny_llama, max_new_tokens=16)
    g.model.generation_config.pad_token_id = None
    answer = g.tok(ANSWER, add_special_tokens=False)["input_ids"]
    user = g.tok("\nUser:", add_special_tokens=False)["input_ids"]
    handle = scripted_rows(g.model, [answer + user + [WORD] * 20, [WORD] * 20])
    first = g.generate([words(1), words(2)])[0]
    handle.remove()
    assert (first.text, first.finish_reason, first.output_tokens) == (ANSWER, "stop", len(answer + user))


def test_the_step_callback_counts_rows_that_ended_their_turn(tiny_llama):
    g = tiny(tiny_llama, max_new_tokens=4)
    handle = scripted_rows(g.model, [[WORD, g.fmt.eot_id], [WORD] * 4])
    seen = []
    g.generate([words(1), words(2)], on_step=seen.append)
    handle.remove()
    assert seen == [0, 0, 1, 1]


def test_a_tokenizer_without_a_pad_token_still_batches_without_changing_answers(tiny_llama, monkeypatch):
    """The pad token is then EOS, which every user turn of the prompt ends with: only the attention mask tells
    padding from the prompt."""
    real = generate.load_model

    def no_pad(name, **kw):
        lm = real(name, **kw)
        lm.tokenizer.pad_token = None
        return lm

    monkeypatch.setattr(generate, "load_model", no_pad)
    g = tiny(tiny_llama, max_new_tokens=6, temperature=0.0)
    assert g.tok.pad_token_id == g.fmt.eot_id
    convs = [words(1), words(7), [Message("user", "What is the capital of Italy?")]]
    alone = [g.generate([c])[0] for c in convs]
    assert g.generate(convs) == alone


class OnAnotherDevice:
    """A model on the "meta" device: generate() records where its inputs are and answers with fixed ids."""

    def __init__(self, tail):
        self.config, self.device, self.tail, self.devices = SimpleNamespace(max_position_embeddings=512), \
            torch.device("meta"), tail, []

    def eval(self):
        return self

    def generate(self, *, input_ids, attention_mask, **kwargs):
        self.devices.append((input_ids.device.type, attention_mask.device.type))
        rows, width = input_ids.shape
        return torch.cat([torch.zeros(rows, width, dtype=torch.long), torch.tensor([self.tail] * rows)], dim=1)


def test_the_prompt_and_its_mask_are_moved_to_the_models_device(tiny_llama):
    base = tiny(tiny_llama)
    answer = base.tok(ANSWER, add_special_tokens=False)["input_ids"]
    model = OnAnotherDevice(answer + [base.fmt.eot_id])
    g = Generator(SimpleNamespace(model=model, tokenizer=base.tok), base.fmt, Decoding(max_new_tokens=16))
    r = g.generate([words(1)])[0]
    assert model.devices == [("meta", "meta")] and (r.text, r.finish_reason) == (ANSWER, "eot")


def test_an_answer_that_begins_with_a_user_turn_is_empty(tiny_llama):
    # the prompt ends with "Assistant:\n", so "User:" right away starts the next turn: nothing was answered
    g = tiny(tiny_llama, max_new_tokens=16)
    user = g.tok("User:", add_special_tokens=False)["input_ids"]
    handle = scripted_rows(g.model, [user + [WORD] * 20])
    r = g.generate([words(1)])[0]
    handle.remove()
    assert (r.text, r.finish_reason, r.output_tokens, r.output_ids) == ("", "stop", len(user), [])
