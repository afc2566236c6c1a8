"""Length bias of one judge on one model pair: how often the longer answer wins, and a win share at equal
length from a logistic fit (stats.summarize reports both for every comparison)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .intervals import percentile_ci, resample_idx
from .verdicts import sign_test

Record = dict[str, Any]


def fit_logistic(x: np.ndarray, y: np.ndarray, *, ridge: float = 1.0, iters: int = 30) -> np.ndarray:
    """Logistic regression y ~ sigmoid(b0 + b1 x) by Newton's method, batched over rows.

    x, y: (B, n) arrays (B independent fits, e.g. bootstrap replicates) or 1-d for one fit. Returns (B, 2)
    (or (2,)) coefficients. The ridge term is a weak Gaussian prior (precision `ridge`) pulling both
    coefficients to 0 ("no preference, no length effect"); it keeps the fit finite when one side or the
    longer answer always wins, where the unpenalised maximum lies at infinity. The objective is then
    strictly concave, so plain Newton steps from 0 converge in a handful of iterations.
    """
    single = x.ndim == 1
    x, y = np.atleast_2d(x).astype(float), np.atleast_2d(y).astype(float)
    b = np.zeros((x.shape[0], 2))
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(b[:, :1] + b[:, 1:] * x)))
        w = p * (1 - p)
        g0 = (y - p).sum(axis=1) - ridge * b[:, 0]
        g1 = ((y - p) * x).sum(axis=1) - ridge * b[:, 1]
        h00 = w.sum(axis=1) + ridge
        h01 = (w * x).sum(axis=1)
        h11 = (w * x * x).sum(axis=1) + ridge
        det = h00 * h11 - h01 * h01
        b[:, 0] += (h11 * g0 - h01 * g1) / det
        b[:, 1] += (h00 * g1 - h01 * g0) / det
    return b[0] if single else b


def _sigmoid(z: np.ndarray | float) -> np.ndarray:
    return 1 / (1 + np.exp(-np.asarray(z, dtype=float)))


LENGTH_BUCKETS = (("a much shorter", 0.0, 2 / 3), ("similar", 2 / 3, 3 / 2), ("a much longer", 3 / 2, math.inf))


def length_bias(records: Sequence[Record], *, n_boot: int = 2000, seed: int = 0,
                confidence: float = 0.95) -> dict[str, Any]:
    """How much answer length drives one judge's decisive verdicts.

    longer_wins: among decisive prompts (verdict a or b) whose answers differ in length, the share won by the
    longer answer (0.5 = no length preference), with a sign test against 0.5.

    length_controlled: a logistic regression of "a wins" on x = log((chars_a + 1) / (chars_b + 1)) over the
    decisive prompts (see fit_logistic). sigmoid(b0) is the predicted share of a's wins when both answers have
    the same length; compare it with raw_win_share = wins / (wins + losses). odds_ratio_per_doubling =
    exp(b1 * ln 2) says how much a's odds of winning multiply when a's answer is twice as long relative to b's.
    The CI bootstraps prompts and refits. by_ratio: the same decisive outcomes split by length ratio a/b.
    Records imported without their answers (meta.outputs "absent") are left out and counted in n_without_text.

    This is our own model, not AlpacaEval 2's length-controlled win rate: that one fits a GLM per model over all
    of its instructions with a shared instruction-difficulty term estimated across many models, then predicts the
    win rate at zero length difference. Ours is one judge and one model pair at a time, with no difficulty term.
    """
    # label-only imports (judgment_import: meta.outputs "absent") have no answers to measure; "" is a real answer
    without_text = [r for r in records if (r.get("meta") or {}).get("outputs") == "absent"]
    records = [r for r in records if (r.get("meta") or {}).get("outputs") != "absent"]
    dec = [r for r in records if r.get("verdict") in ("a", "b")]
    la = np.array([len(r["output_a"]) for r in dec], dtype=float)
    lb = np.array([len(r["output_b"]) for r in dec], dtype=float)
    y = np.array([r["verdict"] == "a" for r in dec], dtype=float)
    unequal = la != lb
    longer_won = ((la > lb) == (y == 1))[unequal]
    n_longer = int(longer_won.sum())
    out: dict[str, Any] = {
        "length_unit": "characters", "n_without_text": len(without_text), "n_decisive": len(dec),
        "n_unequal": int(unequal.sum()),
        "longer_wins": n_longer, "longer_wins_share": n_longer / int(unequal.sum()) if unequal.any() else None,
        "longer_wins_p_value": sign_test(n_longer, int(unequal.sum()) - n_longer),
        "mean_chars_a": float(np.mean([len(r["output_a"]) for r in records])) if records else None,
        "mean_chars_b": float(np.mean([len(r["output_b"]) for r in records])) if records else None,
    }
    ratio = (la + 1) / (lb + 1)
    out["by_ratio"] = [{"bucket": name, "ratio_range": [lo, None if hi == math.inf else hi],
                        "a": int(((ratio >= lo) & (ratio < hi) & (y == 1)).sum()),
                        "b": int(((ratio >= lo) & (ratio < hi) & (y == 0)).sum())} for name, lo, hi in LENGTH_BUCKETS]
    if not dec:
        out["length_controlled"] = None
        return out
    x = np.log(ratio)
    b0, b1 = fit_logistic(x, y)
    idx = resample_idx(len(dec), n_boot, seed)
    boot = fit_logistic(x[idx], y[idx])
    out["length_controlled"] = {
        "method": "logistic regression of a-wins on log length ratio over decisive prompts, ridge 1.0; "
                  "value at equal length",
        "raw_win_share": float(y.mean()),
        "win_share_at_equal_length": {"value": float(_sigmoid(b0)),
                                      "ci": percentile_ci(_sigmoid(boot[:, 0]), confidence)},
        "odds_ratio_per_doubling": {"value": float(np.exp(b1 * math.log(2))),
                                    "ci": percentile_ci(np.exp(boot[:, 1] * math.log(2)), confidence)},
        "intercept": float(b0), "slope": float(b1)}
    return out
