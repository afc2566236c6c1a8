"""Plain-text pieces shared by the terminal summaries: percentages, estimates with intervals, aligned tables."""

from __future__ import annotations

from typing import Any


def pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def pct_ci(e: dict[str, Any]) -> str:
    lo, hi = e["ci"]
    if e["value"] is None:
        return "-"
    return f"{100 * e['value']:.1f}% [{pct(lo)[:-1]}, {pct(hi)}]" if lo is not None else pct(e["value"])


def num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows, strict=True)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(head), line(["-" * w for w in widths]), *map(line, rows)])
