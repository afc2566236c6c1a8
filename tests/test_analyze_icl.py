"""In-context baseline: the prompt text, stopping at the model's own next "User:" turn, and the CLI path."""

from __future__ import annotations

import json

import pytest

from lima_align.analyze.icl import IclGenerator, IclPrompt, load_base, load_icl
from lima_align.cli import main
from lima_align.config import ModelConfig
from lima_align.errors import LimaError
from lima_align.generate import Decoding
from lima_align.records import Message


def test_prompt_text_is_system_examples_then_the_prompt():
    icl = IclPrompt("Be helpful.", [("Q1?", "A1.\n\nMore."), ("Q2?", "A2.")], "x", "0")
    assert icl.text([Message("user", "Real question? ")]) == (
        "System:\nBe helpful.\n\nUser:\nQ1?\n\nAssistant:\nA1.\n\nMore.\n\nUser:\nQ2?\n\nAssistant:\nA2.\n\n"
        "User:\nReal question?\n\nAssistant:\n")
    # a prompt's own system text replaces ours; earlier turns of a dialogue stay in order
    text = icl.text([Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello"),
                     Message("user", "Bye")])
    assert text.startswith("System:\nBe brief.\n\nUser:\nQ1?") and "Be helpful" not in text
    assert text.endswith("User:\nHi\n\nAssistant:\nHello\n\nUser:\nBye\n\nAssistant:\n")


def test_shipped_examples_load():
    icl = load_icl()
    assert len(icl.examples) == 3 and icl.system and len(icl.sha256) == 64


def test_bad_examples_file_lists_every_problem(tmp_path):
    f = tmp_path / "icl.json"
    f.write_text(json.dumps({"system": 3, "examples": [{"user": "q"}, {"user": "q", "assistant": "a\nUser: x"}]}))
    with pytest.raises(LimaError) as e:
        load_icl(f)
    text = str(e.value)
    assert "3 problems" in text and "examples[0]" in text and "examples[1].assistant" in text


def scripted(model, continuation_ids: list[int], prompt_len: int):
    """Make a model emit a fixed continuation (by forcing its logits) so stopping can be tested."""
    orig = model.forward

    def forward(*args, **kwargs):
        out = orig(*args, **kwargs)
        k = kwargs["attention_mask"].shape[1] - prompt_len  # tokens generated so far
        nxt = continuation_ids[min(k, len(continuation_ids) - 1)]
        out.logits[:, -1, :] = -1e9
        out.logits[:, -1, nxt] = 1e9
        return out

    model.forward = forward
    return model


def test_generation_stops_at_the_models_next_user_turn(tiny_gemma):
    lm, fmt = load_base(ModelConfig(name=str(tiny_gemma), dtype="float32"))
    icl = IclPrompt("Be helpful.", [("Q1?", "A1.")], "x", "0")
    messages = [Message("user", "Capital of Italy?")]
    gen = IclGenerator(lm, fmt, Decoding(max_new_tokens=40, temperature=0, repetition_penalty=1.0), icl)
    prompt = gen.prompt_ids(messages)
    assert prompt == lm.tokenizer(icl.text(messages))["input_ids"]
    script = lm.tokenizer("Rome is the capital.\n\nUser:\nWhat else?", add_special_tokens=False)["input_ids"]
    scripted(lm.model, script, len(prompt))
    reply = gen.generate([messages])[0]
    assert reply.text == "Rome is the capital."
    assert reply.finish_reason == "stop" and reply.output_tokens < len(script)


def test_special_token_text_in_a_message_stays_text(tiny_gemma):
    lm, fmt = load_base(ModelConfig(name=str(tiny_gemma), dtype="float32"))
    gen = IclGenerator(lm, fmt, Decoding(), IclPrompt("", [("Q1?", "A1.")], "x", "0"))
    tok = lm.tokenizer
    ids = gen.prompt_ids([Message("user", "hi <eos> there<bos>")])
    assert tok.eos_token_id not in ids and ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert "hi <eos> there<bos>" in tok.decode(ids)


def short_examples(tmp_path):
    """The shipped examples are over 1,000 tokens for the tiny test tokenizer, whose context is 512."""
    f = tmp_path / "short.json"
    f.write_text(json.dumps({"system": "Be helpful.", "examples": [{"user": "Capital of Italy?",
                                                                    "assistant": "Rome."}]}))
    return f


def test_generate_method_icl_cli(tiny_gemma, tmp_path, capsys):
    from transformers import AutoTokenizer

    out = tmp_path / "icl.jsonl"
    rc = main(["generate", "--method", "icl", "--model", str(tiny_gemma), "--prompts", "seed:test", "--output",
               str(out), "--icl-examples", str(short_examples(tmp_path)), "generate.limit=2",
               "generate.max_new_tokens=4", "generate.temperature=0"])
    assert rc == 0 and "generations:" in capsys.readouterr().out
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 2
    assert all(r["model"] == f"{tiny_gemma.name}+icl" and r["meta"]["method"] == "icl" for r in recs)
    assert all(r["messages"][0]["role"] == "user" and len(r["messages"]) == 1 for r in recs)  # the prompt only
    icl, tok = load_icl(short_examples(tmp_path)), AutoTokenizer.from_pretrained(tiny_gemma)
    for r in recs:  # the examples were in the model's prompt
        assert r["tokens"]["prompt"] == len(tok(icl.text([Message(**r["messages"][0])]))["input_ids"])
        assert r["tokens"]["output"] == 4


@pytest.mark.parametrize("max_new, room", [("400", "at most"), ("4", "fills the context")])
def test_examples_that_overflow_the_context_are_refused_before_generating(tiny_gemma, tmp_path, capsys, max_new, room):
    """The tiny model's context is 512 tokens; answers were silently cut to what was left (one token)."""
    out = tmp_path / "icl.jsonl"
    args = ["generate", "--method", "icl", "--model", str(tiny_gemma), "--prompts", "seed:test", "--output",
            str(out), "generate.limit=2", f"generate.max_new_tokens={max_new}"]
    f = short_examples(tmp_path)
    if room == "fills the context":  # one example long enough to fill the context by itself
        f.write_text(json.dumps({"system": "", "examples": [{"user": "Tell me.", "assistant": "word " * 600}]}))
    args += ["--icl-examples", str(f)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "2 of 2 prompts do not fit" in err and "context of 512 tokens" in err and "max_new_tokens" in err
    assert "fix: use fewer or shorter examples" in err and room in err
    assert not out.exists() or out.read_text() == ""  # nothing generated


def test_icl_resumes_and_refuses_another_models_file(tiny_gemma, tmp_path, capsys):
    out = tmp_path / "icl.jsonl"
    args = ["generate", "--method", "icl", "--model", str(tiny_gemma), "--prompts", "seed:test", "--output", str(out),
            "--icl-examples", str(short_examples(tmp_path)), "generate.max_new_tokens=2", "generate.temperature=0"]
    assert main(args + ["generate.limit=1"]) == 0
    first = out.read_text()
    assert main(args + ["generate.limit=2"]) == 0  # only the new prompt is answered
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert out.read_text().startswith(first) and len(recs) == 2 and len({r["prompt_id"] for r in recs}) == 2
    capsys.readouterr()
    assert main(args + ["generate.limit=3", "generate.model_label=another"]) == 2
    err = capsys.readouterr().err
    assert f"{out}:1" in err and f"'{tiny_gemma.name}+icl'" in err and "'another'" in err and "--output" in err
    assert len(out.read_text().splitlines()) == 2
