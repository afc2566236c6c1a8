"""Packing keeps examples apart: packed logits and loss equal unpacked ones."""

from __future__ import annotations

import pytest
import torch

from lima_align.config import TurnsConfig
from lima_align.models import load_model
from lima_align.packing import Row, collate, first_fit_decreasing, plan_steps, rows_for_rank
from lima_align.records import Conversation, Message
from lima_align.train import TrainedPositionLoss
from lima_align.turns import TurnFormat

TEXTS = [("How do I boil an egg?", "Put it in boiling water for nine minutes, then cool it."),
         ("Write a poem about the sea.", "Waves fold and unfold under a grey sky. " * 3),
         ("What is the capital of Italy?", "Rome is the capital of Italy.")]


def encode_all(path):
    lm = load_model(str(path))
    fmt = TurnFormat(lm.tokenizer, TurnsConfig(format="plain", eot="eos"), method="lora")
    enc = [fmt.encode(Conversation(str(i), [Message("user", u), Message("assistant", a)]))
           for i, (u, a) in enumerate(TEXTS)]
    return lm.model.eval(), fmt, enc


@pytest.mark.parametrize("which", ["tiny_gemma", "tiny_llama"])
def test_packed_logits_equal_unpacked(which, request):
    model, fmt, enc = encode_all(request.getfixturevalue(which))
    assert len(enc[1].input_ids) > 16  # longer than the Gemma sliding window: that mask is tested too
    row = collate(Row([0, 1, 2]), enc, fmt.eot_id)
    with torch.no_grad():
        packed = model(input_ids=torch.tensor([row["input_ids"]]), position_ids=torch.tensor([row["position_ids"]]),
                       attention_mask=None, use_cache=False).logits[0]
        start = 0
        for e in enc:
            alone = model(input_ids=torch.tensor([e.input_ids])).logits[0]
            n = len(e.input_ids)
            assert torch.allclose(packed[start:start + n], alone, atol=1e-4), f"example at {start} leaked"
            start += n


def test_packed_loss_equals_sum_of_unpacked(tiny_gemma):
    model, fmt, enc = encode_all(tiny_gemma)
    w = TrainedPositionLoss(model)

    def run(row):
        c = collate(row, enc, fmt.eot_id)
        t = {k: torch.tensor([v]) for k, v in c.items()}
        t["weight"] = t["weight"].float()
        with torch.no_grad():
            return w(**t)

    packed, n_packed = run(Row([0, 1, 2]))
    parts = [run(Row([i])) for i in range(3)]
    assert n_packed == sum(n for _, n in parts) == sum(e.n_trained for e in enc)
    assert torch.allclose(packed, sum(l for l, _ in parts), rtol=1e-5)


def test_targets_never_cross_examples(tiny_gemma):
    _, fmt, enc = encode_all(tiny_gemma)
    row = collate(Row([0, 1]), enc, fmt.eot_id)
    boundary = len(enc[0].input_ids) - 1
    assert row["targets"][boundary] == -100  # last token of example 0 predicts nothing
    assert row["position_ids"][boundary + 1] == 0


def test_first_fit_decreasing_respects_capacity_and_keeps_everything():
    lengths = {i: n for i, n in enumerate([900, 700, 600, 300, 200, 100, 2048])}
    rows = first_fit_decreasing(lengths, 2048)
    assert sorted(i for r in rows for i in r) == list(lengths)
    assert all(sum(lengths[i] for i in r) <= 2048 for r in rows)
    assert len(rows) == 3


def test_ranks_get_equal_row_counts_and_disjoint_examples():
    lengths = [50, 60, 70, 2000, 10]
    step = [0, 1, 2, 3, 4]
    a = rows_for_rank(step, lengths, 2048, 2, 0)
    b = rows_for_rank(step, lengths, 2048, 2, 1)
    assert len(a) == len(b)
    ex = [i for r in a + b for i in r.examples]
    assert sorted(ex) == step
    assert any(r.filler for r in a + b) or len(a) == len(b)


def test_plan_steps_is_a_seeded_permutation_per_epoch():
    s0 = plan_steps(10, 4, 0, 7)
    assert [len(s) for s in s0] == [4, 4, 2]
    assert sorted(i for s in s0 for i in s) == list(range(10))
    assert plan_steps(10, 4, 0, 7) == s0 and plan_steps(10, 4, 1, 7) != s0
