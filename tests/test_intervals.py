"""Small samples: where a prompt bootstrap collapses, win-rate intervals are Wilson's, and the output says so."""

from __future__ import annotations

import pytest

from lima_align.intervals import MIN_DECISIVE, SMALL_SAMPLE, small_sample, wilson, wilson_rates
from lima_align.stats import summarize, win_rates
from lima_align.stats_text import format_summary


def pw(pid, verdict, judge="j1"):
    return {"type": "pairwise", "prompt_id": pid, "model_a": "aligned", "model_b": "base", "judge": judge,
            "output_a": "x", "output_b": "y", "verdict": verdict, "votes": []}


def test_two_alike_verdicts_no_longer_give_a_point_interval():
    r = win_rates(["a", "a"], n_boot=500)
    assert r["interval"] == SMALL_SAMPLE
    assert r["rates"]["a"]["value"] == 1.0
    assert r["rates"]["a"]["ci"] == pytest.approx([0.3424, 1.0], abs=1e-4)  # Wilson 2 of 2, not [1.0, 1.0]
    assert r["rates"]["b"]["ci"] == pytest.approx([0.0, 0.6576], abs=1e-4)
    assert r["rates"]["score"]["ci"] == r["rates"]["a"]["ci"]  # no ties: the score is a's share


def test_few_decisive_prompts_use_wilson_many_use_the_bootstrap():
    few = ["a"] * 12 + ["b"] * 7 + ["tie"] * 30  # 19 decisive prompts
    r = win_rates(few, n_boot=300)
    assert r["interval"] == SMALL_SAMPLE and r["rates"]["tie"]["ci"] == pytest.approx(wilson(30, 49)["ci"])
    assert r["rates"]["score"]["ci"] == pytest.approx(wilson(12 + 15, 49)["ci"])  # half a success per tie
    many = ["a"] * 12 + ["b"] * 8 + ["tie"] * 30  # 20 decisive prompts
    r = win_rates(many, n_boot=300)
    assert r["interval"].startswith("percentile bootstrap") and r["rates"]["tie"]["ci"] != pytest.approx(
        wilson(30, 50)["ci"])
    assert small_sample({"a": 0, "tie": 40, "b": 0, "null": 3}) and not small_sample({"a": 0, "tie": 0, "b": 0})
    assert MIN_DECISIVE == 20


def test_wilson_score_mirrors_when_the_models_swap():
    a = wilson_rates({"a": 3, "tie": 2, "b": 1})["score"]
    b = wilson_rates({"a": 1, "tie": 2, "b": 3})["score"]
    assert a["value"] == pytest.approx(1 - b["value"]) and a["ci"] == pytest.approx([1 - b["ci"][1], 1 - b["ci"][0]])


def test_pooled_people_rows_and_text_say_which_interval():
    recs = [pw(f"p{i}", "a", judge=j) for j in ("human:ann", "human:bob") for i in range(3)]
    s = summarize(recs, n_boot=200)
    (p,) = s["pooled"]["pairwise"]
    assert p["interval"].startswith("Wilson") and "n = prompts" in p["interval"]
    assert p["rates"]["a"]["ci"] == pytest.approx(wilson(3, 3)["ci"])  # 3 prompts, not 6 correlated votes
    assert p["decisive"]["ci"] == pytest.approx(wilson(3, 3)["ci"])
    text = format_summary(s, full=True)
    assert "aligned vs base (human:ann) *" in text and "aligned vs base (people) *" in text
    assert "Wilson score intervals over prompts" in text


def test_a_share_of_zero_gets_wilson_even_with_many_prompts():
    r = win_rates(["a"] * 150 + ["tie"] * 10, n_boot=300)  # b never wins: its bootstrap share is always 0
    assert not r["interval"].startswith("Wilson score") and "0% or 100%" in r["interval"]
    assert r["rates"]["b"]["ci"] == pytest.approx(wilson(0, 160)["ci"]) and r["rates"]["b"]["ci"][1] > 0.02
    assert r["rates"]["a"]["ci"] != pytest.approx(wilson(150, 160)["ci"])  # the others keep the bootstrap
