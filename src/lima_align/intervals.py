"""Intervals: the percentile bootstrap's pieces (resampling indices, ratios, percentiles), Wilson's score interval
for one share, Newcombe's for a difference of two, and the rule for when the score intervals replace the bootstrap.

A bootstrap that resamples prompts cannot move when every prompt gave the same outcome (two records that both say
"a": 100% [100, 100]), and it is ragged with few decisive prompts. There the intervals are Wilson's, which stay
honest at 0 and n.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy loads with the bootstrap helpers that need it, not with `wilson` (the CLI's parser)
    import numpy as np

MIN_DECISIVE = 20
SMALL_SAMPLE = (f"Wilson score intervals over prompts: the bootstrap collapses here (every parsed verdict alike, or "
                f"fewer than {MIN_DECISIVE} decisive prompts)")
BOOTSTRAP_RATES = "percentile bootstrap over prompts; Wilson for a share of 0% or 100%, where the bootstrap cannot move"

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> dict[str, Any]:
    """k successes in n: the share with Wilson's score interval, which stays sensible at 0 and n (where a
    percentile bootstrap collapses to a point)."""
    if n == 0:
        return {"value": None, "ci": [None, None]}
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return {"value": p, "ci": [max(0.0, mid - half), min(1.0, mid + half)]}


def newcombe(k_a: int, n_a: int, k_b: int, n_b: int, z: float = Z95) -> dict[str, Any]:
    """p_b - p_a with Newcombe's hybrid score interval built from the two Wilson intervals (for independent
    samples; for paired ones it is conservative)."""
    a, b = wilson(k_a, n_a, z), wilson(k_b, n_b, z)
    if a["value"] is None or b["value"] is None:
        return {"value": None, "ci": [None, None]}
    d = b["value"] - a["value"]
    (la, ua), (lb, ub) = a["ci"], b["ci"]
    return {"value": d, "ci": [d - math.hypot(b["value"] - lb, ua - a["value"]),
                               d + math.hypot(ub - b["value"], a["value"] - la)]}


def small_sample(counts: dict[str, int]) -> bool:
    """Does a prompt bootstrap of these verdict counts collapse or stay too ragged to trust?"""
    parsed = [counts[k] for k in ("a", "tie", "b")]
    return sum(parsed) > 0 and (max(parsed) == sum(parsed) or counts["a"] + counts["b"] < MIN_DECISIVE)


def wilson_rates(counts: dict[str, int], n: int | None = None) -> dict[str, dict[str, Any]]:
    """The win_rates shares with Wilson intervals: a, tie, b, a_or_tie, and the score (wins + ties/2) / parsed as a
    share with half a success per tie (so it mirrors when the models swap, and equals a's share without ties).
    n: the count the intervals are over (default the parsed verdicts; pooled rows give their prompts, because
    votes on one prompt are correlated), with the shares kept."""
    w, t, b = counts["a"], counts["tie"], counts["b"]
    parsed = w + t + b
    m = parsed if n is None else n

    def est(k: float) -> dict[str, Any]:
        value = k / parsed
        return {"value": value, "ci": wilson(value * m, m)["ci"]}

    return {"a": est(w), "tie": est(t), "b": est(b), "a_or_tie": est(w + t), "score": est(w + t / 2)}


def percentile_ci(samples: np.ndarray, confidence: float) -> list[float | None]:
    """Percentile interval of bootstrap samples (NaN samples, from resamples with nothing to measure, ignored)."""
    import numpy as np

    samples = samples[~np.isnan(samples)]
    if samples.size == 0:
        return [None, None]
    tail = (1 - confidence) / 2 * 100
    lo, hi = np.percentile(samples, [tail, 100 - tail])
    return [float(lo), float(hi)]


def resample_idx(n: int, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, n) indices drawn with replacement: each row is one bootstrap replicate of the prompts."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n)) if n else np.zeros((n_boot, 0), int)


def nan_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den is 0 (a resample with nothing to measure; percentile_ci skips it)."""
    import numpy as np

    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1), np.nan)
