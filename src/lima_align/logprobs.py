"""Log-probabilities of given tokens under a causal LM, batched: what `analyze shift`, `analyze retention`
and the `quality` selection strategy of `curate` read off a model.

Rows are right-padded (positions of real tokens stay those of an unpadded pass), grouped by length so
that rows x longest row stays within a token budget, and only the logits of the positions asked for are
materialised: a (batch, length, vocabulary) tensor of a 262k-word vocabulary would be gigabytes.
"""

from __future__ import annotations

import inspect
from typing import Any


def keep_logits(model: Any, ids: Any, mask: Any, keep: int) -> Any:
    """Logits for the last `keep` positions only: the full (batch, length, vocabulary) tensor of a
    262k-vocabulary model would be gigabytes, and only the answer positions are needed."""
    params = inspect.signature(model.forward).parameters
    if "logits_to_keep" in params:
        return model(input_ids=ids, attention_mask=mask, logits_to_keep=keep).logits[:, -keep:]
    return model(input_ids=ids, attention_mask=mask).logits[:, -keep:]


def right_padded(seqs: list[list[int]], pad_id: int) -> tuple[Any, Any]:
    """(ids, attention mask) of token sequences padded on the right to the longest one."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        ids[r, :len(seq)] = torch.tensor(seq)
        mask[r, :len(seq)] = 1
    return ids, mask


def batches(lengths: list[int], batch_tokens: int) -> list[list[int]]:
    """Indices grouped by similar length so that batch size x longest row stays within batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) + 1) * lengths[i] > batch_tokens:
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out


def continuation_logprobs(model: Any, items: list[tuple[list[int], int]], *, pad_id: int = 0,
                          batch_tokens: int = 1024, desc: str | None = None) -> list[list[float]]:
    """For each (ids, start): log p(ids[j] | ids[:j]) for j = start .. len(ids)-1 (start >= 1)."""
    import torch
    from tqdm.auto import tqdm

    out: list[list[float]] = [[] for _ in items]
    lengths = [len(ids) for ids, _ in items]
    dev = next(model.parameters()).device
    with torch.no_grad():
        groups = batches(lengths, batch_tokens)
        for idx in tqdm(groups, desc=desc, unit="batch", disable=desc is None, dynamic_ncols=True):
            idx = [i for i in idx if items[i][1] < len(items[i][0])]
            if not idx:
                continue
            ids, mask = right_padded([items[i][0] for i in idx], pad_id)
            width = ids.shape[1]
            first = min(items[i][1] for i in idx) - 1
            logits = keep_logits(model, ids.to(dev), mask.to(dev), width - first).float()
            for r, i in enumerate(idx):
                seq, start = items[i]
                rows = logits[r, start - 1 - first:len(seq) - 1 - first]
                target = torch.tensor(seq[start:], device=rows.device)[:, None]
                lp = rows.gather(1, target)[:, 0] - torch.logsumexp(rows, dim=-1)
                out[i] = lp.tolist()
            del logits
    return out


def next_token_logprobs(model: Any, seqs: list[list[int]], token_ids: list[int], *, pad_id: int = 0,
                        batch_tokens: int = 4096) -> list[list[float]]:
    """For each sequence: log p(t | seq) of each token t in token_ids, at the position after its end."""
    import torch

    out: list[list[float]] = [[] for _ in seqs]
    dev = next(model.parameters()).device
    wanted = torch.tensor(token_ids, device=dev)
    with torch.no_grad():
        for idx in batches([len(s) for s in seqs], batch_tokens):
            ids, mask = right_padded([seqs[i] for i in idx], pad_id)
            first = min(len(seqs[i]) for i in idx) - 1  # the earliest last position in the batch
            logits = keep_logits(model, ids.to(dev), mask.to(dev), ids.shape[1] - first).float()
            for r, i in enumerate(idx):
                row = logits[r, len(seqs[i]) - 1 - first]
                out[i] = (row[wanted] - torch.logsumexp(row, dim=-1)).tolist()
            del logits
    return out
