"""People pooled: a "people" row per model pair and per model that two or more people judged.

LIMA reports its annotators' preferences pooled, not per rater. Where two or more human judges (judge
"human:<name>", as the annotation app exports them) judged the same model pair, or rated the same model on the
same scale, stats.summarize adds a pooled row (under "pooled"); the per-rater rows stay as they are.

- Every vote counts once: a prompt judged by two people contributes two votes.
- Votes on one prompt are correlated (the same two answers, read by people who often agree), so the 95%
  intervals come from a cluster bootstrap that resamples whole prompts: a prompt's votes move together. The
  draws are those of the per-rater bootstrap in stats (same seed, prompts in first-seen order), so people who all
  voted alike get exactly the interval of one of them, not a narrower one.
- The sign test is not run on the pooled votes (not independent). It runs on per-prompt majority verdicts: a
  prompt counts for a side when a strict majority of its parsed votes chose it; tie and split prompts are left out.
- Agreement: over prompts with at least two parsed ratings, the first two (judges in the order they were read):
  the share of identical pairs (Wilson interval, prompts are independent) and Cohen's kappa over those pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .intervals import MIN_DECISIVE, SMALL_SAMPLE, resample_idx, wilson, wilson_rates
from .text_tables import pct, pct_ci, text_table
from .verdicts import SCALES, VERDICTS, cohen_kappa, sign_test

PEOPLE = "people"
UNIT = "prompt (cluster bootstrap: all votes on a prompt are resampled together)"
MAJORITY_TEST = ("two-sided exact sign test on per-prompt majority verdicts (a prompt counts for a side when a strict "
                 "majority of its parsed votes chose it; tie and split prompts left out), not on the pooled votes, "
                 "which are correlated within a prompt")
AGREEMENT_METHOD = "first two parsed ratings of every prompt rated at least twice (judges in the order read)"

Record = dict[str, Any]


def is_person(judge: str) -> bool:
    return judge.startswith("human:")


def cluster_sums(per_prompt: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """(n_boot, k) column sums of per_prompt (prompts x k counts) over bootstrap replicates that draw whole rows
    (prompts) with replacement; the same draws as stats' per-prompt bootstrap for the same seed and prompt count."""
    return per_prompt[resample_idx(per_prompt.shape[0], n_boot, seed)].sum(axis=1)


def share(num: float, den: float, boot_num: np.ndarray, boot_den: np.ndarray,
          confidence: float = 0.95) -> dict[str, Any]:
    """num / den with the percentile interval of boot_num / boot_den (replicates with boot_den 0 ignored)."""
    keep = boot_den > 0
    samples = boot_num[keep] / boot_den[keep]
    tail = (1 - confidence) / 2 * 100
    ci = [float(x) for x in np.percentile(samples, [tail, 100 - tail])] if samples.size else [None, None]
    return {"value": float(num / den) if den else None, "ci": ci}


def first_two_agreement(ratings: Sequence[Sequence[Any]], labels: Sequence[Any]) -> dict[str, Any]:
    """Agreement of the first two ratings of each item (ratings: the parsed ratings of each item, in order)."""
    pairs = [(rs[0], rs[1]) for rs in ratings if len(rs) >= 2]
    same = sum(u == v for u, v in pairs)
    kappa = cohen_kappa([u for u, _ in pairs], [v for _, v in pairs], labels) if pairs else None
    note = None if kappa is not None else "one label" if pairs else "no prompt rated twice"
    return {"method": AGREEMENT_METHOD, "n": len(pairs), "n_more_than_two": sum(len(rs) > 2 for rs in ratings),
            "identical": same, "share": wilson(same, len(pairs)), "kappa": kappa, "kappa_note": note}


def _majority(votes: Sequence[Any], labels: Sequence[Any]) -> Any:
    """The label a strict majority of the votes chose, None when there is none."""
    return next((lab for lab in labels if votes.count(lab) * 2 > len(votes)), None)


def pooled_comparison(model_a: str, model_b: str, judges: list[str], by_prompt: dict[str, list[str | None]], *,
                      n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """One pooled pairwise row: by_prompt maps each prompt to all its votes (verdicts for model_a: a / tie / b /
    None), every vote counted once, intervals from the prompt-cluster bootstrap."""
    per = np.array([[vs.count("a"), vs.count("tie"), vs.count("b"), vs.count(None)] for vs in by_prompt.values()],
                   dtype=float).reshape(-1, 4)
    w, t, los, nul = (int(x) for x in per.sum(axis=0))
    n = w + t + los
    bw, bt, bl, _ = cluster_sums(per, n_boot, seed).T
    bn = bw + bt + bl

    def est(num: float, boot_num: np.ndarray, den: float = n, boot_den: np.ndarray = bn) -> dict[str, Any]:
        return share(num, den, boot_num, boot_den, confidence)

    parsed = [[v for v in vs if v is not None] for vs in by_prompt.values()]
    rates = {"a": est(w, bw), "tie": est(t, bt), "b": est(los, bl), "a_or_tie": est(w + t, bw + bt),
             "score": est(w + t / 2, bw + bt / 2)}
    decisive = {"a": w, "n": w + los, **est(w, bw, w + los, bw + bl)}
    rated = sum(bool(vs) for vs in parsed)
    deciding = sum(("a" in vs or "b" in vs) for vs in parsed)
    small = n > 0 and (max(w, t, los) == n or deciding < MIN_DECISIVE)
    if n:  # Wilson over prompts, not votes (a prompt's votes are correlated), where the bootstrap collapses
        ws = wilson_rates({"a": w, "tie": t, "b": los}, rated)
        rates = ws if small else {k: ws[k] if e["value"] in (0.0, 1.0) else e for k, e in rates.items()}
    if small or (w + los and (w == 0 or los == 0)):
        decisive = {"a": w, "n": w + los, "value": w / (w + los) if w + los else None,
                    "ci": wilson(w / (w + los) * deciding, deciding)["ci"] if w + los else [None, None]}
    majority = [_majority(vs, VERDICTS) for vs in parsed]
    mw, mt, ml = (majority.count(k) for k in VERDICTS)
    return {"label": f"{model_a} vs {model_b} ({PEOPLE})", "model_a": model_a, "model_b": model_b, "judge": PEOPLE,
            "raters": judges, "n_prompts": len(by_prompt), "n_votes": n + nul, "n_parsed": n,
            "counts": {"a": w, "tie": t, "b": los, "null": nul},
            "rates": rates, "decisive": decisive,
            "interval": SMALL_SAMPLE.replace("over prompts", "over prompts (n = prompts, not votes)") if small
            else UNIT + "; Wilson (n = prompts) for a share of 0% or 100%",
            "sign_test": {"wins": mw, "losses": ml, "ties": mt, "split": sum(bool(vs) for vs in parsed) - mw - mt - ml,
                          "p_value": sign_test(mw, ml), "test": MAJORITY_TEST},
            "agreement": first_two_agreement(parsed, VERDICTS),
            "bootstrap": {"n_boot": n_boot, "seed": seed, "confidence": confidence, "unit": UNIT}}


def pooled_rating(model: str, scale: str, judges: list[str], by_prompt: dict[str, list[Any]], *,
                  n_boot: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, Any]:
    """One pooled absolute row: label shares over all ratings (prompt-cluster bootstrap intervals) and, on the
    fail/pass/excellent scale, the share of prompts whose strict majority rating is pass or better."""
    values = SCALES[scale]
    per = np.array([[ss.count(v) for v in values] + [ss.count(None)] for ss in by_prompt.values()],
                   dtype=float).reshape(-1, len(values) + 1)
    counts = per.sum(axis=0)[:-1]
    n = float(counts.sum())
    boot = cluster_sums(per, n_boot, seed)[:, :-1]
    bn = boot.sum(axis=1)
    parsed = [[s for s in ss if s is not None] for ss in by_prompt.values()]
    out: dict[str, Any] = {
        "label": f"{model} ({PEOPLE})", "model": model, "judge": PEOPLE, "raters": judges, "scale": scale,
        "n_prompts": len(by_prompt), "n": int(per.sum()), "n_parsed": int(n), "null": int(per[:, -1].sum()),
        "counts": {str(v): int(c) for v, c in zip(values, counts, strict=True)},
        "shares": {str(v): share(counts[i], n, boot[:, i], bn, confidence) for i, v in enumerate(values)}}
    if scale == "fail_pass_excellent":
        out["pass_or_better"] = share(counts[1] + counts[2], n, boot[:, 1] + boot[:, 2], bn, confidence)
        rated = [ss for ss in parsed if ss]
        k = sum(2 * (len(ss) - ss.count("fail")) > len(ss) for ss in rated)  # a tie (1 fail, 1 pass) is not
        out["majority_pass_or_better"] = {"prompts": k, "n": len(rated), **wilson(k, len(rated)),
                                          "interval": "Wilson, over prompts"}
    else:
        w = np.array(values, dtype=float)
        out["mean"] = share(float(counts @ w), n, boot @ w, bn, confidence)
    out["agreement"] = first_two_agreement(parsed, values)
    out["bootstrap"] = {"n_boot": n_boot, "seed": seed, "confidence": confidence, "unit": UNIT}
    return out


def pool_people(records: Sequence[Record], comps: Sequence[dict[str, Any]], *, n_boot: int = 2000,
                seed: int = 0) -> dict[str, Any]:
    """Pooled rows for every model pair (comps: stats.comparisons, oriented alike) and every (model, scale) that
    two or more people judged: {"pairwise": [...], "absolute": [...]}, in first-seen order."""
    pairs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in comps:
        if is_person(c["judge"]):
            pairs.setdefault((c["model_a"], c["model_b"]), []).append(c)
    pairwise = []
    for (a, b), cs in pairs.items():
        if len(cs) > 1:
            votes: dict[str, list[str | None]] = {}
            for c in cs:
                for r in c["records"]:
                    votes.setdefault(r["prompt_id"], []).append(r.get("verdict"))
            pairwise.append(pooled_comparison(a, b, [c["judge"] for c in cs], votes, n_boot=n_boot, seed=seed))
    rated: dict[tuple[str, str], dict[str, list[Record]]] = {}
    for r in records:
        if r.get("type") == "absolute" and is_person(r["judge"]):
            rated.setdefault((r["model"], r["scale"]), {}).setdefault(r["judge"], []).append(r)
    absolute = []
    for (model, scale), by_judge in rated.items():
        if len(by_judge) > 1:
            scores: dict[str, list[Any]] = {}
            for rs in by_judge.values():
                for r in rs:
                    scores.setdefault(r["prompt_id"], []).append(r.get("score"))
            absolute.append(pooled_rating(model, scale, list(by_judge), scores, n_boot=n_boot, seed=seed))
    return {"pairwise": pairwise, "absolute": absolute}


COLLAPSE_OVER = 30  # comparison rows; fewer fit on a screen as they are


def compact_pairwise(summary: dict[str, Any]) -> tuple[list[dict[str, Any]], int]:
    """(the comparisons to show, how many were left out): with more than COLLAPSE_OVER comparisons, a single
    person's comparison is left out where a pooled people row covers its model pair, unless nothing would be left."""
    rows = summary["pairwise"]
    pooled = {(p["model_a"], p["model_b"]) for p in (summary.get("pooled") or {}).get("pairwise", [])}
    keep = [p for p in rows if not (is_person(p["judge"]) and (p["model_a"], p["model_b"]) in pooled)]
    if len(rows) <= COLLAPSE_OVER or not keep:
        return rows, 0
    return keep, len(rows) - len(keep)


def _kappa(g: dict[str, Any]) -> str:
    return f"n/a ({g['kappa_note']})" if g["kappa"] is None else f"{g['kappa']:.3f}"


def format_pooled(pooled: dict[str, Any]) -> list[str]:
    """Plain-text tables of pool_people's rows, one string per table."""
    parts = []
    pw, ab = pooled.get("pairwise", []), pooled.get("absolute", [])
    if pw:
        wilson_rows = [p["interval"] for p in pw if p["interval"].startswith("Wilson")]
        rows = [[p["label"] + (" *" if p["interval"].startswith("Wilson") else ""), str(len(p["raters"])),
                 str(p["n_prompts"]), str(p["n_votes"]), str(p["counts"]["null"]),
                 *(pct_ci(p["rates"][k]) for k in ("a", "tie", "b", "score")),
                 f"{p['decisive']['a']} of {p['decisive']['n']}: {pct_ci(p['decisive'])}",
                 f"{p['sign_test']['p_value']:.4g} ({p['sign_test']['wins']}-{p['sign_test']['losses']})"]
                for p in pw]
        parts.append(
            "people pooled: every vote of every person counts once (a prompt rated by two people gives two votes); "
            "95% CIs from a cluster bootstrap that resamples whole prompts, because votes on one prompt are "
            "correlated. Sign test on per-prompt majority verdicts (strict majority; tie and split prompts left "
            "out), not on the pooled votes" + (f"\n* {wilson_rows[0]}" if wilson_rows else "") + "\n" + text_table(
                ["comparison", "raters", "prompts", "votes", "null", "a wins", "tie", "b wins", "score",
                 "a preferred in k of n decisive votes", "majority sign p (a-b prompts)"], rows))
    for scale in dict.fromkeys(a["scale"] for a in ab):
        values = SCALES[scale]
        fpe = scale == "fail_pass_excellent"
        rows = []
        for a in (a for a in ab if a["scale"] == scale):
            m = a.get("majority_pass_or_better")
            extra = [pct_ci(a["pass_or_better"]), f"{m['prompts']} of {m['n']}: {pct_ci(m)}"] if fpe else [
                f"{a['mean']['value']:.2f}" if a["mean"]["value"] is not None else "-"]
            rows.append([a["label"], str(len(a["raters"])), str(a["n_prompts"]), str(a["n"]), str(a["null"]),
                         *(pct_ci(a["shares"][str(v)]) for v in values), *extra])
        tail = ["pass+ (ratings)", "majority pass+ (prompts)"] if fpe else ["mean"]
        parts.append(
            f"absolute ratings, people pooled ({scale}): shares of all ratings, 95% cluster bootstrap CIs over "
            "prompts" + ("; majority pass+ = prompts where a strict majority of ratings is pass or excellent "
                         "(ties count as not), Wilson CI" if fpe else "") + "\n"
            + text_table(["model (judge)", "raters", "prompts", "ratings", "null", *map(str, values), *tail], rows))
    rows = [[p["label"], str(p["agreement"]["n"]), str(p["agreement"]["n_more_than_two"]),
             f"{p['agreement']['identical']} ({pct(p['agreement']['share']['value'])})", _kappa(p["agreement"])]
            for p in [*pw, *ab]]
    if rows:
        parts.append("agreement between people, pooled: per prompt rated at least twice, its first two parsed "
                     "ratings\n" + text_table(["comparison / model", "prompts", "more than 2", "identical", "kappa"],
                                               rows))
    return parts
