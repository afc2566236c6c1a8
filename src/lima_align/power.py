"""Statistical power of the sign test: prompts needed for a target win share, and what a number of decisive
prompts can detect (normal approximation)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

POWER_TARGETS = (0.55, 0.60, 0.65)


def sign_test_sample_size(p1: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Decisive (non-tie) prompts the two-sided sign test needs to detect a true win share p1 against 0.5.

    Normal approximation for a one-sample test of a proportion:
        n = ((z_{1-alpha/2} * sqrt(p0 q0) + z_{power} * sqrt(p1 q1)) / (p1 - p0))^2,  p0 = 0.5,
    rounded up. E.g. p1 = 0.60 -> 194, 0.55 -> 783, 0.65 -> 85 at alpha 0.05, power 0.8.
    """
    if not 0 < p1 < 1 or p1 == 0.5:
        raise ValueError(f"p1 must be in (0, 1) and differ from 0.5, got {p1}")
    z = NormalDist()
    za, zb = z.inv_cdf(1 - alpha / 2), z.inv_cdf(power)
    n = ((za * 0.5 + zb * math.sqrt(p1 * (1 - p1))) / (p1 - 0.5)) ** 2
    return math.ceil(n - 1e-9)


def minimum_detectable_share(n_decisive: int, *, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """The smallest win share above 0.5 that n_decisive non-tie prompts detect (same approximation as
    sign_test_sample_size, solved by bisection). None when even a 100% win share would not be detected."""
    z = NormalDist()
    za, zb = z.inv_cdf(1 - alpha / 2), z.inv_cdf(power)

    def needed(p: float) -> float:  # decreasing in p on (0.5, 1)
        return ((za * 0.5 + zb * math.sqrt(p * (1 - p))) / (p - 0.5)) ** 2

    if n_decisive <= 0 or needed(1.0) > n_decisive:
        return None
    lo, hi = 0.5, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if needed(mid) > n_decisive else (lo, mid)
    return hi


def power_analysis(n_decisive: int, tie_share: float | None, *, targets: Sequence[float] = POWER_TARGETS,
                   alpha: float = 0.05, power: float = 0.8) -> dict[str, Any]:
    """Prompts needed for each target win share, and what the current number of decisive prompts can detect.

    The sign test only sees decisive prompts, so the prompt count scales the decisive count by 1 / (1 - ties)
    at the observed tie share.
    """
    keep = 1 - tie_share if tie_share is not None and tie_share < 1 else None
    needs = []
    for p in targets:
        n = sign_test_sample_size(p, alpha=alpha, power=power)
        needs.append({"win_share": p, "decisive_prompts": n, "prompts": math.ceil(n / keep) if keep else None})
    mds = minimum_detectable_share(n_decisive, alpha=alpha, power=power)
    return {"alpha": alpha, "power": power, "test": "two-sided sign test, normal approximation",
            "n_decisive": n_decisive, "tie_share": tie_share, "needed": needs,
            "minimum_detectable_share": mds, "minimum_detectable_difference": None if mds is None else mds - 0.5}
