"""Stats behaviour that mutation testing (benchmarks/mutation.py) found unchecked: the exact problem (where, what,
fix) a user sees for each kind of bad judgment record, the cap on listed problems, duplicates across files,
the bootstrap intervals of win_rates against the definition (prompts resampled, shares of the parsed verdicts),
the Wilson fallback at shares of 0 and 1, edge cases of agreement and position bias, records without votes,
and summarize passing its bootstrap settings to every piece."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lima_align.agreement import BOOTSTRAP, pooled_agreement
from lima_align.errors import LimaError, Problem
from lima_align.intervals import BOOTSTRAP_RATES, SMALL_SAMPLE, resample_idx
from lima_align.stats import (MAX_LISTED_PROBLEMS, agreement, comparisons, flip, is_consistent, judge_agreement,
                              length_bias, load_judgments, position_bias, power_analysis, rating_shares, ratings,
                              read_judgments, summarize, summarize_files, vote_pair, wilson, win_rates)

WRITTEN_BY_JUDGE = "judgment files are written by `lima-align judge`; rejudge or fix the line"
VERDICT_FIX = 'use "a", "b", "tie", or null when the judge text was unparseable'
OUTPUT_FIX = 'write the model\'s output ("" if empty)'
ANSWER_TEXT = "needs the answer text as a string"


def write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def problems_of(fn, *args) -> list[Problem]:
    with pytest.raises(LimaError) as e:
        fn(*args)
    return e.value.problems


def pw(pid: str, verdict: str | None, *, a: str = "A", b: str = "B", judge: str = "j1", votes=None, **extra) -> dict:
    r = {"type": "pairwise", "prompt_id": pid, "model_a": a, "model_b": b, "judge": judge,
         "output_a": "answer a", "output_b": "answer b", "verdict": verdict, **extra}
    if votes is not None:
        r["votes"] = [{"order": o, "verdict": v} for o, v in votes]
    return r


def ab(pid: str, score, *, model: str = "A", judge: str = "j1", scale: str = "fail_pass_excellent", **extra) -> dict:
    return {"type": "absolute", "prompt_id": pid, "model": model, "judge": judge, "output": "x", "scale": scale,
            "score": score, **extra}


def test_flip_swaps_models_outputs_verdicts_and_vote_orders():
    r = {"prompt_id": "p1", "judge": "j", "model_a": "A", "model_b": "B", "output_a": "ya", "output_b": "yb",
         "verdict": "a", "votes": [{"order": "ab", "verdict": "a", "raw": "x"},
                                   {"order": "ba", "verdict": "tie"},
                                   {"order": "ab", "verdict": None}]}
    assert flip(r) == {
        "prompt_id": "p1", "judge": "j", "model_a": "B", "model_b": "A", "output_a": "yb", "output_b": "ya",
        "verdict": "b", "votes": [{"order": "ba", "verdict": "b", "raw": "x"},
                                  {"order": "ab", "verdict": "tie"},
                                  {"order": "ba", "verdict": None}]}
    assert flip(flip(r)) == r
    assert r["model_a"] == "A" and r["votes"][0]["order"] == "ab"  # the record itself is left as it was


def test_flip_of_a_record_without_votes_or_verdict():
    r = {"model_a": "A", "model_b": "B", "output_a": "ya", "output_b": "yb"}
    assert flip(r) == {"model_a": "B", "model_b": "A", "output_a": "yb", "output_b": "ya", "verdict": None,
                       "votes": []}


# ----------------------------------------------------------------- reading: every problem, word for word


def test_each_bad_pairwise_field_gets_its_own_problem_and_fix(tmp_path):
    long_label = ["x" * 100]
    bad_fields = {"type": "pairwise", "model_a": "", "model_b": long_label, "output_a": None, "verdict": "A",
                  "consistent": "yes",
                  "votes": ["ab", {"order": "ab"}, {"order": "ab", "verdict": "maybe"}, {"order": "xy", "verdict": "a"},
                            {"verdict": "b"}, {"order": "ba", "verdict": None}]}
    same_models = {"type": "pairwise", "prompt_id": "p", "model_a": "m", "model_b": "m", "judge": "j",
                   "output_a": "", "output_b": "", "votes": {"order": "ab"}}
    path = write(tmp_path / "j.jsonl", [bad_fields, same_models, {"prompt_id": "p5", "output": "hi"}])
    w1, w2, w3 = (f"{path}:{n}" for n in (1, 2, 3))
    assert problems_of(read_judgments, path) == [
        Problem(f"{w1} prompt_id", "needs a non-empty string (missing)", WRITTEN_BY_JUDGE),
        Problem(f"{w1} model_a", "needs a non-empty string (got '')", WRITTEN_BY_JUDGE),
        # the value shown is cut at 80 characters
        Problem(f"{w1} model_b", f"needs a non-empty string (got ['{'x' * 74})", WRITTEN_BY_JUDGE),
        Problem(f"{w1} judge", "needs a non-empty string (missing)", WRITTEN_BY_JUDGE),
        Problem(f"{w1} output_a", ANSWER_TEXT, OUTPUT_FIX),
        Problem(f"{w1} output_b", ANSWER_TEXT, OUTPUT_FIX),
        Problem(f"{w1} verdict", "unknown verdict 'A'", VERDICT_FIX),
        # a vote that is no object does not stop the check of the votes after it
        Problem(f"{w1} votes[0]", "each vote must be an object", '{"order": "ab"|"ba", "raw": str, "verdict": ...}'),
        Problem(f"{w1} votes[1].verdict", "missing", "add the verdict in terms of the original a/b, or null"),
        Problem(f"{w1} votes[2].order", "order 'ab' appears twice", "keep one vote per presentation order"),
        Problem(f"{w1} votes[2].verdict", "unknown verdict 'maybe'", VERDICT_FIX),
        Problem(f"{w1} votes[3].order", "expected \"ab\" or \"ba\", got 'xy'",
                '"ab" = output_a was shown first, "ba" = output_b was shown first'),
        Problem(f"{w1} votes[4].order", "expected \"ab\" or \"ba\", got None",
                '"ab" = output_a was shown first, "ba" = output_b was shown first'),
        Problem(f"{w1} consistent", "expected true, false or null, got 'yes'", "recompute it from votes"),
        Problem(f"{w2} model_b", "compares 'm' with itself", "give the two generation files distinct model labels"),
        Problem(f"{w2} verdict", "missing", 'add "verdict": "a" | "b" | "tie" | null'),
        Problem(f"{w2} votes", "expected a list, got dict",
                'write "votes": [{"order": "ab", "raw": "...", "verdict": "a"}, ...]'),
        Problem(f"{w3} type", "expected \"pairwise\" or \"absolute\", got None",
                "this line is not a judgment record; was a generations file passed by mistake?"),
    ]


def test_pairwise_records_without_votes_or_consistent_and_with_empty_answers_are_valid(tmp_path):
    recs = [pw("p1", "a"), pw("p2", "tie", consistent=True), pw("p3", None, consistent=False),
            dict(pw("p4", "b", votes=[("ab", "b"), ("ba", None)]), output_a="", output_b="", consistent=None)]
    path = write(tmp_path / "j.jsonl", recs)
    assert read_judgments(path) == [dict(r, _where=f"{path}:{i}") for i, r in enumerate(recs, start=1)]


def test_each_bad_absolute_field_gets_its_own_problem_and_fix(tmp_path):
    recs = [{"type": "absolute", "model": 3, "output": 5, "scale": "stars", "score": "?"},
            {k: v for k, v in ab("p", 1, scale="helpfulness_6").items() if k != "score"},
            ab("p", 7, scale="helpfulness_6"), ab("p", True, scale="helpfulness_6"), ab("p", "great"),
            ab("p", None), ab("p", 6, scale="helpfulness_6"), ab("p", "excellent", model="B")]
    path = write(tmp_path / "j.jsonl", recs)
    w = [f"{path}:{n}" for n in range(1, 6)]
    assert problems_of(read_judgments, path) == [
        Problem(f"{w[0]} prompt_id", "needs a non-empty string (missing)", WRITTEN_BY_JUDGE),
        Problem(f"{w[0]} model", "needs a non-empty string (got 3)", WRITTEN_BY_JUDGE),
        Problem(f"{w[0]} judge", "needs a non-empty string (missing)", WRITTEN_BY_JUDGE),
        Problem(f"{w[0]} output", ANSWER_TEXT, OUTPUT_FIX),
        Problem(f"{w[0]} scale", "unknown scale 'stars'", "use one of fail_pass_excellent, helpfulness_6"),
        Problem(f"{w[1]} score", "missing", "add the score, or null when the judge text was unparseable"),
        Problem(f"{w[2]} score", "7 is not on the helpfulness_6 scale", "use one of 1, 2, 3, 4, 5, 6, or null"),
        # true == 1 in Python, but a boolean is no score
        Problem(f"{w[3]} score", "True is not on the helpfulness_6 scale", "use one of 1, 2, 3, 4, 5, 6, or null"),
        Problem(f"{w[4]} score", "'great' is not on the fail_pass_excellent scale",
                "use one of fail, pass, excellent, or null"),
    ]


def test_problems_are_listed_up_to_the_cap_then_one_line_says_so(tmp_path):
    path = write(tmp_path / "gen.jsonl", [{"type": "generation"}] * (MAX_LISTED_PROBLEMS + 5))
    problems = problems_of(read_judgments, path)
    assert MAX_LISTED_PROBLEMS == 30
    assert [p.where for p in problems[:-1]] == [f"{path}:{n} type" for n in range(1, 31)]
    assert problems[-1] == Problem(path, "stopped after 30 problems", "fix these and rerun to see the rest")


def test_an_empty_judgments_file_is_an_error_that_says_how_to_get_judgments(tmp_path):
    path = tmp_path / "empty.jsonl"
    path.write_text("\n\n")
    assert problems_of(read_judgments, path) == [Problem(
        str(path), "holds no judgment records",
        f"judge first, e.g. `lima-align judge pairwise A.jsonl B.jsonl --judge longest --output {path}`; "
        "a judge run killed before its first judgment leaves an empty file")]


def test_load_judgments_keeps_each_id_once_and_reads_on_after_a_repeat(tmp_path):
    r1, r2 = dict(pw("p1", "a"), id="x1"), dict(pw("p2", "b"), id="x2")
    f1 = write(tmp_path / "one.jsonl", [r1])
    f2 = write(tmp_path / "two.jsonl", [r1, r2])
    assert load_judgments([f1, f2]) == [dict(r1, _where=f"{f1}:1"), dict(r2, _where=f"{f2}:2")]


def test_load_judgments_lists_every_conflicting_judgment(tmp_path):
    fix = "pass only one of the two judgment files (e.g. one per instruction set), or delete one line"
    f1 = write(tmp_path / "one.jsonl", [pw("p1", "a"), pw("p2", "b")])
    f2 = write(tmp_path / "two.jsonl", [pw("p1", "b"), pw("p2", "b", a="B", b="A"), pw("p3", "a")])
    assert problems_of(load_judgments, [f1, f2]) == [
        Problem(f"{f2}:1", f"judge 'j1' already judged prompt 'p1' for these models at {f1}:1", fix),
        Problem(f"{f2}:2", f"judge 'j1' already judged prompt 'p2' for these models at {f1}:2", fix)]


def test_absolute_judgments_conflict_only_for_the_same_judge_prompt_model_and_scale(tmp_path):
    recs = [ab("p1", "pass"), ab("p1", "fail", model="B"), ab("p1", 3, scale="helpfulness_6"),
            ab("p1", "pass", judge="j2"), ab("p2", "pass")]
    f1 = write(tmp_path / "one.jsonl", recs)
    assert [r["_where"] for r in load_judgments([f1])] == [f"{f1}:{n}" for n in range(1, 6)]
    f2 = write(tmp_path / "two.jsonl", [ab("p1", "excellent", model="B")])
    assert problems_of(load_judgments, [f1, f2]) == [Problem(
        f"{f2}:1", f"judge 'j1' already judged prompt 'p1' for these models at {f1}:2",
        "pass only one of the two judgment files (e.g. one per instruction set), or delete one line")]


# ----------------------------------------------------------------- win rates


# 14 wins, 6 ties, 8 losses and 2 nulls, interleaved: 22 decisive prompts, so the bootstrap is used
_SORTED = ["a"] * 14 + ["tie"] * 6 + ["b"] * 8 + [None] * 2
VERDICTS = [v for start in range(5) for v in _SORTED[start::5]]


def reference_interval(verdicts, share, n_boot, seed):
    """The definition, one resample at a time: prompts drawn with replacement, the share over the parsed ones,
    the 2.5th and 97.5th percentiles."""
    values = []
    for row in resample_idx(len(verdicts), n_boot, seed):
        parsed = [verdicts[i] for i in row if verdicts[i] is not None]
        values.append(share(parsed) / len(parsed))
    return list(np.percentile(values, [2.5, 97.5]))


def test_win_rates_bootstrap_intervals_follow_the_definition():
    assert [VERDICTS.count(v) for v in ("a", "tie", "b", None)] == [14, 6, 8, 2]
    r = win_rates(VERDICTS, n_boot=300, seed=3)
    shares = {"a": lambda p: p.count("a"), "tie": lambda p: p.count("tie"), "b": lambda p: p.count("b"),
              "a_or_tie": lambda p: p.count("a") + p.count("tie"),
              "score": lambda p: p.count("a") + p.count("tie") / 2}
    # 28 parsed: a 14/28, tie 6/28, b 8/28, a or tie 20/28, score (14 + 3) / 28
    values = {"a": 0.5, "tie": 6 / 28, "b": 8 / 28, "a_or_tie": 20 / 28, "score": 17 / 28}
    assert list(r["rates"]) == list(shares)
    for key, share in shares.items():
        assert r["rates"][key] == {"value": pytest.approx(values[key]),
                                   "ci": pytest.approx(reference_interval(VERDICTS, share, 300, 3))}, key
    assert r["interval"] == BOOTSTRAP_RATES
    assert (r["n"], r["n_parsed"], r["null_share"]) == (30, 28, 2 / 30)
    assert r["sign_test"] == {"wins": 14, "losses": 8, "p_value": pytest.approx(0.2863, abs=1e-4),
                              "test": "two-sided exact sign test on non-tie prompts"}
    assert r["bootstrap"] == {"n_boot": 300, "seed": 3, "confidence": 0.95, "unit": "prompt"}


def test_win_rates_defaults_are_2000_resamples_with_seed_0():
    r = win_rates(VERDICTS)
    assert r["bootstrap"] == {"n_boot": 2000, "seed": 0, "confidence": 0.95, "unit": "prompt"}
    assert r["rates"]["a"]["ci"] == pytest.approx(reference_interval(VERDICTS, lambda p: p.count("a"), 2000, 0))


def test_win_rates_shares_of_0_and_1_take_wilson_intervals_inside_the_bootstrap():
    verdicts = ["a"] * 20 + ["tie"] * 5  # 20 decisive: bootstrapped, but no loss at all
    r = win_rates(verdicts, n_boot=200, seed=1)
    assert r["interval"] == BOOTSTRAP_RATES
    assert r["rates"]["b"] == wilson(0, 25) and r["rates"]["b"]["ci"][1] > 0
    assert r["rates"]["a_or_tie"] == wilson(25, 25) and r["rates"]["a_or_tie"]["ci"][0] < 1
    assert r["rates"]["a"] == {"value": 0.8, "ci": pytest.approx(
        reference_interval(verdicts, lambda p: p.count("a"), 200, 1))}


def test_win_rates_with_few_decisive_prompts_says_wilson():
    r = win_rates(["a"] * 5 + ["b"] * 3, n_boot=100)
    assert r["interval"] == SMALL_SAMPLE
    assert r["rates"]["a"] == wilson(5, 8)


def test_win_rates_of_no_verdicts_is_empty_not_an_error():
    none = {"value": None, "ci": [None, None]}
    assert win_rates([], n_boot=50, seed=2) == {
        "n": 0, "n_parsed": 0, "counts": {"a": 0, "tie": 0, "b": 0, "null": 0}, "interval": BOOTSTRAP_RATES,
        "null_share": None, "rates": {k: none for k in ("a", "tie", "b", "a_or_tie", "score")},
        "sign_test": {"wins": 0, "losses": 0, "p_value": 1.0, "test": "two-sided exact sign test on non-tie prompts"},
        "bootstrap": {"n_boot": 50, "seed": 2, "confidence": 0.95, "unit": "prompt"}}


# ----------------------------------------------------------------- agreement and position bias


def test_agreement_when_one_rater_says_tie_and_the_other_does_not():
    g = agreement(["tie", "a", "b", "b"], ["a", "a", "b", "tie"])
    # tie/a .5, a/a 1, b/b 1, b/tie .5 -> 3/4; identical 2 of 4; both decisive: a/a, b/b -> 2/2
    assert g["tie_discounted_accuracy"] == pytest.approx(0.75)
    assert (g["with_ties"], g["n_without_ties"], g["without_ties"]) == (0.5, 2, 1.0)
    g = agreement(["a", "a", "b"], ["a", "b", "a"])
    assert g["with_ties"] == pytest.approx(1 / 3)


def test_agreement_refuses_lists_of_different_lengths():
    with pytest.raises(ValueError):
        agreement(["a", "b"], ["a"])


def test_judge_agreement_rows_name_the_models_and_judges():
    comps = comparisons([pw("p1", "a"), pw("p2", "b"), pw("p1", "a", judge="j2"), pw("p2", "a", judge="j2")])
    assert judge_agreement(comps) == [{"model_a": "A", "model_b": "B", "judge_1": "j1", "judge_2": "j2",
                                       **agreement(["a", "b"], ["a", "a"])}]


def test_records_without_votes_use_their_own_consistent_field():
    assert vote_pair({}) == (None, None)
    assert is_consistent({"consistent": True}) is True
    assert is_consistent({"consistent": False, "votes": []}) is False
    # with votes, a missing order means no answer, whatever the record says
    assert is_consistent({"consistent": True, "votes": [{"order": "ab", "verdict": "a"}]}) is None
    assert is_consistent({"votes": [{"order": "ab", "verdict": "a"}, {"order": "ba", "verdict": "b"}]}) is False


def test_position_bias_by_hand():
    rs = [pw("p1", "b", votes=[("ba", "b"), ("ab", "b")]),  # b shown first wins, then b shown second wins
          pw("p2", "a", votes=[("ba", "a")]),                 # a shown second wins
          pw("p3", "a", votes=[("ab", "a")]),                 # a shown first wins
          pw("p4", "a", consistent=True),                     # no votes at all
          pw("p5", "b", votes=[("ba", "b")])]                 # b shown first wins
    p = position_bias(rs)
    assert (p["n_pairs"], p["consistent"], p["consistency"]) == (2, 2, 1.0)
    assert (p["n_decisive_votes"], p["first_position_wins"], p["first_position_share"]) == (5, 3, 0.6)
    assert position_bias(rs[1:3])["first_position_share"] == 0.5  # one first-shown win, one second-shown
    assert position_bias([pw("p1", None)]) == {
        "n_pairs": 0, "consistent": 0, "consistency": None, "n_decisive_votes": 0, "first_position_wins": 0,
        "first_position_share": None, "first_position_p_value": 1.0}


# ----------------------------------------------------------------- ratings


def test_rating_shares_with_only_nulls_has_no_values():
    none = {"value": None, "ci": [None, None]}
    h = rating_shares([None, None], "helpfulness_6", n_boot=20)
    assert (h["n"], h["n_parsed"], h["null"]) == (2, 0, 2)
    assert h["shares"] == {str(v): none for v in range(1, 7)} and h["mean"] == none
    f = rating_shares([None], "fail_pass_excellent", n_boot=20)
    assert f["shares"] == {k: none for k in ("fail", "pass", "excellent")} and f["pass_or_better"] == none


# 60 scores, a sixth of them null: the resampled means take many distinct values, so the interval's percentiles
# move with the number of resamples (with few distinct values 2000 and 2001 resamples can give the same interval)
SCORES = [[1, 6, 2, 5, None, 3, 4, 6, None, 2, 1, 5][(7 * i + 1) % 12] for i in range(60)]


def test_rating_shares_mean_interval_follows_the_definition_with_defaults():
    parsed = [s for s in SCORES if s is not None]
    r = rating_shares(SCORES, "helpfulness_6")
    assert r["mean"]["ci"] != rating_shares(SCORES, "helpfulness_6", n_boot=2001)["mean"]["ci"]
    assert r["mean"]["value"] == pytest.approx(sum(parsed) / len(parsed))
    assert r["mean"]["ci"] == pytest.approx(reference_interval(SCORES, sum, 2000, 0))


def test_ratings_rows_per_model_judge_and_scale_with_default_resamples():
    recs = [ab(f"p{i}", s, scale="helpfulness_6") for i, s in enumerate(SCORES)] + [ab("p1", "pass", judge="j2@host")]
    rows = ratings(recs)
    assert rows == [
        {"model": "A", "judge": "j1", "label": "A (j1)", **rating_shares(SCORES, "helpfulness_6", n_boot=2000, seed=0)},
        {"model": "A", "judge": "j2@host", "label": "A (j2)", **rating_shares(["pass"], "fail_pass_excellent")}]


# ----------------------------------------------------------------- summarize


def judged_by_two(n: int = 24) -> list[dict]:
    """Two model judges on n prompts, agreeing on about half, with answers of different lengths."""
    cycle = ["a", "b", "tie", "a", "a", "b"]
    recs = []
    for i in range(n):
        for judge, shift in (("j1", 0), ("gpt4", 2 * (i % 2))):
            r = pw(f"p{i}", cycle[(i + shift) % 6], judge=judge, votes=[("ab", "a"), ("ba", cycle[i % 6])])
            r["output_a"], r["output_b"] = "x" * (5 + 7 * (i % 5)), "y" * (20 + 3 * (i % 4))
            recs.append(r)
    return recs + [ab(f"p{i}", 1 + i % 6, scale="helpfulness_6") for i in range(n)]


def test_summarize_hands_its_resampling_settings_and_groups_to_every_piece():
    recs = judged_by_two()
    groups = [("gpt", "gpt judges")]
    s = summarize(recs, n_boot=120, seed=7, groups=groups)
    comps = comparisons(recs)
    assert len(comps) == 2
    for row, c in zip(s["pairwise"], comps, strict=True):
        rs = c["records"]
        wr = win_rates([r["verdict"] for r in rs], n_boot=120, seed=7)
        assert wr["interval"] == BOOTSTRAP_RATES and wr["counts"]["b"] > 0 and wr["rates"]["tie"]["value"] > 0
        assert row == {"label": f"A vs B ({c['judge']})", "model_a": "A", "model_b": "B", "judge": c["judge"], **wr,
                       "position": position_bias(rs), "length": length_bias(rs, n_boot=120, seed=7),
                       "power": power_analysis(wr["counts"]["a"] + wr["counts"]["b"], wr["rates"]["tie"]["value"])}
    assert s["pooled_agreement"] == pooled_agreement(recs, groups, n_boot=120, seed=7)
    (row,) = s["pooled_agreement"]["rows"]  # j1 against the group: 24 items, so bootstrapped
    assert (row["group_1"], row["group_2"], row["with_ties"]["interval"]) == ("j1", "gpt judges", BOOTSTRAP)
    assert s["absolute"] == ratings(recs, n_boot=120, seed=7)


def test_summarize_defaults_to_2000_resamples_with_seed_0():
    s = summarize(judged_by_two())
    assert s["pairwise"][0]["bootstrap"] == {"n_boot": 2000, "seed": 0, "confidence": 0.95, "unit": "prompt"}


def test_summarize_files_records_the_files_and_summarizes_them(tmp_path):
    recs = judged_by_two(4)
    path = write(tmp_path / "j.jsonl", recs)
    groups = [("j", "js")]
    assert summarize_files([path], n_boot=50, seed=4, groups=groups) == {
        "files": [path], **summarize(load_judgments([path]), n_boot=50, seed=4, groups=groups)}
    assert summarize_files([path])["pairwise"][0]["bootstrap"] == {"n_boot": 2000, "seed": 0, "confidence": 0.95,
                                                                   "unit": "prompt"}
