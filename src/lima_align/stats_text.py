"""The terminal text of `lima-align stats`: plain tables of a stats.summarize() result.

Compact by default, so that thousands of votes by dozens of people fit in a few screens: beyond 30 comparisons,
where people were pooled for a model pair (pooled.py), the rows of each single person for that pair are left out
(the pooled row stands for them; --full prints them), and judge-pair agreement rows only come with --by-pair. The JSON
(`stats --json`, report.json) always holds every row.
"""

from __future__ import annotations

from typing import Any

from .agreement import format_agreement
from .intervals import SMALL_SAMPLE
from .pooled import compact_pairwise, format_pooled
from .stats import short_judge
from .text_tables import num, pct, pct_ci, text_table


def format_summary(summary: dict[str, Any], *, full: bool = False, by_pair: bool = False) -> str:
    """Plain-text tables of a summarize() result (compact unless full; judge-pair rows only with by_pair)."""
    parts = [f"{summary['n_records']} judgment records"]
    pw, left_out = (summary["pairwise"], 0) if full else compact_pairwise(summary)
    if left_out:
        parts.append(f"{left_out} rows of single people left out below: their model pairs have a pooled people "
                     "row (--full prints them; --json and report.json hold them all)")
    if pw:
        rows = [[p["label"] + (" *" if p.get("interval") == SMALL_SAMPLE else ""), str(p["n"]),
                 *(pct_ci(p["rates"][k]) for k in ("a", "tie", "b")), str(p["counts"]["null"]),
                 pct_ci(p["rates"]["score"]), num(p["sign_test"]["p_value"], ".4g")] for p in pw]
        small = any(p.get("interval") == SMALL_SAMPLE for p in pw)
        parts.append("win rates (a vs b, 95% bootstrap CI over prompts; score = wins + ties/2)"
                     + (f"\n* {SMALL_SAMPLE}" if small else "") + "\n" + text_table(
            ["comparison", "n", "a wins", "tie", "b wins", "null", "score", "sign p"], rows))
        rows = []
        for p in pw:
            pos, ln = p["position"], p["length"]
            lc = ln["length_controlled"]
            rows.append([p["label"], pct(pos["consistency"]), pct(pos["first_position_share"]),
                         pct(ln["longer_wins_share"]),
                         pct(lc["raw_win_share"]) if lc else "-",
                         pct_ci(lc["win_share_at_equal_length"]) if lc else "-"])
        parts.append("biases (consistency across orders; shares among decisive verdicts; 'at equal length' is our "
                     "per-comparison logistic fit, not AlpacaEval 2's length-controlled win rate)\n" + text_table(
            ["comparison", "consistent", "1st pos wins", "longer wins", "a share", "a share at equal length"],
            rows))
        rows = []
        for p in pw:
            pa = p["power"]
            needed = ", ".join(f"{round(100 * t['win_share'])}%: {t['prompts'] or t['decisive_prompts']}"
                               for t in pa["needed"])
            rows.append([p["label"], str(pa["n_decisive"]), pct(pa["minimum_detectable_share"]), needed])
        parts.append("power (sign test, alpha 0.05, power 0.8; prompts at the observed tie share)\n" + text_table(
            ["comparison", "decisive", "detects >=", "prompts needed for a win share of"], rows))
    if summary["agreement"] and by_pair:
        rows = [[f"{g['model_a']} vs {g['model_b']}", f"{short_judge(g['judge_1'])} ~ {short_judge(g['judge_2'])}",
                 str(g["n"]), pct(g["tie_discounted_accuracy"]), pct(g["with_ties"]),
                 f"{pct(g['without_ties'])} (n={g['n_without_ties']})", num(g["kappa"])]
                for g in summary["agreement"]]
        parts.append("judge agreement, per judge pair and model pair\n" + text_table(
            ["models", "judges", "n", "tie-discounted", "w/ ties", "w/o ties", "kappa"], rows))
    elif summary["agreement"]:
        parts.append(f"{len(summary['agreement'])} judge-pair agreement rows (judge pairs that share a prompt): "
                     "--by-pair prints them")
    if summary["absolute"]:
        rows = []
        for a in summary["absolute"]:
            dist = ", ".join(f"{k} {pct(v['value'])}" for k, v in a["shares"].items())
            extra = pct_ci(a["pass_or_better"]) if "pass_or_better" in a else num(a["mean"]["value"], ".2f") + (
                f" [{num(a['mean']['ci'][0], '.2f')}, {num(a['mean']['ci'][1], '.2f')}]")
            rows.append([a["label"], a["scale"], str(a["n"]), str(a["null"]), dist, extra])
        parts.append("absolute ratings (pass or better / mean score, 95% CI)\n" + text_table(
            ["model (judge)", "scale", "n", "null", "distribution", "pass+ / mean"], rows))
    if summary.get("pooled"):
        parts += format_pooled(summary["pooled"])
    if summary.get("pooled_agreement") and summary["pooled_agreement"]["rows"]:
        parts.append(format_agreement(summary["pooled_agreement"]))
    return "\n\n".join(parts)
