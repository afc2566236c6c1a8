"""Padding-free packing: examples of one optimizer step packed into rows of at most N tokens.

An optimizer step always holds `batch_size` examples, as in LIMA; packing only decides how they
are laid out for the forward passes. Each row concatenates whole examples with position ids
restarting at 0 for each, and no padding. transformers turns restarting position ids into a
block-diagonal mask (with no attention mask and no KV cache), so an example never attends to
its neighbour; `tests/test_packing.py` checks that packed logits equal unpacked ones.

Targets are shifted *within* each example before concatenation, so the last token of one
example is never trained to predict the first token of the next.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .turns import IGNORE, Encoded


def epoch_order(n: int, epoch: int, seed: int) -> list[int]:
    order = list(range(n))
    random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order


def plan_steps(n: int, batch_size: int, epoch: int, seed: int) -> list[list[int]]:
    """Example indices of each optimizer step in one epoch (last step may be smaller)."""
    order = epoch_order(n, epoch, seed)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def first_fit_decreasing(lengths: dict[int, int], capacity: int) -> list[list[int]]:
    """Bin-pack example ids into rows of total length <= capacity (longest first)."""
    rows: list[list[int]] = []
    free: list[int] = []
    for idx in sorted(lengths, key=lambda i: (-lengths[i], i)):
        n = lengths[idx]
        for r, space in enumerate(free):
            if n <= space:
                rows[r].append(idx)
                free[r] -= n
                break
        else:
            rows.append([idx])
            free.append(capacity - n)
    return rows


@dataclass
class Row:
    """One packed forward pass: example ids, or a zero-weight filler (see `rows_for_rank`)."""

    examples: list[int]
    filler: bool = False


def rows_for_rank(step: list[int], lengths: list[int], capacity: int, world_size: int, rank: int) -> list[Row]:
    """Pack a step's examples and give this rank its share, balanced by tokens.

    Every rank must run the same number of forward/backward passes (FSDP gathers weights in
    each one, and a rank that stops early would hang the others), so ranks with fewer rows get
    zero-weight filler rows.
    """
    rows = first_fit_decreasing({i: lengths[i] for i in step}, capacity)
    load = [0] * world_size
    mine: list[list[list[int]]] = [[] for _ in range(world_size)]
    for row in sorted(rows, key=lambda r: -sum(lengths[i] for i in r)):
        target = min(range(world_size), key=lambda k: (len(mine[k]), load[k]))
        mine[target].append(row)
        load[target] += sum(lengths[i] for i in row)
    most = max(len(m) for m in mine)
    out = [Row(r) for r in mine[rank]]
    out += [Row([], filler=True)] * (most - len(out))
    return out


def collate(row: Row, encoded: list[Encoded], filler_token: int) -> dict[str, list[int]]:
    """input_ids, position_ids and already-shifted targets for one packed row."""
    if row.filler:
        # One token, one target: keeps every parameter in the graph; its loss weight is zero.
        return {"input_ids": [filler_token], "position_ids": [0], "targets": [filler_token], "weight": [0.0]}
    ids, pos, tgt = [], [], []
    for i in row.examples:
        e = encoded[i]
        ids += e.input_ids
        pos += list(range(len(e.input_ids)))
        tgt += e.labels[1:] + [IGNORE]
    return {"input_ids": ids, "position_ids": pos, "targets": tgt, "weight": [1.0]}


def padding_efficiency(row_lengths: list[list[int]], padded_to: list[int]) -> float:
    """Real tokens / tokens computed, for rows (lists of example lengths) padded to given widths."""
    real = sum(sum(r) for r in row_lengths)
    computed = sum(padded_to)
    return real / computed if computed else 1.0
