"""Packing behaviour that mutation testing (benchmarks/mutation.py) found unchecked: exact fits,
longest-first packing, token balance across ranks, filler rows and the loss weight of a row."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from lima_align.config import TurnsConfig
from lima_align.models import load_model
from lima_align.packing import Row, collate, first_fit_decreasing, padding_efficiency, rows_for_rank
from lima_align.records import Conversation, Message
from lima_align.train import TrainedPositionLoss
from lima_align.turns import IGNORE, TurnFormat


def test_an_example_that_exactly_fills_a_row_joins_it():
    assert first_fit_decreasing({0: 1000, 1: 1048}, 2048) == [[1, 0]]  # longest first, one row


def test_longest_first_packs_into_fewer_rows_than_arrival_order():
    # In arrival order the three 3s share a row and each 7 needs its own (4 rows);
    # longest first, each 7 takes a 3 (3 rows, all full).
    lengths = dict(enumerate([3, 3, 3, 7, 7, 7]))
    rows = first_fit_decreasing(lengths, 10)
    assert len(rows) == 3
    assert all(sum(lengths[i] for i in r) == 10 for r in rows)


def test_ranks_share_rows_evenly_and_tokens_within_a_few():
    lengths = [79, 93, 83, 57, 100, 61]  # capacity 100: one example per row
    step = list(range(6))
    mine = [rows_for_rank(step, lengths, 100, 2, rank) for rank in (0, 1)]
    assert [len(m) for m in mine] == [3, 3]
    assert not any(r.filler for m in mine for r in m)
    loads = [sum(lengths[i] for r in m for i in r.examples) for m in mine]
    assert sum(loads) == sum(lengths)
    assert abs(loads[0] - loads[1]) <= 5, loads


def test_a_rank_short_of_rows_gets_empty_zero_weight_fillers():
    lengths = [100, 90, 80]  # three rows for two ranks
    a = rows_for_rank([0, 1, 2], lengths, 100, 2, 0)
    b = rows_for_rank([0, 1, 2], lengths, 100, 2, 1)
    assert len(a) == len(b) == 2
    fillers = [r for r in a + b if r.filler]
    assert len(fillers) == 1 and fillers[0].examples == []
    assert sorted(i for r in a + b for i in r.examples) == [0, 1, 2]
    # a rank with nothing to do still runs one forward pass per row of the busiest rank
    idle = rows_for_rank([0], [10], 100, 3, 2)
    assert len(idle) == 1 and idle[0].filler


def test_filler_row_is_one_token_at_position_zero_with_zero_weight():
    assert collate(Row([], filler=True), [], 7) == {
        "input_ids": [7], "position_ids": [0], "targets": [7], "weight": [0.0]}


def _encoded(path):
    lm = load_model(str(path))
    fmt = TurnFormat(lm.tokenizer, TurnsConfig(format="plain", eot="eos"), method="lora")
    enc = [fmt.encode(Conversation(str(i), [Message("user", u), Message("assistant", a)]))
           for i, (u, a) in enumerate([("How do I boil an egg?", "Put it in boiling water."),
                                       ("What is the capital of Italy?", "Rome.")])]
    return lm.model.eval(), fmt, enc


def _loss(model, row, enc, filler):
    c = {k: torch.tensor([v]) for k, v in collate(row, enc, filler).items()}
    c["weight"] = c["weight"].float()
    with torch.no_grad():
        return TrainedPositionLoss(model)(**c)


def test_packed_row_loss_is_the_plain_cross_entropy_sum_of_its_trained_tokens(tiny_gemma):
    model, fmt, enc = _encoded(tiny_gemma)
    loss, n = _loss(model, Row([0, 1]), enc, fmt.eot_id)
    want, count = 0.0, 0
    for e in enc:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([e.input_ids])).logits[0].float()
        targets = torch.tensor(e.labels[1:] + [IGNORE])
        want += F.cross_entropy(logits, targets, ignore_index=IGNORE, reduction="sum").item()
        count += int((targets != IGNORE).sum())
    assert int(n) == count > 0
    assert abs(loss.item() - want) <= 1e-3 * want


def test_filler_row_adds_no_loss_through_the_training_loss(tiny_gemma):
    model, fmt, enc = _encoded(tiny_gemma)
    loss, _ = _loss(model, Row([], filler=True), enc, fmt.eot_id)
    assert loss.item() == 0.0


def test_padding_efficiency_is_real_over_computed_tokens():
    assert padding_efficiency([[3, 2], [4]], [6, 6]) == 9 / 12
    assert padding_efficiency([], []) == 1.0
