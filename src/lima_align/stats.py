"""Numbers over judgment records: win rates with CIs, significance, judge agreement, biases, power.

Everything here is a pure function over lists of judgment records (the JSONL format written by
judge.py and the annotation app, see EVAL_SPEC.md) and returns plain JSON-able dicts, so the CLI,
the report and tests all read the same numbers.

Conventions:
- A *comparison* is one unordered pair of models judged by one judge. Its orientation (which
  model is "a") is the one of the first record read; records written the other way round are
  flipped on load, so "a" always means the same model within a comparison.
- The unit of resampling is the prompt: each prompt contributes one judgment per comparison, and
  bootstrap CIs resample prompts with replacement (seeded, percentile intervals).
- A null verdict or score (the judge's text could not be parsed) is never dropped silently: it is
  counted under "null", and rates are shares of the parsed judgments, with the null count beside them.
- Answer length is measured in characters of the output text (tokenizer-free, so every judge and
  model is measured the same way).

Pieces with their own modules, re-exported here: verdicts.py (labels, scales, sign test, kappa), intervals.py
(bootstrap pieces, Wilson, Newcombe), length_bias.py, power.py; pooled.py and agreement.py build on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from .errors import LimaError, Problem, ProblemList
from .intervals import (  # noqa: F401  (Z95, wilson and newcombe re-exported: other modules import them here)
    BOOTSTRAP_RATES, SMALL_SAMPLE, Z95, nan_ratio, newcombe, percentile_ci, resample_idx, small_sample, wilson,
    wilson_rates)
from .jsonl import read_jsonl
from .length_bias import LENGTH_BUCKETS, fit_logistic, length_bias  # noqa: F401  (re-exported)
from .power import (  # noqa: F401  (re-exported)
    POWER_TARGETS, minimum_detectable_share, power_analysis, sign_test_sample_size)
from .verdicts import FPE, ORDERS, SCALES, VERDICTS, cohen_kappa, short_judge, sign_test  # noqa: F401  (re-exported)

MAX_LISTED_PROBLEMS = 30  # a wholly wrong file would otherwise print one problem per line

Record = dict[str, Any]

# ----------------------------------------------------------------- reading


def _check_str(r: Record, key: str, where: str, problems: ProblemList, fix: str) -> None:
    if not isinstance(r.get(key), str) or not r[key]:
        got = "missing" if key not in r else f"got {r[key]!r}"[:80]
        problems.add(f"{where} {key}", f"needs a non-empty string ({got})", fix)


def _check_verdict(v: Any, where: str, problems: ProblemList) -> None:
    if v is not None and v not in VERDICTS:
        problems.add(where, f"unknown verdict {v!r}",
                     'use "a", "b", "tie", or null when the judge text was unparseable')


def _check_pairwise(r: Record, where: str, problems: ProblemList) -> None:
    for key in ("prompt_id", "model_a", "model_b", "judge"):
        _check_str(r, key, where, problems, "judgment files are written by `lima-align judge`; rejudge or fix the line")
    for key in ("output_a", "output_b"):
        if not isinstance(r.get(key), str):
            problems.add(f"{where} {key}", "needs the answer text as a string",
                         "write the model's output (\"\" if empty)")
    if isinstance(r.get("model_a"), str) and r.get("model_a") == r.get("model_b"):
        problems.add(f"{where} model_b", f"compares {r['model_a']!r} with itself",
                     "give the two generation files distinct model labels")
    if "verdict" not in r:
        problems.add(f"{where} verdict", "missing", 'add "verdict": "a" | "b" | "tie" | null')
    else:
        _check_verdict(r["verdict"], f"{where} verdict", problems)
    votes = r.get("votes", [])
    if not isinstance(votes, list):
        problems.add(f"{where} votes", f"expected a list, got {type(votes).__name__}",
                     'write "votes": [{"order": "ab", "raw": "...", "verdict": "a"}, ...]')
        return
    seen = set()
    for i, v in enumerate(votes):
        here = f"{where} votes[{i}]"
        if not isinstance(v, dict):
            problems.add(here, "each vote must be an object", '{"order": "ab"|"ba", "raw": str, "verdict": ...}')
            continue
        if v.get("order") not in ORDERS:
            problems.add(f"{here}.order", f"expected \"ab\" or \"ba\", got {v.get('order')!r}",
                         '"ab" = output_a was shown first, "ba" = output_b was shown first')
        elif v["order"] in seen:
            problems.add(f"{here}.order", f"order {v['order']!r} appears twice", "keep one vote per presentation order")
        else:
            seen.add(v["order"])
        if "verdict" not in v:
            problems.add(f"{here}.verdict", "missing", 'add the verdict in terms of the original a/b, or null')
        else:
            _check_verdict(v["verdict"], f"{here}.verdict", problems)
    if "consistent" in r and r["consistent"] not in (True, False, None):
        problems.add(f"{where} consistent", f"expected true, false or null, got {r['consistent']!r}",
                     "recompute it from votes")


def _check_absolute(r: Record, where: str, problems: ProblemList) -> None:
    for key in ("prompt_id", "model", "judge"):
        _check_str(r, key, where, problems, "judgment files are written by `lima-align judge`; rejudge or fix the line")
    if not isinstance(r.get("output"), str):
        problems.add(f"{where} output", "needs the answer text as a string", "write the model's output (\"\" if empty)")
    scale = r.get("scale")
    if scale not in SCALES:
        problems.add(f"{where} scale", f"unknown scale {scale!r}", f"use one of {', '.join(SCALES)}")
        return
    score = r.get("score")
    if "score" not in r:
        problems.add(f"{where} score", "missing", "add the score, or null when the judge text was unparseable")
    elif score is not None and (isinstance(score, bool) or score not in SCALES[scale]):
        allowed = ", ".join(map(str, SCALES[scale]))
        problems.add(f"{where} score", f"{score!r} is not on the {scale} scale", f"use one of {allowed}, or null")


def read_judgments(path: str | Path) -> list[Record]:
    """Read one judgments JSONL file, checking every record; all problems are reported at once with file:line.

    Each returned record carries "_where" ("file:line") so later messages can point back at it.
    """
    problems = ProblemList()
    out = []
    for n, r in read_jsonl(path):
        where = f"{path}:{n}"
        kind = r.get("type")
        if kind == "pairwise":
            _check_pairwise(r, where, problems)
        elif kind == "absolute":
            _check_absolute(r, where, problems)
        else:
            problems.add(f"{where} type", f"expected \"pairwise\" or \"absolute\", got {kind!r}",
                         "this line is not a judgment record; was a generations file passed by mistake?")
        if len(problems.problems) >= MAX_LISTED_PROBLEMS:
            problems.add(str(path), f"stopped after {MAX_LISTED_PROBLEMS} problems",
                         "fix these and rerun to see the rest")
            break
        out.append({**r, "_where": where})
    problems.raise_if_any()
    if not out:  # "0 judgment records" would read as a result
        raise LimaError(Problem(str(path), "holds no judgment records",
                                "judge first, e.g. `lima-align judge pairwise A.jsonl B.jsonl --judge longest "
                                f"--output {path}`; a judge run killed before its first judgment leaves an empty file"))
    return out


def _key(r: Record) -> tuple:
    """What one judgment is about: the same judge on the same prompt and the same model(s)."""
    if r["type"] == "pairwise":
        return ("pairwise", r["judge"], r["prompt_id"], frozenset((r["model_a"], r["model_b"])))
    return ("absolute", r["judge"], r["prompt_id"], r["model"], r["scale"])


def load_judgments(paths: Sequence[str | Path]) -> list[Record]:
    """Read and check several files. A record whose id was already read (the same file passed twice)
    is kept once; two *different* judgments of the same item by the same judge are an error, because
    counting both would weigh that prompt twice."""
    out: list[Record] = []
    seen_ids: set[str] = set()
    by_key: dict[tuple, Record] = {}
    problems = ProblemList()
    for path in paths:
        for r in read_judgments(path):
            rid = r.get("id")
            if isinstance(rid, str) and rid in seen_ids:
                continue
            k = _key(r)
            if k in by_key:
                problems.add(r["_where"], f"judge {r['judge']!r} already judged prompt {r['prompt_id']!r} for these "
                             f"models at {by_key[k]['_where']}",
                             "pass only one of the two judgment files (e.g. one per instruction set), "
                             "or delete one line")
                continue
            if isinstance(rid, str):
                seen_ids.add(rid)
            by_key[k] = r
            out.append(r)
    problems.raise_if_any()
    return out


# ----------------------------------------------------------------- grouping

FLIP = {"a": "b", "b": "a", "tie": "tie", None: None}


def flip(r: Record) -> Record:
    """The same pairwise judgment with the roles of a and b swapped (verdicts and orders follow)."""
    out = dict(r, model_a=r["model_b"], model_b=r["model_a"], output_a=r["output_b"], output_b=r["output_a"],
               verdict=FLIP[r.get("verdict")])
    out["votes"] = [dict(v, order="ba" if v.get("order") == "ab" else "ab", verdict=FLIP[v.get("verdict")])
                    for v in r.get("votes", [])]
    return out


def comparisons(records: Sequence[Record]) -> list[dict[str, Any]]:
    """Group pairwise records into comparisons (model pair x judge), all oriented the same way.

    Returns [{"model_a", "model_b", "judge", "records": [...]}] in first-seen order; the orientation of a
    model pair is taken from the first record of that pair, whichever judge wrote it.
    """
    orientation: dict[frozenset, tuple[str, str]] = {}
    groups: dict[tuple, dict[str, Any]] = {}
    for r in records:
        if r.get("type") != "pairwise":
            continue
        pair = frozenset((r["model_a"], r["model_b"]))
        a, b = orientation.setdefault(pair, (r["model_a"], r["model_b"]))
        rr = r if r["model_a"] == a else flip(r)
        g = groups.setdefault((a, b, r["judge"]), {"model_a": a, "model_b": b, "judge": r["judge"], "records": []})
        g["records"].append(rr)
    return list(groups.values())


def comparison_label(model_a: str, model_b: str, judge: str) -> str:
    return f"{model_a} vs {model_b} ({short_judge(judge)})"


# ----------------------------------------------------------------- bootstrap and tests


def _estimate(value: float | None, ci: list[float | None]) -> dict[str, Any]:
    return {"value": value, "ci": ci}


def verdict_counts(verdicts: Sequence[str | None]) -> dict[str, int]:
    counts = {"a": 0, "tie": 0, "b": 0, "null": 0}
    for v in verdicts:
        counts["null" if v is None else v] += 1
    return counts


def win_rates(verdicts: Sequence[str | None], *, n_boot: int = 2000, seed: int = 0,
              confidence: float = 0.95) -> dict[str, Any]:
    """Win/tie/loss shares of model a over b, one verdict per prompt, with bootstrap CIs and a sign test.

    Shares are over parsed verdicts (n_parsed); nulls are counted, never dropped silently. Besides the three
    shares: "a_or_tie" (LIMA's "as good or better") and "score" = (wins + ties/2) / n_parsed, the
    preference probability where 0.5 means no preference. Where the bootstrap collapses (every parsed verdict
    alike, or fewer than 20 decisive prompts) the intervals are Wilson's instead, and "interval" says so.
    """
    counts = verdict_counts(verdicts)
    n_parsed = counts["a"] + counts["tie"] + counts["b"]
    small = small_sample(counts)
    if small:  # the bootstrap collapses (all alike) or is too ragged (few decisive prompts): Wilson, no resampling
        rates = wilson_rates(counts)
    else:
        codes = np.array([{"a": 0, "tie": 1, "b": 2, None: 3}[v] for v in verdicts], dtype=np.int64)
        boot = codes[resample_idx(len(codes), n_boot, seed)]
        bw, bt, bl = ((boot == c).sum(axis=1) for c in range(3))
        bn = bw + bt + bl
        point = {"a": counts["a"], "tie": counts["tie"], "b": counts["b"]}

        def est(num: float, boot_num: np.ndarray) -> dict[str, Any]:
            return _estimate(num / n_parsed if n_parsed else None,
                             percentile_ci(nan_ratio(boot_num, bn), confidence))

        rates = {"a": est(point["a"], bw), "tie": est(point["tie"], bt), "b": est(point["b"], bl),
                 "a_or_tie": est(point["a"] + point["tie"], bw + bt),
                 "score": est(point["a"] + point["tie"] / 2, bw + bt / 2)}
        if n_parsed:  # a share of 0 or 1 cannot move in the bootstrap either: Wilson for that share
            ws = wilson_rates(counts)
            rates = {k: ws[k] if e["value"] in (0.0, 1.0) else e for k, e in rates.items()}
    return {"n": len(verdicts), "n_parsed": n_parsed, "counts": counts,
            "interval": SMALL_SAMPLE if small else BOOTSTRAP_RATES,
            "null_share": counts["null"] / len(verdicts) if verdicts else None, "rates": rates,
            "sign_test": {"wins": counts["a"], "losses": counts["b"], "p_value": sign_test(counts["a"], counts["b"]),
                          "test": "two-sided exact sign test on non-tie prompts"},
            "bootstrap": {"n_boot": n_boot, "seed": seed, "confidence": confidence, "unit": "prompt"}}


# ----------------------------------------------------------------- agreement


def agreement(x: Sequence[str | None], y: Sequence[str | None]) -> dict[str, Any]:
    """Agreement between two raters on the same items (x[i] and y[i] judge item i).

    - tie_discounted_accuracy (LIMA): 1 when equal, 0.5 when exactly one of the two says tie, 0 otherwise.
    - with_ties: share of identical labels over all items (MT-Bench's "w/ tie").
    - without_ties: share of identical labels over items where *both* gave a non-tie (MT-Bench's "w/o tie").
    - kappa: Cohen's kappa with the three classes a / tie / b.
    Items where either label is null are left out and counted in n_null.
    """
    pairs = [(u, v) for u, v in zip(x, y, strict=True) if u is not None and v is not None]
    n = len(pairs)
    decisive = [(u, v) for u, v in pairs if u != "tie" and v != "tie"]

    def tda(u: str, v: str) -> float:
        return 1.0 if u == v else 0.5 if (u == "tie") != (v == "tie") else 0.0

    return {"n": n, "n_null": len(x) - n,
            "tie_discounted_accuracy": sum(tda(u, v) for u, v in pairs) / n if n else None,
            "with_ties": sum(u == v for u, v in pairs) / n if n else None,
            "n_without_ties": len(decisive),
            "without_ties": sum(u == v for u, v in decisive) / len(decisive) if decisive else None,
            "kappa": cohen_kappa([u for u, _ in pairs], [v for _, v in pairs])}


def judge_agreement(comps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Agreement for every pair of judges that judged the same model pair, on the prompts both judged."""
    by_pair: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for c in comps:
        by_pair.setdefault((c["model_a"], c["model_b"]), []).append(c)
    out = []
    for (a, b), cs in by_pair.items():
        for c1, c2 in combinations(cs, 2):
            v1 = {r["prompt_id"]: r["verdict"] for r in c1["records"]}
            v2 = {r["prompt_id"]: r["verdict"] for r in c2["records"]}
            common = [p for p in v1 if p in v2]
            out.append({"model_a": a, "model_b": b, "judge_1": c1["judge"], "judge_2": c2["judge"],
                        **agreement([v1[p] for p in common], [v2[p] for p in common])})
    return out


# ----------------------------------------------------------------- position bias


def vote_pair(r: Record) -> tuple[str | None, str | None]:
    """(verdict when a was shown first, verdict when b was shown first); None where that order is absent."""
    by_order = {v.get("order"): v.get("verdict") for v in r.get("votes", [])}
    return by_order.get("ab"), by_order.get("ba")


def is_consistent(r: Record) -> bool | None:
    """Did both presentation orders give the same verdict? None when either order is missing or unparsed."""
    first, second = vote_pair(r)
    if first is None or second is None:
        return r.get("consistent") if not r.get("votes") else None
    return first == second


def position_bias(records: Sequence[Record]) -> dict[str, Any]:
    """Position consistency and first-position preference of one judge.

    consistency: share of prompts where both orders (ab, ba) gave the same verdict, over prompts with
    both votes parsed. first_position_wins: among decisive votes (a or b), the share won by the answer shown
    first; 0.5 means no position preference, with a two-sided sign test against 0.5.
    """
    flags = [is_consistent(r) for r in records]
    judged = [f for f in flags if f is not None]
    first = second = 0
    for r in records:
        for v in r.get("votes", []):
            if v.get("verdict") in ("a", "b"):
                shown_first = "a" if v.get("order") == "ab" else "b"
                if v["verdict"] == shown_first:
                    first += 1
                else:
                    second += 1
    return {"n_pairs": len(judged), "consistent": sum(judged),
            "consistency": sum(judged) / len(judged) if judged else None,
            "n_decisive_votes": first + second, "first_position_wins": first,
            "first_position_share": first / (first + second) if first + second else None,
            "first_position_p_value": sign_test(first, second)}


# ----------------------------------------------------------------- absolute ratings


def rating_shares(scores: Sequence[Any], scale: str, *, n_boot: int = 2000, seed: int = 0,
                  confidence: float = 0.95) -> dict[str, Any]:
    """Distribution of absolute scores for one model and judge, with bootstrap CIs over prompts.

    shares: for each scale value, the share of parsed scores (nulls counted apart). For helpfulness_6 also
    the mean score with a CI. For fail_pass_excellent, "pass_or_better" (LIMA reports ~88% for LIMA).
    """
    values = SCALES[scale]
    codes = np.array([len(values) if s is None else values.index(s) for s in scores], dtype=np.int64)
    idx = resample_idx(len(codes), n_boot, seed)
    boot = codes[idx]
    bcounts = np.stack([(boot == i).sum(axis=1) for i in range(len(values))], axis=1)  # (B, k)
    bn = bcounts.sum(axis=1)
    counts = np.array([(codes == i).sum() for i in range(len(values))])
    n_parsed = int(counts.sum())
    out: dict[str, Any] = {"scale": scale, "n": len(scores), "n_parsed": n_parsed, "null": len(scores) - n_parsed,
                           "counts": {str(v): int(c) for v, c in zip(values, counts, strict=True)}, "shares": {}}
    for i, v in enumerate(values):
        out["shares"][str(v)] = _estimate(counts[i] / n_parsed if n_parsed else None,
                                          percentile_ci(nan_ratio(bcounts[:, i], bn), confidence))
    if scale == "fail_pass_excellent":
        out["pass_or_better"] = _estimate((counts[1] + counts[2]) / n_parsed if n_parsed else None,
                                          percentile_ci(nan_ratio(bcounts[:, 1] + bcounts[:, 2], bn), confidence))
    else:
        weights = np.array(values, dtype=float)
        out["mean"] = _estimate(float(counts @ weights / n_parsed) if n_parsed else None,
                                percentile_ci(nan_ratio(bcounts @ weights, bn), confidence))
    return out


def ratings(records: Sequence[Record], *, n_boot: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """rating_shares for every (model, judge, scale) among the absolute records, in first-seen order."""
    groups: dict[tuple, list[Any]] = {}
    for r in records:
        if r.get("type") == "absolute":
            groups.setdefault((r["model"], r["judge"], r["scale"]), []).append(r["score"])
    return [{"model": m, "judge": j, "label": f"{m} ({short_judge(j)})",
             **rating_shares(s, scale, n_boot=n_boot, seed=seed)} for (m, j, scale), s in groups.items()]


# ----------------------------------------------------------------- everything at once


def summarize(records: Sequence[Record], *, n_boot: int = 2000, seed: int = 0,
              groups: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """All statistics for a set of judgment records (see load_judgments), as one JSON-able dict:
    {"n_records", "pairwise": [per comparison], "agreement": [per judge pair that shares a prompt],
    "absolute": [per model x judge]}, plus "pooled": {"pairwise", "absolute"} with the "people" rows where two or
    more people judged the same model pair or model (see pooled.py), and "pooled_agreement" between groups of
    judges (agreement.py; groups: (name prefix, group name) pairs)."""
    comps = comparisons(records)
    pairwise = []
    for c in comps:
        rs = c["records"]
        wr = win_rates([r["verdict"] for r in rs], n_boot=n_boot, seed=seed)
        tie_share = wr["rates"]["tie"]["value"]
        pairwise.append({"label": comparison_label(c["model_a"], c["model_b"], c["judge"]),
                         "model_a": c["model_a"], "model_b": c["model_b"], "judge": c["judge"], **wr,
                         "position": position_bias(rs), "length": length_bias(rs, n_boot=n_boot, seed=seed),
                         "power": power_analysis(wr["counts"]["a"] + wr["counts"]["b"], tie_share)})
    out = {"n_records": len(records), "pairwise": pairwise,
           "agreement": [g for g in judge_agreement(comps) if g["n"]],  # most judge pairs share no prompt
           "absolute": ratings(records, n_boot=n_boot, seed=seed)}
    from .agreement import pooled_agreement  # imported here: both build on this module
    from .pooled import pool_people

    pooled = pool_people(records, comps, n_boot=n_boot, seed=seed)
    if pooled["pairwise"] or pooled["absolute"]:  # two or more people judged the same thing
        out["pooled"] = pooled
    if comps:
        out["pooled_agreement"] = pooled_agreement(records, groups, n_boot=n_boot, seed=seed)
    return out


def summarize_files(paths: Sequence[str | Path], *, n_boot: int = 2000, seed: int = 0,
                    groups: Sequence[tuple[str, str]] = ()) -> dict[str, Any]:
    """load_judgments + summarize, with the file list recorded."""
    out = summarize(load_judgments(paths), n_boot=n_boot, seed=seed, groups=groups)
    return {"files": [str(p) for p in paths], **out}

