"""Intervals for shares of turns in a dialogue evaluation (the dialogue report's tables and charts).

Counts come as a (conversations, k + 1) array: k counted outcomes, then the number of turns counted, per
conversation. The turns of one conversation are not independent (a model that lost the thread fails the
turns that follow), so the bootstrap resamples whole conversations. Where every turn falls on one side
the bootstrap cannot move, so the interval is then Wilson's (Newcombe's for a difference) with
n = conversations, which counts each conversation once (conservative, as its turns are correlated).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..intervals import nan_ratio, newcombe, percentile_ci, resample_idx, wilson

N_BOOT, CONFIDENCE = 2000, 0.95


def _boot_shares(counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    boot = counts[idx].sum(axis=1)  # (N_BOOT, k + 1)
    return nan_ratio(boot[:, :-1], boot[:, -1:])


def share_cis(counts: np.ndarray) -> list[list[float | None]]:
    """A 95% interval for each outcome's share of all turns."""
    total = counts.sum(axis=0)
    boot = _boot_shares(counts, resample_idx(len(counts), N_BOOT, seed=0))
    out = []
    for i in range(counts.shape[1] - 1):
        share = total[i] / total[-1] if total[-1] else None
        if share in (0.0, 1.0):
            out.append(wilson(round(share * len(counts)), len(counts))["ci"])
        else:
            out.append(percentile_ci(boot[:, i], CONFIDENCE) if share is not None else [None, None])
    return out


def paired_differences(ca: np.ndarray, cb: np.ndarray) -> list[dict[str, Any]]:
    """B's share minus A's for each outcome, rows of ca and cb being the same conversations: a paired
    bootstrap (both models' turns of a drawn conversation come along, so a script's difficulty cancels)."""
    idx = resample_idx(len(ca), N_BOOT, seed=0)  # the same draws for both models: paired
    diff = _boot_shares(cb, idx) - _boot_shares(ca, idx)
    ta, tb = ca.sum(axis=0), cb.sum(axis=0)
    out = []
    for i in range(ca.shape[1] - 1):
        if not (ta[-1] and tb[-1]):
            out.append({"value": None, "ci": [None, None]})
            continue
        pa, pb = ta[i] / ta[-1], tb[i] / tb[-1]
        if pa in (0.0, 1.0) and pb in (0.0, 1.0):
            n = len(ca)
            out.append(newcombe(round(pa * n), n, round(pb * n), n))
        else:
            out.append({"value": pb - pa, "ci": percentile_ci(diff[:, i], CONFIDENCE)})
    return out
