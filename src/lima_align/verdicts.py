"""What a verdict is, and the small tests every summary of verdicts uses: the labels and rating scales, the sign
test, Cohen's kappa, and how a judge is named in a label. A base module: stats, pooled and agreement build on it."""

from __future__ import annotations

import math
from collections.abc import Sequence

VERDICTS = ("a", "tie", "b")
ORDERS = ("ab", "ba")  # which answer the judge saw first: a judgment record's "order"
FPE = ("fail", "pass", "excellent")
SCALES = {"fail_pass_excellent": FPE, "helpfulness_6": (1, 2, 3, 4, 5, 6)}  # the absolute scales and their values


def short_judge(judge: str) -> str:
    """A judge name for labels: "api:gpt-4o@https://host/v1" -> "api:gpt-4o" (the endpoint stays in the JSON)."""
    return judge.split("@", 1)[0]


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact sign test (binomial test with p = 1/2) on the decisive outcomes; ties are left out.

    Paired by construction: each prompt gives both models one chance, and we ask whether "a beats b" is more
    or less frequent than "b beats a". p = min(1, 2 * P(X <= min(wins, losses))) with X ~ Binomial(wins+losses, 1/2).
    Example: 8 wins vs 2 losses -> 2 * (1 + 10 + 45) / 1024 = 0.109375.
    """
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)  # exact big-int sum, one rounding


def cohen_kappa(x: Sequence[str], y: Sequence[str], labels: Sequence[str] = VERDICTS) -> float | None:
    """Cohen's kappa over the given classes: (p_o - p_e) / (1 - p_e). None when p_e = 1 (one class only)."""
    import numpy as np  # here, not at the top: the CLI reads the vocabularies above when it starts

    n = len(x)
    if n == 0:
        return None
    pos = {lab: i for i, lab in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)))
    for u, v in zip(x, y, strict=True):
        m[pos[u], pos[v]] += 1
    p_o = np.trace(m) / n
    p_e = float((m.sum(axis=1) / n) @ (m.sum(axis=0) / n))
    return None if math.isclose(p_e, 1.0) else float((p_o - p_e) / (1 - p_e))
