"""Knowledge retention: perplexity against an independent computation, sliding windows, MCQ scoring on a stub."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lima_align.analyze.retention import (analyze_retention, continuation_logprobs, load_mcq, load_texts,
                                          perplexity, predict, score_mcq, wilson, windows)
from lima_align.cli import main
from lima_align.errors import LimaError

from test_analyze_shift import Bigram

V = 128


class CharTok:
    """One token per ASCII character; BOS (id 0) starts a text, as Gemma's and Llama's tokenizers do."""

    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        return {"input_ids": ([0] if add_special_tokens else []) + [ord(c) for c in text]}


def bigram_favouring(pairs: dict[tuple[str, str], float]) -> tuple[Bigram, torch.Tensor]:
    table = torch.zeros(V, V)
    for (a, b), v in pairs.items():
        table[ord(a), ord(b)] = v
    return Bigram(table.tolist()), torch.log_softmax(table, dim=-1)


def test_windows_score_every_token_once_with_half_a_window_of_context():
    assert windows(5, 8) == [(0, 5, 1)]
    ws = windows(21, 8)
    scored = [j for b, e, s in ws for j in range(s, e)]
    assert scored == list(range(1, 21))
    assert all(s - b >= 4 for b, e, s in ws[1:]) and all(e - b <= 8 for b, e, s in ws)


def test_sliding_window_equals_full_pass_for_a_context_free_model():
    model, lp = bigram_favouring({("a", "b"): 3.0, ("b", "c"): 2.0, (" ", "t"): 4.0})
    text = {"id": "t", "subject": "s", "text": "abc the cab bat tab abc " * 3}
    ids = CharTok()(text["text"])["input_ids"]
    want = -sum(lp[ids[j - 1], ids[j]].item() for j in range(1, len(ids)))
    for window in (8, 16, 10_000):
        got = perplexity(model, CharTok(), [text], window=window, batch_tokens=40)[0]
        assert got["tokens"] == len(ids) - 1
        assert got["nll"] == pytest.approx(want, rel=1e-5)


def test_continuation_logprobs_by_hand():
    model, lp = bigram_favouring({("x", "y"): 2.0})
    got = continuation_logprobs(model, [([ord("x"), ord("y"), ord("x")], 1), ([ord("y"), ord("x")], 1)])
    assert got[0] == pytest.approx([lp[ord("x"), ord("y")].item(), lp[ord("y"), ord("x")].item()])
    assert got[0][0] == pytest.approx(2.0 - math.log(V - 1 + math.e ** 2))
    assert got[1] == pytest.approx([-math.log(V)])


def test_mcq_raw_prefers_short_choices_normalised_does_not():
    # After a space, 'P' is strongly preferred; every other transition is uniform. " Paris" then has the best
    # score per byte, but "Ok" has fewer tokens to pay for, so the raw sum prefers it.
    model, lp = bigram_favouring({(" ", "P"): 5.0})
    q = {"id": "q1", "question": "Capital of France?", "choices": ["Paris", "Ok"], "answer": 0, "subject": "geo"}
    (p,) = score_mcq(model, CharTok(), [q])
    ctx = CharTok()("Question: Capital of France?\nAnswer:")["input_ids"]
    for k, choice in enumerate(q["choices"]):
        seq = ctx + [ord(c) for c in " " + choice]
        want = sum(lp[seq[j - 1], seq[j]].item() for j in range(len(ctx), len(seq)))
        assert p["raw"][k] == pytest.approx(want, abs=1e-3)
        assert p["norm"][k] == pytest.approx(want / len(choice), abs=1e-3)
    assert (p["pred"], p["pred_raw"]) == (0, 1)
    assert p["correct"] and not p["correct_raw"]


def test_ties_go_to_the_first_choice():
    p = predict({"id": "q", "subject": "s", "answer": 1, "choices": ["ab", "cd"]}, [-2.0, -2.0])
    assert p["pred"] == p["pred_raw"] == 0


def test_wilson_interval_known_values():
    w = wilson(5, 10)
    assert w["value"] == 0.5 and w["ci"] == pytest.approx([0.2366, 0.7634], abs=1e-4)
    assert wilson(0, 0)["value"] is None
    assert wilson(10, 10)["ci"] == pytest.approx([0.7225, 1.0], abs=1e-4)


def test_mcq_file_problems_are_all_listed(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text(json.dumps({"id": "a", "question": "", "choices": ["x", "y"], "answer": 0}) + "\n"
                 + json.dumps({"id": "b", "question": "Q?", "choices": ["x"], "answer": 0}) + "\n"
                 + json.dumps({"id": "c", "question": "Q?", "choices": ["x", "y"], "answer": 2}) + "\n")
    with pytest.raises(LimaError) as e:
        load_mcq(f)
    text = str(e.value)
    assert "3 problems" in text and "q.jsonl:1 question" in text and "q.jsonl:3 answer" in text


def test_shipped_sets_load_and_are_well_formed():
    texts, qs = load_texts(), load_mcq()
    assert 20 <= len(texts) <= 40 and 40 <= len(qs) <= 80
    assert len({q["id"] for q in qs}) == len(qs) and len({t["id"] for t in texts}) == len(texts)
    assert len({q["answer"] for q in qs}) == 4  # right answers are not all in one position


def test_txt_passages(tmp_path):
    f = tmp_path / "held.txt"
    f.write_text("First passage.\nStill first.\n\n\nSecond passage.\n")
    assert [t["text"] for t in load_texts(f)] == ["First passage.\nStill first.", "Second passage."]


# ----------------------------------------------------------------- tiny model, end to end


def test_perplexity_is_exp_of_mean_nll_computed_independently(tiny_gemma, tiny_llama, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = tmp_path / "t.jsonl"
    passages = ["The quick brown fox jumps over the lazy dog.", "Rome is the capital of Italy. " * 3]
    texts.write_text("".join(json.dumps({"id": f"t{i}", "subject": "s", "text": t}) + "\n"
                             for i, t in enumerate(passages)))
    mcq = tmp_path / "q.jsonl"
    mcq.write_text(json.dumps({"id": "q", "question": "What is the capital of Italy?",
                               "choices": ["Rome", "The lazy dog"], "answer": 0, "subject": "geo"}) + "\n")
    out = analyze_retention(str(tiny_gemma), str(tiny_llama), tmp_path / "ret.json", texts=texts, mcq=mcq,
                            n_boot=50, log=lambda *_: None)
    s = json.loads(out.read_text())
    assert s["kind"] == "retention" and [m["role"] for m in s["models"]] == ["base", "aligned"]
    for m, path in zip(s["models"], (tiny_gemma, tiny_llama), strict=True):
        model, tok = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
        nll, n = 0.0, 0
        for t in passages:
            ids = torch.tensor([tok(t)["input_ids"]])
            with torch.no_grad():
                loss = model(ids, labels=ids).loss.item()  # mean over the len-1 predicted tokens
            nll += loss * (ids.shape[1] - 1)
            n += ids.shape[1] - 1
        assert m["perplexity"]["tokens"] == n
        assert m["perplexity"]["value"] == pytest.approx(math.exp(nll / n), rel=1e-4)
        assert m["mcq"]["n"] == 1 and m["mcq"]["by_subject"]["geo"]["n"] == 1
    assert s["mcq_items"][0]["base"]["pred"] in (0, 1)


def test_retention_cli_on_the_shipped_sets(tiny_gemma, tmp_path, capsys):
    out = tmp_path / "ret.json"
    rc = main(["analyze", "retention", "--base", str(tiny_gemma), "--aligned", str(tiny_gemma), "--n-boot", "50",
               "--output", str(out)])
    assert rc == 0
    s = json.loads(out.read_text())
    base, aligned = s["models"]
    assert base["perplexity"]["value"] == pytest.approx(aligned["perplexity"]["value"])
    assert base["mcq"]["n"] == len(load_mcq()) and s["difference"]["accuracy"]["value"] == 0
    lo, hi = base["mcq"]["accuracy"]["ci"]
    assert lo <= base["mcq"]["accuracy"]["value"] <= hi
    assert "perplexity" in capsys.readouterr().out
