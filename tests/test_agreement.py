"""Pooled agreement between groups of judges (agreement.py), counted by hand."""

from __future__ import annotations

import json

import pytest

from lima_align.agreement import BOOTSTRAP, WILSON, format_agreement, parse_groups, pooled_agreement
from lima_align.errors import LimaError
from lima_align.stats import summarize
from lima_align.stats_text import format_summary


def pw(pid, verdict, judge, *, a="aligned", b="base", turn=None):
    r = {"type": "pairwise", "prompt_id": pid, "model_a": a, "model_b": b, "judge": judge, "output_a": "x",
         "output_b": "y", "verdict": verdict, "votes": []}
    return r if turn is None else {**r, "turn": turn}


H1, H2, H3, G = "human:h1", "human:h2", "human:h3", "gpt4"
RECS = [pw("p1", "a", H1, turn=1), pw("p1", "a", H2, turn=1), pw("p1", "tie", H3, turn=1), pw("p1", "b", G, turn=1),
        pw("p2", "b", H1, turn=1), pw("p2", "a", G, a="base", b="aligned", turn=1),  # written the other way round
        pw("p1-turn2", "a", H1, turn=2), pw("p1-turn2", None, H2, turn=2), pw("p1-turn2", "a", G, turn=2)]


def rows_by(pa):
    return {(r["turn"], r["group_1"], r["group_2"]): r for r in pa["rows"]}


def test_people_within_and_against_a_model_judge_by_hand():
    rows = rows_by(pooled_agreement(RECS, n_boot=100))
    within, cross = rows[(1, "people", "people")], rows[(1, "people", G)]
    # within, p1: (a, a) (a, tie) (a, tie) -> with ties 1 of 3, without ties 1 of 1; p2 has one person: no pair
    assert (within["with_ties"]["agreed"], within["with_ties"]["n"]) == (1, 3)
    assert (within["without_ties"]["agreed"], within["without_ties"]["n"]) == (1, 1)
    assert within["tie_discounted_accuracy"] == pytest.approx(2 / 3)
    # kappa with each pair in both orders: p_o = 1/3, both margins a 4/6 tie 2/6 -> p_e = 5/9 -> -1/2
    assert within["kappa"] == pytest.approx(-0.5)
    # people ~ gpt4, p1: (a, b) (a, b) (tie, b); p2: (b, b) -> 1 of 4; without ties (a, b) (a, b) (b, b) -> 1 of 3
    assert (cross["with_ties"]["agreed"], cross["with_ties"]["n"]) == (1, 4)
    assert (cross["without_ties"]["agreed"], cross["without_ties"]["n"]) == (1, 3)
    assert (cross["members_1"], cross["members_2"], cross["within"]) == (3, 1, False)
    # turn 2 is its own row; the unparsed vote takes part in no pair, and gpt4 alone has no within row
    assert (rows[(2, "people", G)]["with_ties"]["agreed"], rows[(2, "people", G)]["with_ties"]["n"]) == (1, 1)
    assert (2, "people", "people") not in rows and (1, G, G) not in rows


def test_groups_split_people_and_first_match_wins():
    pa = pooled_agreement(RECS, parse_groups(["human:h3=odd", "human:h=rest"]), n_boot=0)
    rows = rows_by(pa)
    assert (rows[(1, "rest", "rest")]["with_ties"]["agreed"], rows[(1, "rest", "rest")]["with_ties"]["n"]) == (1, 1)
    assert (rows[(1, "rest", "odd")]["with_ties"]["agreed"], rows[(1, "rest", "odd")]["with_ties"]["n"]) == (0, 2)
    assert (1, "odd", "odd") not in rows  # one member: no pair, no row
    with pytest.raises(LimaError, match="PREFIX=NAME"):
        parse_groups(["experts"])


def test_a_judge_is_never_paired_with_itself():
    recs = [pw("p1", "a", H1), pw("p1", "b", H1), pw("p1", "a", H2)]  # h1 twice (load_judgments would refuse it)
    (row,) = pooled_agreement(recs, n_boot=0)["rows"]
    assert (row["with_ties"]["agreed"], row["with_ties"]["n"]) == (1, 2) and row["turn"] is None


def test_small_samples_get_wilson_and_say_so():
    row = rows_by(pooled_agreement(RECS, n_boot=200))[(2, "people", G)]  # 1 of 1: the bootstrap cannot move
    assert row["with_ties"]["interval"] == WILSON
    assert row["with_ties"]["ci"][0] == pytest.approx(0.2065, abs=1e-4) and row["with_ties"]["ci"][1] == 1.0
    text = format_agreement(pooled_agreement(RECS, n_boot=200))
    assert "* = Wilson over pairs" in text and "1/1 100.0% [20.7, 100.0%]*" in text


def test_enough_items_use_the_item_bootstrap():
    recs = []
    for i in range(30):
        recs += [pw(f"p{i}", "a", H1), pw(f"p{i}", "a" if i % 3 else "b", G)]
    (row,) = pooled_agreement(recs, n_boot=300)["rows"]
    w = row["with_ties"]
    assert (w["agreed"], w["n"], w["items"], w["interval"]) == (20, 30, 30, BOOTSTRAP)
    assert w["ci"][0] < 2 / 3 < w["ci"][1] and w["ci"] != pytest.approx(WILSON_CI(20, 30))


def WILSON_CI(k, n):  # noqa: N802
    from lima_align.stats import wilson

    return wilson(k, n)["ci"]


def test_summary_prints_pooled_agreement_and_judge_pairs_only_on_request():
    s = summarize(RECS, n_boot=50)
    json.dumps(s, allow_nan=False)
    assert all(g["n"] > 0 for g in s["agreement"]) and s["pooled_agreement"]["rows"]
    text = format_summary(s)
    assert "pooled judge agreement" in text and "people (3) ~ gpt4 (1)" in text
    assert "judge agreement, per judge pair" not in text and "--by-pair prints them" in text
    assert "judge agreement, per judge pair" in format_summary(s, by_pair=True)


def test_report_on_many_judges_collapses_people_but_report_json_keeps_every_row(tmp_path):
    from lima_align.jsonl import write_jsonl_atomic
    from lima_align.report import build_report

    models = [f"m{i}" for i in range(7)]
    pairs = [(a, b) for i, a in enumerate(models) for b in models[i + 1:]][:16]
    recs = [pw(f"p{k}", v, j, a=a, b=b) for a, b in pairs for k in range(3)
            for j, v in ((H1, "a"), (H2, "a" if k else "b"), (G, "tie"))]
    f = tmp_path / "j.jsonl"
    write_jsonl_atomic(f, recs)
    page = build_report([f], tmp_path / "report", n_boot=50)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert len(report["pairwise"]) == 48 and report["pooled_agreement"]["rows"]  # 16 pairs x 3 judges, all kept
    text = page.read_text()
    assert "32 comparisons by single people are not shown one by one" in text
    table = text[text.index("<h2>Win rates"):].split("</section>", 1)[0]
    assert "human:h1" not in table and ">gpt4</td>" in table  # the summary table: model judge rows only
    assert "people (2)" in text and "Per judge pair" in text
    s = summarize(recs, n_boot=20)
    assert "32 rows of single people left out" in format_summary(s)
    assert "rows of single people left out" not in format_summary(s, full=True)


def test_each_model_judge_is_its_own_group_even_with_one_model_name():
    recs = [pw("p1", "a", "api:m@https://one/v1"), pw("p1", "b", "api:m@https://two/v1")]
    (row,) = pooled_agreement(recs, n_boot=0)["rows"]
    assert (row["group_1"], row["group_2"], row["within"]) == ("api:m@https://one/v1", "api:m@https://two/v1", False)
