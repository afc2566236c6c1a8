"""Measuring helpers the load benchmarks share (run as scripts, they import this from their own folder)."""

from __future__ import annotations

import os
from pathlib import Path


def percentile(xs: list[float], q: float) -> float:
    """The q-quantile of xs by rank (nan for none)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of a process (plus its reaped children's if asked), from Linux /proc;
    0.0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15 if reaped_children else 13]) / os.sysconf("SC_CLK_TCK")
