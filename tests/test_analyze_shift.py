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
