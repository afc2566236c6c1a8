"""Statistics over judgment records: every expected number below is worked out by hand in the comments."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from lima_align.errors import LimaError
from lima_align.stats import (
    agreement,
    cohen_kappa,
    comparisons,
    fit_logistic,
    judge_agreement,
    length_bias,
    load_judgments,
    minimum_detectable_share,
    position_bias,
    power_analysis,
    rating_shares,
    read_judgments,
    sign_test,
    sign_test_sample_size,
    summarize,
    wilson,
    win_rates,
)
from lima_align.stats_text import format_summary


def pw(pid: str, verdict: str | None, *, votes: tuple = ("same",), a: str = "aligned", b: str = "base",
       judge: str = "j1", out_a: str = "answer a", out_b: str = "answer b") -> dict:
    """A pairwise record; votes=("same",) means both orders gave `verdict`."""
    if votes == ("same",):
        votes = (verdict, verdict)
    vs = [{"order": o, "raw": f"[[{v}]]", "verdict": v} for o, v in zip(("ab", "ba"), votes) if o]
    return {"id": f"{judge}:{pid}:{a}:{b}", "type": "pairwise", "prompt_id": pid,
            "prompt": [{"role": "user", "content": f"question {pid}"}], "model_a": a, "model_b": b,
            "output_a": out_a, "output_b": out_b, "judge": judge,
            "instructions": {"name": "pairwise", "sha256": "0" * 64}, "votes": vs, "verdict": verdict,
            "consistent": None, "usage": {"prompt_tokens": 1, "completion_tokens": 1, "cost_usd": None}, "created": 0.0}


def ab(pid: str, score, *, model: str = "aligned", judge: str = "j1", scale: str = "fail_pass_excellent") -> dict:
    return {"id": f"abs:{judge}:{model}:{pid}:{scale}", "type": "absolute", "prompt_id": pid, "prompt": [],
            "model": model, "output": "x", "judge": judge, "instructions": {}, "scale": scale, "raw": str(score),
            "score": score, "usage": {}, "created": 0.0}


def write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# ----------------------------------------------------------------- sign test and rates


def test_sign_test_exact_values():
    # n = 10 decisive, k = min(8, 2) = 2: P(X <= 2) = (C(10,0) + C(10,1) + C(10,2)) / 2^10 = 56/1024;
    # two-sided doubles it: 112/1024 = 0.109375.
    assert sign_test(8, 2) == pytest.approx(0.109375, abs=1e-12)
    assert sign_test(2, 8) == sign_test(8, 2)
    # 10-0: 2 * 1/1024
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    # a balanced split is as unsurprising as it gets; no decisive prompts means no evidence
    assert sign_test(5, 5) == 1.0
    assert sign_test(0, 0) == 1.0
    # large n stays finite and exact enough (big-int sum): 600 vs 400 is overwhelming
    assert 0 < sign_test(600, 400) < 1e-9


def test_win_rates_counts_shares_and_nulls():
    verdicts = ["a"] * 5 + ["tie"] * 3 + ["b"] * 2 + [None]
    r = win_rates(verdicts, n_boot=500, seed=1)
    # 11 prompts, 10 parsed: a 5/10, tie 3/10, b 2/10; a-or-tie 8/10; score (5 + 3/2)/10 = 0.65
    assert r["n"] == 11 and r["n_parsed"] == 10
    assert r["counts"] == {"a": 5, "tie": 3, "b": 2, "null": 1}
    assert r["null_share"] == pytest.approx(1 / 11)
    assert r["rates"]["a"]["value"] == pytest.approx(0.5)
    assert r["rates"]["tie"]["value"] == pytest.approx(0.3)
    assert r["rates"]["b"]["value"] == pytest.approx(0.2)
    assert r["rates"]["a_or_tie"]["value"] == pytest.approx(0.8)
    assert r["rates"]["score"]["value"] == pytest.approx(0.65)
    # sign test on the 5 wins vs 2 losses: 2 * (1 + 7 + 21) / 128 = 58/128
    assert r["sign_test"]["p_value"] == pytest.approx(58 / 128)
    for key, est in r["rates"].items():
        lo, hi = est["ci"]
        assert lo <= est["value"] <= hi, key


def test_bootstrap_ci_narrows_with_more_prompts_and_is_seeded():
    small = ["a"] * 6 + ["tie"] * 2 + ["b"] * 2
    big = small * 20
    w_small = np.diff(win_rates(small, n_boot=1000)["rates"]["a"]["ci"])[0]
    w_big = np.diff(win_rates(big, n_boot=1000)["rates"]["a"]["ci"])[0]
    assert w_big < w_small / 2  # ~ 1/sqrt(20) as wide
    # another seed, other resamples (the same seed giving the same ones: the flip test below)
    assert win_rates(big, seed=3)["rates"]["a"]["ci"] != win_rates(big, seed=4)["rates"]["a"]["ci"]


FLIP = {"a": "b", "b": "a", "tie": "tie", None: None}


def test_score_counts_a_tie_as_half_a_win_in_its_interval_too():
    """score = (wins + ties / 2) / parsed in every bootstrap resample, not only in the point value."""
    ties = win_rates(["tie"] * 8 + [None] * 2, n_boot=300)["rates"]["score"]
    # all ties: the bootstrap cannot move, so Wilson's interval with half a success per tie, 4 of 8
    assert ties == {"value": 0.5, "ci": pytest.approx([0.2152, 0.7848], abs=1e-4)}
    verdicts = ["a"] * 7 + ["tie"] * 6 + ["b"] * 3 + [None]
    r = win_rates(verdicts, n_boot=400, seed=5)["rates"]
    flipped = win_rates([FLIP[v] for v in verdicts], n_boot=400, seed=5)["rates"]
    # the same prompts resampled with the roles swapped: b's score is 1 - a's in every resample
    assert flipped["score"]["value"] == pytest.approx(1 - r["score"]["value"])
    assert flipped["score"]["ci"] == pytest.approx([1 - r["score"]["ci"][1], 1 - r["score"]["ci"][0]])
    assert flipped["a"]["ci"] == pytest.approx(r["b"]["ci"])
    # without ties the score is the win share, interval and all
    no_ties = win_rates(["a"] * 7 + ["b"] * 3, n_boot=400, seed=5)["rates"]
    assert no_ties["score"]["value"] == no_ties["a"]["value"] and no_ties["score"]["ci"] == no_ties["a"]["ci"]
    # pooled people rows build their score the same way
    recs = [pw(f"p{i}", "tie", judge=j) for j in (ANN, BOB) for i in range(6)]
    (p,) = summarize(recs, n_boot=300)["pooled"]["pairwise"]
    assert p["rates"]["score"] == {"value": 0.5, "ci": pytest.approx(wilson(3, 6)["ci"])}  # n = 6 prompts


def test_all_null_verdicts_give_no_rates_but_are_counted():
    r = win_rates([None, None], n_boot=100)
    assert r["counts"]["null"] == 2 and r["n_parsed"] == 0
    assert r["rates"]["a"] == {"value": None, "ci": [None, None]}
    assert r["sign_test"]["p_value"] == 1.0


# ----------------------------------------------------------------- agreement


def test_agreement_measures_by_hand():
    x = ["a", "a", "b", "tie", "a", "b", None]
    y = ["a", "tie", "b", "tie", "b", "tie", "a"]
    g = agreement(x, y)
    # the last item has a null: left out and counted
    assert g["n"] == 6 and g["n_null"] == 1
    # tie-discounted: a/a 1, a/tie .5, b/b 1, tie/tie 1, a/b 0, b/tie .5 -> 4/6
    assert g["tie_discounted_accuracy"] == pytest.approx(4 / 6)
    # with ties: 3 equal of 6
    assert g["with_ties"] == pytest.approx(0.5)
    # without ties: both decisive on items 1 (a,a), 3 (b,b), 5 (a,b) -> 2/3
    assert g["n_without_ties"] == 3 and g["without_ties"] == pytest.approx(2 / 3)
    # kappa: confusion (rows x, cols y, order a/tie/b): a:[1,1,1] tie:[0,1,0] b:[0,1,1]
    # p_o = 3/6; marginals x (3,1,2), y (1,3,2): p_e = (3*1 + 1*3 + 2*2)/36 = 10/36
    # kappa = (1/2 - 10/36) / (1 - 10/36) = (8/36) / (26/36) = 4/13
    assert g["kappa"] == pytest.approx(4 / 13)


def test_kappa_extremes():
    assert cohen_kappa(["a", "b", "tie"], ["a", "b", "tie"]) == pytest.approx(1.0)
    # opposite labels on a balanced 2-class set: p_o = 0, p_e = 1/2 -> kappa = -1
    assert cohen_kappa(["a", "b"], ["b", "a"]) == pytest.approx(-1.0)
    # both raters always say "a": chance agreement is 1, kappa undefined
    assert cohen_kappa(["a", "a"], ["a", "a"]) is None
    assert agreement([], [])["tie_discounted_accuracy"] is None


def test_judge_agreement_pairs_judges_on_shared_prompts_with_flipped_orientation():
    j1 = [pw("p1", "a", judge="j1"), pw("p2", "b", judge="j1"), pw("p3", "tie", judge="j1")]
    # j2 wrote the pair the other way round (base first) and judged p1, p2 and an extra p4:
    # its "b" on p1 means aligned wins, so after flipping: p1 a (agree), p2 a (disagree)
    j2 = [pw("p1", "b", a="base", b="aligned", judge="j2"), pw("p2", "b", a="base", b="aligned", judge="j2"),
          pw("p4", "a", a="base", b="aligned", judge="j2")]
    comps = comparisons(j1 + j2)
    assert [(c["model_a"], c["model_b"], c["judge"]) for c in comps] == [("aligned", "base", "j1"),
                                                                         ("aligned", "base", "j2")]
    assert [r["verdict"] for r in comps[1]["records"]] == ["a", "a", "b"]
    (g,) = judge_agreement(comps)
    assert (g["judge_1"], g["judge_2"], g["n"]) == ("j1", "j2", 2)
    assert g["with_ties"] == pytest.approx(0.5)


# ----------------------------------------------------------------- position and length


def test_position_consistency_and_first_position_share():
    rs = [pw("p1", "a", votes=("a", "a")),     # consistent; ab->a first-shown wins, ba->a second-shown wins
          pw("p2", "tie", votes=("a", "b")),   # inconsistent; ab->a first, ba->b first (b was shown first)
          pw("p3", "tie", votes=("tie", "tie")),  # consistent; no decisive votes
          pw("p4", None, votes=("b", None))]   # no pair to compare; ab->b second-shown wins
    p = position_bias(rs)
    # pairs with both votes: p1, p2, p3; consistent p1, p3 -> 2/3
    assert (p["n_pairs"], p["consistent"]) == (3, 2)
    assert p["consistency"] == pytest.approx(2 / 3)
    # decisive votes: first-shown wins p1ab, p2ab, p2ba = 3; second-shown p1ba, p4ab = 2 -> 3/5
    assert (p["first_position_wins"], p["n_decisive_votes"]) == (3, 5)
    assert p["first_position_share"] == pytest.approx(0.6)
    assert p["first_position_p_value"] == pytest.approx(1.0)  # 3 vs 2 is no evidence


def test_fit_logistic_reaches_the_unpenalised_optimum():
    rng = np.random.default_rng(0)
    x = rng.normal(size=200)
    y = (rng.random(200) < 1 / (1 + np.exp(-(0.3 + 1.2 * x)))).astype(float)
    b0, b1 = fit_logistic(x, y, ridge=0.0)
    p = 1 / (1 + np.exp(-(b0 + b1 * x)))
    # at the maximum likelihood estimate the score equations are zero
    assert abs((y - p).sum()) < 1e-8 and abs(((y - p) * x).sum()) < 1e-8
    assert 0.6 < b1 < 1.9
    # batched fits equal single fits
    batch = fit_logistic(np.stack([x, x[::-1]]), np.stack([y, y[::-1]]), ridge=0.0)
    assert np.allclose(batch[0], [b0, b1]) and np.allclose(batch[1], [b0, b1])


def _len_record(pid: str, la: int, lb: int, verdict: str) -> dict:
    return pw(pid, verdict, out_a="x" * la, out_b="y" * lb)


def test_length_bias_direction_and_length_controlled_rate():
    # A judge that always picks the longer answer; a is longer in half of the prompts.
    longest = [_len_record(f"p{i}", 100 + 10 * i, 50, "a") for i in range(10)] + \
              [_len_record(f"q{i}", 50, 100 + 10 * i, "b") for i in range(10)]
    lb = length_bias(longest, n_boot=300)
    assert lb["longer_wins_share"] == 1.0 and lb["n_unequal"] == 20
    assert lb["longer_wins_p_value"] == pytest.approx(2 / 2**20)
    lc = lb["length_controlled"]
    assert lc["raw_win_share"] == pytest.approx(0.5)
    assert lc["win_share_at_equal_length"]["value"] == pytest.approx(0.5, abs=1e-6)  # symmetric design
    assert lc["odds_ratio_per_doubling"]["value"] > 3
    # The opposite judge (shorter answer always wins) flips the direction.
    shortest = [dict(r, verdict="b" if r["verdict"] == "a" else "a") for r in longest]
    ls = length_bias(shortest, n_boot=300)
    assert ls["longer_wins_share"] == 0.0
    assert ls["length_controlled"]["odds_ratio_per_doubling"]["value"] < 1 / 3


def test_length_controlled_rate_removes_a_length_advantage():
    # a is always longer; judge picks a 16 of 20 times, but its preference rises with a's length advantage:
    # ratio 1.0-ish prompts are split evenly, the long ones all go to a. The equal-length share is below raw.
    recs = [_len_record(f"e{i}", 100, 100 - (i % 2), "a" if i % 2 else "b") for i in range(8)]  # near-equal: 4-4
    recs += [_len_record(f"l{i}", 400, 100, "a") for i in range(12)]                          # 4x longer: a wins
    lb = length_bias(recs, n_boot=300)
    lc = lb["length_controlled"]
    assert lc["raw_win_share"] == pytest.approx(16 / 20)
    assert lc["win_share_at_equal_length"]["value"] < lc["raw_win_share"] - 0.15
    # buckets by chars ratio a/b: near-equal prompts are "similar", the 4x ones "a much longer"
    buckets = {b["bucket"]: (b["a"], b["b"]) for b in lb["by_ratio"]}
    assert buckets == {"a much shorter": (0, 0), "similar": (4, 4), "a much longer": (12, 0)}


def test_length_bias_without_decisive_verdicts():
    lb = length_bias([pw("p1", "tie"), pw("p2", None)])
    assert lb["n_decisive"] == 0 and lb["length_controlled"] is None and lb["longer_wins_share"] is None


# ----------------------------------------------------------------- absolute ratings


def test_rating_shares_fail_pass_excellent_and_mean():
    r = rating_shares(["fail", "pass", "pass", "excellent", None], "fail_pass_excellent", n_boot=300)
    # 4 parsed: fail 1/4, pass 2/4, excellent 1/4; pass or better 3/4; the null is counted
    assert (r["n"], r["n_parsed"], r["null"]) == (5, 4, 1)
    assert r["counts"] == {"fail": 1, "pass": 2, "excellent": 1}
    assert [r["shares"][k]["value"] for k in ("fail", "pass", "excellent")] == [0.25, 0.5, 0.25]
    assert r["pass_or_better"]["value"] == 0.75
    lo, hi = r["pass_or_better"]["ci"]
    assert lo <= 0.75 <= hi
    h = rating_shares([2, 4, 6, None], "helpfulness_6", n_boot=300)
    assert h["mean"]["value"] == pytest.approx(4.0)  # (2 + 4 + 6) / 3
    assert h["mean"]["ci"][0] >= 2 and h["mean"]["ci"][1] <= 6
    assert h["counts"]["4"] == 1 and h["shares"]["1"]["value"] == 0


# ----------------------------------------------------------------- power


def test_sign_test_sample_sizes():
    # n = ((1.959964 * 0.5 + 0.841621 * sqrt(p(1-p))) / (p - 0.5))^2
    # p = 0.60: (0.979982 + 0.841621 * 0.489898) / 0.1 = 13.9229 -> 193.85 -> 194
    # p = 0.55: (0.979982 + 0.841621 * 0.497494) / 0.05 = 27.9737 -> 782.5 -> 783
    # p = 0.65: (0.979982 + 0.841621 * 0.476970) / 0.15 = 9.2094 -> 84.8 -> 85
    assert [sign_test_sample_size(p) for p in (0.55, 0.60, 0.65)] == [783, 194, 85]
    assert sign_test_sample_size(0.40) == sign_test_sample_size(0.60)  # symmetric around 0.5
    assert sign_test_sample_size(0.60, power=0.9) > 194
    with pytest.raises(ValueError):
        sign_test_sample_size(0.5)


def test_minimum_detectable_share_inverts_the_sample_size():
    assert minimum_detectable_share(194) == pytest.approx(0.60, abs=1e-3)
    assert minimum_detectable_share(85) == pytest.approx(0.65, abs=2e-3)
    assert minimum_detectable_share(1000) < minimum_detectable_share(100)
    assert minimum_detectable_share(3) is None  # even 3-0 cannot be significant at the 5% level
    pa = power_analysis(194, 0.5)
    # half the prompts are ties, so twice the prompts: 194 / 0.5 = 388
    assert [t["prompts"] for t in pa["needed"]] == [1566, 388, 170]
    assert pa["minimum_detectable_difference"] == pytest.approx(0.10, abs=1e-3)


# ----------------------------------------------------------------- reading and the whole summary


def test_read_judgments_reports_every_problem_with_file_line_field_and_fix(tmp_path):
    good = pw("p1", "a")
    bad_verdict = dict(pw("p2", "a"), verdict="A")
    bad_vote = pw("p3", "a")
    bad_vote["votes"][1]["order"] = "xy"
    bad_abs = ab("p4", "great")
    not_judgment = {"prompt_id": "p5", "output": "hi"}
    path = write(tmp_path / "j.jsonl", [good, bad_verdict, bad_vote, bad_abs, not_judgment])
    with pytest.raises(LimaError) as e:
        read_judgments(path)
    msg = str(e.value)
    assert "4 problems" in msg
    assert f"{path}:2 verdict" in msg and "unknown verdict 'A'" in msg and "fix:" in msg
    assert f"{path}:3 votes[1].order" in msg
    assert f"{path}:4 score" in msg and "fail_pass_excellent" in msg
    assert f"{path}:5 type" in msg and "generations file" in msg


def test_read_judgments_accepts_valid_records_and_keeps_their_location(tmp_path):
    recs = [pw("p1", "a"), pw("p2", None, votes=(None, "a")), ab("p1", 5, scale="helpfulness_6")]
    path = write(tmp_path / "j.jsonl", recs)
    rs = read_judgments(path)
    assert [r["type"] for r in rs] == ["pairwise", "pairwise", "absolute"]
    assert rs[1]["_where"] == f"{path}:2"


def test_load_judgments_dedups_the_same_file_and_rejects_conflicting_duplicates(tmp_path):
    p1 = write(tmp_path / "a.jsonl", [pw("p1", "a"), pw("p2", "b")])
    assert len(load_judgments([p1, p1])) == 2  # the same records twice: kept once
    other = dict(pw("p1", "b"), id="different-id")
    p2 = write(tmp_path / "b.jsonl", [other])
    with pytest.raises(LimaError) as e:
        load_judgments([p1, p2])
    assert f"{p2}:1" in str(e.value) and f"{p1}:1" in str(e.value) and "already judged" in str(e.value)


def test_summarize_is_json_and_format_summary_prints_every_section():
    recs = [pw("p1", "a"), pw("p2", "a"), pw("p3", "b"), pw("p4", "tie", votes=("a", "b")),
            pw("p1", "a", judge="human:bob"), pw("p2", "tie", judge="human:bob"),
            ab("p1", "pass"), ab("p2", "fail", model="base"), ab("p1", 3, scale="helpfulness_6")]
    s = summarize(recs, n_boot=200)
    json.dumps(s, allow_nan=False)  # every number is plain JSON
    assert [p["label"] for p in s["pairwise"]] == ["aligned vs base (j1)", "aligned vs base (human:bob)"]
    assert s["pairwise"][0]["counts"] == {"a": 2, "tie": 1, "b": 1, "null": 0}
    assert s["agreement"][0]["n"] == 2 and s["agreement"][0]["tie_discounted_accuracy"] == pytest.approx(0.75)
    assert [a["label"] for a in s["absolute"]] == ["aligned (j1)", "base (j1)", "aligned (j1)"]
    text = format_summary(s)
    for needle in ("aligned vs base (j1)", "judge agreement", "absolute ratings", "power", "biases"):
        assert needle in text
    assert not math.isnan(s["pairwise"][0]["rates"]["score"]["value"])


def test_wilson_and_newcombe_known_values():
    from lima_align.stats import newcombe, wilson

    assert wilson(10, 10)["ci"] == pytest.approx([0.7225, 1.0], abs=1e-4)
    assert wilson(0, 0)["value"] is None
    d = newcombe(48, 80, 56, 70)  # Newcombe (1998), method 10: 0.8 - 0.6, interval 0.0524 to 0.3339
    assert d["value"] == pytest.approx(0.2) and d["ci"] == pytest.approx([0.0524, 0.3339], abs=1e-4)


# ----------------------------------------------------------------- people pooled (pooled.py)

ANN, BOB, CID = "human:ann", "human:bob", "human:cid"


def test_pooled_people_pairwise_by_hand():
    # p1: ann a, bob a (bob's record written the other way round: base first, verdict b -> a)
    # p2: ann a, bob tie;  p3: ann b, bob tie.  A model judge j1 and its row are left alone.
    recs = [pw("p1", "a", judge=ANN), pw("p2", "a", judge=ANN), pw("p3", "b", judge=ANN),
            pw("p1", "b", judge=BOB, a="base", b="aligned"), pw("p2", "tie", judge=BOB), pw("p3", "tie", judge=BOB),
            pw("p1", "b"), pw("p2", "b")]
    s = summarize(recs, n_boot=500)
    json.dumps(s, allow_nan=False)
    assert [p["judge"] for p in s["pairwise"]] == [ANN, BOB, "j1"]  # per-rater rows as before
    (p,) = s["pooled"]["pairwise"]
    assert (p["label"], p["judge"], p["raters"]) == ("aligned vs base (people)", "people", [ANN, BOB])
    # 6 votes on 3 prompts: a 3, tie 2, b 1 -> 1/2, 1/3, 1/6; score (3 + 2/2)/6 = 2/3; decisive 3 of 4
    assert (p["n_prompts"], p["n_votes"]) == (3, 6)
    assert p["counts"] == {"a": 3, "tie": 2, "b": 1, "null": 0}
    assert [p["rates"][k]["value"] for k in ("a", "tie", "b", "a_or_tie", "score")] == pytest.approx(
        [1 / 2, 1 / 3, 1 / 6, 5 / 6, 2 / 3])
    assert (p["decisive"]["a"], p["decisive"]["n"], p["decisive"]["value"]) == (3, 4, 0.75)
    for e in [*p["rates"].values(), p["decisive"]]:
        assert 0 <= e["ci"][0] <= e["value"] <= e["ci"][1] <= 1
    # majority verdicts: p1 a (2 of 2), p2 and p3 split (1-1) -> sign test on 1 win, 0 losses: p = 1
    st = p["sign_test"]
    assert (st["wins"], st["losses"], st["ties"], st["split"], st["p_value"]) == (1, 0, 0, 2, 1.0)
    assert "majority" in st["test"] and "cluster" in p["bootstrap"]["unit"]
    # first two ratings: (a, a), (a, tie), (b, tie): 1 of 3 identical. kappa: p_o = 1/3; ann a 2/3 b 1/3,
    # bob a 1/3 tie 2/3 -> p_e = 2/9; (1/3 - 2/9) / (1 - 2/9) = 1/7
    g = p["agreement"]
    assert (g["n"], g["identical"], g["n_more_than_two"]) == (3, 1, 0)
    assert g["share"]["value"] == pytest.approx(1 / 3) and g["kappa"] == pytest.approx(1 / 7)
    text = format_summary(s)
    for needle in ("people pooled", "cluster bootstrap that resamples whole prompts", "correlated",
                   "per-prompt majority verdicts", "aligned vs base (people)", "3 of 4: 75.0%", "0.143"):
        assert needle in text


def test_pooled_cluster_bootstrap_moves_a_prompts_votes_together():
    # Two people who vote alike on every prompt: each prompt's two votes move together, so the pooled interval is
    # exactly the interval of one of them. Resampling the 40 votes independently would make it narrower.
    verdicts = ["a"] * 9 + ["tie"] * 6 + ["b"] * 5
    recs = [pw(f"p{i}", v, judge=j) for j in (ANN, BOB) for i, v in enumerate(verdicts)]
    s = summarize(recs, n_boot=400, seed=3)
    ann = s["pairwise"][0]
    (p,) = s["pooled"]["pairwise"]
    assert p["counts"] == {k: 2 * v for k, v in ann["counts"].items()}
    for k in ("a", "tie", "b", "a_or_tie", "score"):
        assert p["rates"][k]["value"] == pytest.approx(ann["rates"][k]["value"])
        assert p["rates"][k]["ci"] == pytest.approx(ann["rates"][k]["ci"])
    naive = win_rates(verdicts * 2, n_boot=400, seed=3)["rates"]["a"]["ci"]
    assert naive[1] - naive[0] < 0.85 * (p["rates"]["a"]["ci"][1] - p["rates"]["a"]["ci"][0])
    # the decisive share too: one rater's 9 of 14 resampled by prompt
    one = win_rates(verdicts, n_boot=400, seed=3)
    assert (p["decisive"]["a"], p["decisive"]["n"]) == (18, 28)
    assert p["sign_test"]["wins"] == 9 and p["sign_test"]["p_value"] == pytest.approx(one["sign_test"]["p_value"])
    # absolute ratings the same way
    scores = ["fail"] * 4 + ["pass"] * 5 + ["excellent"] * 3
    s = summarize([ab(f"p{i}", x, judge=j) for j in (ANN, BOB) for i, x in enumerate(scores)], n_boot=400, seed=3)
    (a,) = s["pooled"]["absolute"]
    for k in ("fail", "pass", "excellent"):
        assert a["shares"][k]["ci"] == pytest.approx(s["absolute"][0]["shares"][k]["ci"])
    assert a["pass_or_better"]["ci"] == pytest.approx(s["absolute"][0]["pass_or_better"]["ci"])


def test_pooled_absolute_majority_pass_share_and_agreement():
    # aligned, rated by ann, bob (and cid on p3, p4):
    #   p1 pass, excellent -> majority pass+   p2 pass, fail -> a tie: not     p3 fail, fail, excellent -> not
    #   p4 excellent, pass, fail -> 2 of 3: yes   p5 pass (ann only) -> yes     p6 null, null -> no parsed rating
    table = {ANN: ["pass", "pass", "fail", "excellent", "pass", None],
             BOB: ["excellent", "fail", "fail", "pass", None, None],
             CID: [None, None, "excellent", "fail", None, None]}
    recs = [ab(f"p{i + 1}", x, judge=j) for j, xs in table.items() for i, x in enumerate(xs)
            if x is not None or j != CID]
    recs += [ab("p1", "pass", model="base", judge=ANN)]  # one person only: no pooled row for base
    s = summarize(recs, n_boot=300)
    json.dumps(s, allow_nan=False)
    (a,) = s["pooled"]["absolute"]
    assert (a["label"], a["raters"], a["n_prompts"], a["n"], a["null"]) == ("aligned (people)", [ANN, BOB, CID],
                                                                            6, 14, 3)
    # 14 ratings (ann 6, bob 6, cid 2), 3 of them null; 11 parsed: fail 4, pass 4, excellent 3
    assert a["counts"] == {"fail": 4, "pass": 4, "excellent": 3}
    assert [a["shares"][k]["value"] for k in ("fail", "pass", "excellent")] == pytest.approx([4 / 11, 4 / 11, 3 / 11])
    assert a["pass_or_better"]["value"] == pytest.approx(7 / 11)
    m = a["majority_pass_or_better"]
    assert (m["prompts"], m["n"], m["value"]) == (3, 5, 0.6) and m["ci"][0] < 0.6 < m["ci"][1]
    # first two parsed ratings of p1-p4: (pass, exc), (pass, fail), (fail, fail), (exc, pass): 1 of 4 identical;
    # p_o = 1/4, p_e = (1/4)(2/4) + (2/4)(1/4) + (1/4)(1/4) = 5/16 -> kappa = (4/16 - 5/16) / (11/16) = -1/11
    g = a["agreement"]
    assert (g["n"], g["identical"], g["n_more_than_two"]) == (4, 1, 2)
    assert g["kappa"] == pytest.approx(-1 / 11)
    assert "3 of 5: 60.0%" in format_summary(s)


def test_pooled_kappa_is_na_for_one_label():
    recs = [ab(f"p{i}", "fail", judge=j) for j in (ANN, BOB) for i in range(5)]
    recs += [pw(f"p{i}", "tie", judge=j) for j in (ANN, BOB) for i in range(4)]
    s = summarize(recs, n_boot=100)
    for row in (s["pooled"]["pairwise"][0], s["pooled"]["absolute"][0]):
        g = row["agreement"]
        assert g["share"]["value"] == 1.0 and g["kappa"] is None and g["kappa_note"] == "one label"
    assert s["pooled"]["absolute"][0]["majority_pass_or_better"]["value"] == 0.0
    assert format_summary(s).count("n/a (one label)") == 2
    from lima_align.pooled import first_two_agreement

    assert first_two_agreement([["a"], []], ("a", "tie", "b"))["kappa_note"] == "no prompt rated twice"


def test_no_pooled_rows_without_two_people_on_the_same_thing():
    one_person = [pw("p1", "a", judge=ANN), pw("p1", "b"), ab("p1", "pass", judge=ANN), ab("p1", "fail")]
    other_pairs = [pw("p1", "a", judge=ANN), pw("p1", "a", judge=BOB, b="other"),
                   ab("p1", "pass", judge=ANN), ab("p1", "pass", judge=BOB, model="base")]
    for recs in (one_person, other_pairs, [pw("p1", "a"), pw("p1", "b", judge="j2")]):
        s = summarize(recs, n_boot=50)
        # the pooled agreement table may still set one person against a model judge; no "people pooled" rows
        assert "pooled" not in s and "people pooled" not in format_summary(s)
