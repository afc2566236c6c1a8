"""Token distribution shift: ranks against a hand-worked example, the summary, and end to end on a tiny model."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from lima_align.analyze.shift import (ShiftSources, analyze_shift, rank_class, records_path, same_vocabulary,
                                      summarize_shift, token_ranks)
from lima_align.cli import main
from lima_align.errors import LimaError


class Bigram(torch.nn.Module):
    """A stub LM whose next-token logits depend only on the current token: row `t` of a fixed table."""

    def __init__(self, table: list[list[float]]):
        super().__init__()
        self.table = torch.nn.Parameter(torch.tensor(table), requires_grad=False)

    def forward(self, input_ids, attention_mask=None, logits_to_keep=0):
        logits = self.table[input_ids]
        return SimpleNamespace(logits=logits[:, -logits_to_keep:] if logits_to_keep else logits)


TABLE = [[0.0, 3.0, 1.0, 3.0, 2.0],   # after token 0: tokens 1 and 3 tie for the top
         [5.0, 1.0, 1.0, 0.0, -1.0],  # after 1
         [0.5, 0.5, 0.5, 0.5, 0.5],   # after 2: everything tied
         [1.0, 2.0, 3.0, 4.0, 5.0],   # after 3
         [4.0, 3.0, 2.0, 1.0, 0.0]]   # after 4

# Worked by hand, rank = 1 + number of strictly higher logits:
#  context [0], answer [3, 0, 2, 1]:
#    after 0 -> 3: logit 3, none higher (tie with 1)      rank 1
#    after 3 -> 0: logit 1, four higher                    rank 5
#    after 0 -> 2: logit 1, higher 3, 3, 2                 rank 4
#    after 2 -> 1: all tied                                rank 1
#  context [1, 4], answer [1, 2]:
#    after 4 -> 1: logit 3, higher 4                       rank 2
#    after 1 -> 2: logit 1, higher 5 (tie with token 1)    rank 2
#  context [3], answer [2]: after 3 -> 2: logit 3, higher 4, 5   rank 3
PAIRS = [([0], [3, 0, 2, 1]), ([1, 4], [1, 2]), ([3], [2])]
RANKS = [[1, 5, 4, 1], [2, 2], [3]]
TOPS = [[1, 4, 1, 0], [0, 0], [4]]  # argmax: the first of tied maxima


@pytest.mark.parametrize("batch_tokens", [1, 6, 1000])
def test_ranks_match_the_hand_worked_example(batch_tokens):
    got = token_ranks(Bigram(TABLE), PAIRS, batch_tokens=batch_tokens)
    assert [r for r, _ in got] == RANKS
    assert [t for _, t in got] == TOPS


def test_rank_classes_follow_lin_et_al():
    assert [rank_class(r) for r in (1, 2, 3, 4, 50)] == ["unshifted", "marginal", "marginal", "shifted", "shifted"]


def test_empty_answer_has_no_ranks():
    assert token_ranks(Bigram(TABLE), [([0], []), ([3], [2])]) == [([], []), ([3], [4])]


def test_summary_shares_positions_and_top_tokens():
    recs = [{"prompt_id": "p1", "ranks": RANKS[0], "tokens": ["a", "b", "c", "d"], "base_top": ["x"] * 4},
            {"prompt_id": "p2", "ranks": RANKS[1], "tokens": ["a", "b"], "base_top": ["y"] * 2},
            {"prompt_id": "p3", "ranks": RANKS[2], "tokens": ["c"], "base_top": ["z"]}]
    s = summarize_shift(recs, ShiftSources("base", "aligned"), n_bins=2, n_boot=200)
    assert s["kind"] == "shift" and s["tokens"] == 7 and s["answers"] == 3
    assert s["counts"] == {"unshifted": 2, "marginal": 3, "shifted": 2}
    assert s["shares"]["shifted"]["value"] == pytest.approx(2 / 7)
    lo, hi = s["shares"]["shifted"]["ci"]
    assert 0 <= lo <= 2 / 7 <= hi <= 1
    # first half: p1 "a","b" (1, 5), p2 "a" (2), p3 "c" (3); second half: p1 "c","d" (4, 1), p2 "b" (2)
    first, second = s["by_position"]
    assert first["tokens"] == 4 and first["shifted"] == pytest.approx(1 / 4)
    assert second["tokens"] == 3 and second["unshifted"] == pytest.approx(1 / 3)
    assert [t["token"] for t in s["top_shifted"]] == ["b", "c"]  # ties broken by occurrences, then text
    assert s["top_shifted"][0]["examples"][0] == {"prompt_id": "p1", "before": "a", "base_top": "x", "rank": 5}


def test_different_tokenizers_are_refused():
    a = SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1})
    b = SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 2})
    same_vocabulary(a, SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1, "<eot>": 2}))  # added tokens are fine
    with pytest.raises(LimaError, match="different tokenizers"):
        same_vocabulary(a, b)


# ----------------------------------------------------------------- tiny model, end to end


def _tiny(path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def test_base_equals_aligned_greedy_answers_are_all_unshifted(tiny_gemma):
    """A model's own greedy continuations are its rank-1 tokens, whatever the batching and padding."""
    model, tok = _tiny(tiny_gemma)
    pairs = []
    for text in ("How do I boil an egg?", "Write a poem about the sea. Waves fold", "Rome"):
        ctx = tok(text)["input_ids"]
        out = model.generate(torch.tensor([ctx]), max_new_tokens=12, do_sample=False, eos_token_id=None,
                             pad_token_id=tok.pad_token_id)
        pairs.append((ctx, out[0, len(ctx):].tolist()))
    got = token_ranks(model, pairs, pad_id=tok.pad_token_id, batch_tokens=10_000)
    assert all(a and r == [1] * len(a) for (r, _), (_, a) in zip(got, pairs, strict=True))
    assert [t for _, t in got] == [a for _, a in pairs]


def _generations(path, outputs):
    recs = [{"id": f"m:p{i}", "prompt_id": f"p{i}", "model": "m", "messages": [{"role": "user", "content": q}],
             "output": a, "finish_reason": "eot", "tokens": None, "decoding": {}, "created": 0.0}
            for i, (q, a) in enumerate(outputs)]
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def test_shift_end_to_end_matches_an_unbatched_pass_and_resumes(tiny_gemma, tmp_path):
    from lima_align.config import TurnsConfig
    from lima_align.records import Message
    from lima_align.turns import TurnFormat

    gens = _generations(tmp_path / "gens.jsonl", [("How do I boil an egg?", "Put it in boiling water."),
                                                   ("What is the capital of Italy?", "Rome is the capital."),
                                                   ("Say hello.", 'print("hello")')])
    out = analyze_shift(str(tiny_gemma), tmp_path / "shift.json", generations=gens, batch_tokens=40, n_boot=50,
                        log=lambda *_: None)
    s = json.loads(out.read_text())
    recs = [json.loads(line) for line in records_path(out).read_text().splitlines()]
    assert len(recs) == 3 and s["answers"] == 3
    assert sum(s["counts"].values()) == s["tokens"] == sum(len(r["ranks"]) for r in recs)
    assert sum(v["value"] for v in s["shares"].values()) == pytest.approx(1.0)

    model, tok = _tiny(tiny_gemma)  # independent check: one full forward per answer, no padding
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), for_training=False)
    for r, line in zip(recs, gens.read_text().splitlines(), strict=True):
        g = json.loads(line)
        ctx = fmt.encode_prompt([Message("user", g["messages"][0]["content"])])
        ans = tok(g["output"], add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ctx + ans])).logits[0]
        want = [int((logits[len(ctx) - 1 + i] > logits[len(ctx) - 1 + i, t]).sum()) + 1 for i, t in enumerate(ans)]
        assert r["ranks"] == want
        assert "".join(r["tokens"]) == g["output"]

    analyze_shift(str(tiny_gemma), out, generations=gens, n_boot=50, log=lambda *_: None)  # rerun: nothing new
    assert len(records_path(out).read_text().splitlines()) == 3
    # another answers file into the same output: its summary covers only its own answers
    other = _generations(tmp_path / "other.jsonl", [("Describe the fox.", "The quick brown fox.")])
    s2 = json.loads(analyze_shift(str(tiny_gemma), out, generations=other, n_boot=50, log=lambda *_: None).read_text())
    assert s2["answers"] == 1 and len(records_path(out).read_text().splitlines()) == 4  # same id, new answer


def test_shift_cli_with_an_aligned_model_generating(tiny_gemma, tmp_path, capsys):
    out = tmp_path / "shift.json"
    rc = main(["analyze", "shift", "--base", str(tiny_gemma), "--aligned-model", str(tiny_gemma), "--prompts",
               "seed:test", "--limit", "2", "--max-new-tokens", "6", "--n-boot", "50", "--output", str(out)])
    assert rc == 0
    s = json.loads(out.read_text())
    assert s["answers"] == 2 and s["aligned"] == str(tiny_gemma)
    assert (tmp_path / "shift.generations.jsonl").exists()
    assert "unshifted" in capsys.readouterr().out


def test_shift_cli_needs_answers(tmp_path, capsys):
    assert main(["analyze", "shift", "--base", "embedded", "--output", str(tmp_path / "s.json")]) == 2
    assert "nothing to analyse" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value, rng", [("--temperature", "nan", "in [0, 2]"), ("--temperature", "3", "in [0, 2]"),
                                              ("--repetition-penalty", "nan", "> 0"), ("--max-new-tokens", "0", "> 0")])
def test_shift_decoding_flags_take_the_recipes_ranges(tmp_path, capsys, flag, value, rng):
    """argparse only checks a flag's type, so NaN passed; the flags now accept what generate.* accepts."""
    out = tmp_path / "s.json"
    missing = str(tmp_path / "no-model")  # were the flag let through, this fails fast instead of loading a model
    assert main(["analyze", "shift", "--base", missing, "--aligned-model", missing, "--output", str(out),
                 flag, value]) == 2
    err = capsys.readouterr().err
    assert f"{flag}: must be a number {rng}, got" in err and "generate." in err
    assert not out.exists()


def test_aligned_format_is_read_from_the_checkpoint_without_loading_weights(tiny_gemma, tmp_path):
    import shutil

    from lima_align.analyze.shift import aligned_format

    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_gemma, ckpt)
    (ckpt / "lima_align_checkpoint.json").write_text(json.dumps(
        {"base_model": str(tiny_gemma), "turns": {"format": "plain", "eot": "<bos>", "system": "Be kind."}}))
    fmt = aligned_format(str(ckpt), None)
    assert fmt.kind == "plain" and fmt.eot_id == fmt.tok.bos_token_id and fmt.system == "Be kind."
    plain = aligned_format(str(tiny_gemma), None)  # not ours: EOS ends a turn
    assert plain.eot_id == plain.tok.eos_token_id


# ----------------------------------------------------------------- generated ids and extended vocabularies


def test_the_generated_ids_are_ranked_not_the_text_tokenised_again(tiny_gemma, tmp_path):
    """"hello" generated one byte at a time is five tokens; tokenised again it is fewer, so ranking the
    text would rank tokens the model never produced."""
    _, tok = _tiny(tiny_gemma)
    spelled = [tok.convert_tokens_to_ids(c) for c in "hello"]
    assert tok.decode(spelled) == "hello" and len(tok("hello", add_special_tokens=False)["input_ids"]) < 5
    gens = _generations(tmp_path / "gens.jsonl", [("Say hello.", "hello"), ("Say it again.", "hello")])
    lines = [json.loads(x) for x in gens.read_text().splitlines()]
    lines[0]["output_ids"] = spelled
    lines[1]["output_ids"] = [tok.convert_tokens_to_ids("x")]  # ids that are not this text: not trusted
    gens.write_text("".join(json.dumps(r) + "\n" for r in lines))
    logs = []
    s = json.loads(analyze_shift(str(tiny_gemma), tmp_path / "shift.json", generations=gens, n_boot=20,
                                 log=logs.append).read_text())
    recs = {r["prompt_id"]: r for r in map(json.loads, records_path(tmp_path / "shift.json").read_text().splitlines())}
    assert recs["p0"]["tokens"] == list("hello") and len(recs["p0"]["ranks"]) == 5
    assert recs["p0"]["answer_ids"] == "generated"
    assert recs["p1"]["answer_ids"] == "retokenised" and len(recs["p1"]["ranks"]) < 5
    assert s["answer_ids"] == {"generated": 1, "retokenised": 1}
    assert any("1 of 2 answers tokenised again" in str(m) for m in logs)


def test_base_model_ranks_its_own_greedy_generations_first(tiny_gemma, tmp_path):
    """Generated through `generate` and read back from its file: every token is the model's own first
    choice, which holds only if the ranked ids are the generated ones."""
    out = tmp_path / "shift.json"
    analyze_shift(str(tiny_gemma), out, aligned_model=str(tiny_gemma), prompts="seed:test", limit=3,
                  max_new_tokens=16, n_boot=20, log=lambda *_: None)
    gens = [json.loads(x) for x in (tmp_path / "shift.generations.jsonl").read_text().splitlines()]
    assert all(g["output_ids"] for g in gens)
    recs = [json.loads(x) for x in records_path(out).read_text().splitlines()]
    assert all(r["answer_ids"] == "generated" and r["ranks"] == [1] * len(r["ranks"]) for r in recs)


def _extended_checkpoint(base, out):
    """A full fine-tune's checkpoint that added a new end-of-turn token (one embedding row past the base's)."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(base, out)
    tok = AutoTokenizer.from_pretrained(out)
    tok.add_special_tokens({"additional_special_tokens": ["<|eot|>"]})
    model = AutoModelForCausalLM.from_pretrained(out)
    model.resize_token_embeddings(len(tok))
    tok.save_pretrained(out)
    model.save_pretrained(out)
    (out / "lima_align_checkpoint.json").write_text(json.dumps(
        {"base_model": str(base), "method": "full", "turns": {"format": "plain", "eot": "<|eot|>", "system": None}}))
    return out, tok


def test_shift_works_when_fine_tuning_added_an_end_of_turn_token(tiny_gemma, tmp_path):
    from lima_align.analyze.shift import aligned_format
    from lima_align.records import Message

    ckpt, tok = _extended_checkpoint(tiny_gemma, tmp_path / "ckpt")
    eot = tok.convert_tokens_to_ids("<|eot|>")
    model, base_tok = _tiny(tiny_gemma)
    assert eot >= model.get_input_embeddings().weight.shape[0]  # the base model has no row for it
    gens = _generations(tmp_path / "gens.jsonl", [("How do I boil an egg?", "Put it in boiling water.")])
    out = analyze_shift(str(tiny_gemma), tmp_path / "shift.json", generations=gens, aligned_model=str(ckpt),
                        n_boot=20, log=lambda *_: None)
    s = json.loads(out.read_text())
    rec = json.loads(records_path(out).read_text())
    full = aligned_format(str(ckpt), base_tok).encode_prompt([Message("user", "How do I boil an egg?")])
    assert eot in full and rec["context_dropped"] == full.count(eot) == s["context_dropped"]
    ctx = [t for t in full if t != eot]
    ans = base_tok("Put it in boiling water.", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = model(torch.tensor([ctx + ans])).logits[0]
    want = [int((logits[len(ctx) - 1 + i] > logits[len(ctx) - 1 + i, t]).sum()) + 1 for i, t in enumerate(ans)]
    assert rec["ranks"] == want and rec["context_tokens"] == len(ctx)
