"""The report's judge agreement section and its compact view of many judges.

A report on thousands of votes by dozens of people must stay small and quick (MT-Bench's 5,755 votes by 65 people
and GPT-4: 735 comparisons, 1,300 judge pairs that share a prompt). So the page shows:
- beyond 30 comparisons, those by model judges and the pooled people rows; a single person's comparison only
  where no pooled row covers that model pair (pooled.compact_pairwise);
- pooled agreement between groups of judges per turn (agreement.py), and judge-pair rows only up to
  MAX_PAIR_ROWS (judge pairs with shared prompts, most shared first);
report.json keeps every row either way, and the page says what it left out.
"""

from __future__ import annotations

from typing import Any

from .agreement import WILSON
from .html_parts import format_pct, fragment, render_page, trusted
from .pooled import compact_pairwise
from .verdicts import short_judge

MAX_PAIR_ROWS = 100


def compact_view(summary: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(summary with the single people's comparisons that a pooled row covers left out, a note saying so)."""
    keep, left = compact_pairwise(summary)
    note = (f"<p class=note>{left} comparisons by single people are not shown one by one: their model pairs have a "
            "pooled people row. report.json holds every one of them.</p>") if left else ""
    return {**summary, "pairwise": keep}, note


def _cell(s: dict[str, Any]) -> str:
    if not s["n"]:
        return "&ndash;"
    lo, hi = s["ci"]
    how = "Wilson" if s["interval"] == WILSON else "bootstrap"
    return (f"{format_pct(s['value'])} <span class=ci>[{format_pct(lo)}, {format_pct(hi)}] {how}</span>"
            f"<br><span class=ci>{s['agreed']} of {s['n']}</span>")


def _pooled_rows(pa: dict[str, Any]) -> list[list[Any]]:
    return [[trusted("&ndash;") if r["turn"] is None else r["turn"], fragment("{} ({})", r["group_1"], r["members_1"]),
             "within" if r["within"] else fragment("{} ({})", r["group_2"], r["members_2"]),
             r["with_ties"]["items"], trusted(_cell(r["with_ties"])), trusted(_cell(r["without_ties"])),
             trusted(format_pct(r["tie_discounted_accuracy"])),
             trusted("&ndash;") if r["kappa"] is None else f"{r['kappa']:.3f}"] for r in pa["rows"]]


def _pair_rows(agreement: list[dict[str, Any]]) -> list[list[Any]]:
    return [[fragment("{} vs {}", g["model_a"], g["model_b"]), short_judge(g["judge_1"]), short_judge(g["judge_2"]),
             g["n"], trusted(format_pct(g["tie_discounted_accuracy"])), trusted(format_pct(g["with_ties"])),
             trusted(f"{format_pct(g['without_ties'])} <span class=ci>n={g['n_without_ties']}</span>"),
             trusted("&ndash;") if g["kappa"] is None else format(g["kappa"], ".3f"), g["n_null"]] for g in agreement]


def agreement_section(summary: dict[str, Any]) -> str:
    """templates/report_agreement.html: pooled groups (all rows), judge pairs (the MAX_PAIR_ROWS sharing most)."""
    pairs, pa = summary["agreement"], summary.get("pooled_agreement") or {"rows": []}
    shown = sorted(pairs, key=lambda g: -g["n"])[:MAX_PAIR_ROWS] if len(pairs) > MAX_PAIR_ROWS else pairs
    return render_page("report_agreement.html", pooled=_pooled_rows(pa), pairs=_pair_rows(shown),
                       n_shown=len(shown), n_pairs=len(pairs))
