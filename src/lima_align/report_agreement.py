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
from .html_parts import escape, format_pct, html_table
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


def pooled_table(pa: dict[str, Any]) -> str:
    rows = [["&ndash;" if r["turn"] is None else r["turn"],
             f"{escape(r['group_1'])} ({r['members_1']})",
             "within" if r["within"] else f"{escape(r['group_2'])} ({r['members_2']})",
             r["with_ties"]["items"], _cell(r["with_ties"]), _cell(r["without_ties"]),
             format_pct(r["tie_discounted_accuracy"]), "&ndash;" if r["kappa"] is None else f"{r['kappa']:.3f}"]
            for r in pa["rows"]]
    return (html_table(["turn", "group (members)", "against", "items", "agreement with ties", "without ties",
                        "tie-discounted accuracy", "Cohen's &kappa;"], rows, text_cols=3)
            + "<p class=note>Judges pooled into groups (default: all people together, each model judge alone). "
            "Every pair of votes on the same item (prompt, turn, model pair) counts: across two groups every "
            "pair of one vote from each, within a group every pair of votes by two different members. Without "
            "ties: pairs where neither vote is a tie. 95% intervals bootstrap items; where that collapses (every "
            "pair alike, or fewer than 20 items) Wilson's interval over pairs is given instead.</p>")


def _pair_table(agreement: list[dict[str, Any]]) -> str:
    rows = [[f"{escape(g['model_a'])} vs {escape(g['model_b'])}", escape(short_judge(g["judge_1"])),
             escape(short_judge(g["judge_2"])), g["n"], format_pct(g["tie_discounted_accuracy"]),
             format_pct(g["with_ties"]),
             f"{format_pct(g['without_ties'])} <span class=ci>n={g['n_without_ties']}</span>",
             "&ndash;" if g["kappa"] is None else format(g["kappa"], ".3f"), g["n_null"]] for g in agreement]
    return (html_table(["models", "judge 1", "judge 2", "shared prompts", "tie-discounted accuracy",
                        "agreement w/ ties", "w/o ties", "Cohen's &kappa;", "unparsed"], rows, text_cols=3)
            + "<p class=note>Tie-discounted accuracy (LIMA): 1 for the same verdict, 0.5 when exactly one judge says "
            "tie, 0 for opposite verdicts. Agreement w/o ties counts only prompts where both judges picked a side "
            "(MT-Bench). &kappa; uses the three classes a / tie / b.</p>")


def agreement_section(summary: dict[str, Any]) -> str:
    pairs, pa = summary["agreement"], summary.get("pooled_agreement") or {"rows": []}
    if not pairs and not pa["rows"]:
        body = ("<p class=note>No model pair was judged by two judges on the same prompts, so there is nothing to "
                "compare. Judge the same generations with a second judge (or a human annotator) to see agreement.</p>")
    else:
        body = pooled_table(pa) if pa["rows"] else ""
        shown = sorted(pairs, key=lambda g: -g["n"])[:MAX_PAIR_ROWS] if len(pairs) > MAX_PAIR_ROWS else pairs
        if pairs:
            body += "<h3>Per judge pair</h3>" + _pair_table(shown)
        if len(shown) < len(pairs):
            body += (f"<p class=note>The {len(shown)} judge pairs with the most shared prompts of {len(pairs)}; "
                     "report.json holds every one.</p>")
    return f"<section><h2>Judge agreement</h2>{body}</section>"
