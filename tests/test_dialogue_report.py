"""The Figure 7 view: shares over turns, quality by turn, conversation verdicts, escaped transcripts."""

from __future__ import annotations

import json

import pytest

from test_dialogue_judge import Assistant, RulesJudge

from lima_align.dialogue.conversations import Plan, converse, read_conversations_file
from lima_align.dialogue.judging import judge_conversations, judge_turns
from lima_align.dialogue.report import build, conversation_summary, split, turn_summary
from lima_align.report import build_report


def rating(model, cid, turn, score, judge="human:ana", with_fields=True):
    r = {"id": f"{model}-{cid}-{turn}-{judge}", "type": "absolute", "prompt_id": f"{cid}#t{turn}",
         "prompt": [{"role": "user", "content": "q"}], "model": model, "output": "o", "judge": judge,
         "instructions": {"name": "turn", "sha256": "0"}, "scale": "fail_pass_excellent", "raw": "", "score": score,
         "usage": {}, "created": 0}
    return {**r, "conversation_id": cid, "turn": turn} if with_fields else r


def test_turn_summary_shares_by_turn_and_early_failures():
    rs = [rating("m", "c1", 1, "excellent"), rating("m", "c1", 2, "fail"), rating("m", "c1", 3, "pass"),
          rating("m", "c2", 1, "excellent", with_fields=False), rating("m", "c2", 2, "excellent", with_fields=False),
          rating("m", "c2", 4, "fail"), rating("m", "c2", 3, None),
          {"type": "absolute", "prompt_id": "not-a-turn", "scale": "fail_pass_excellent", "model": "m", "judge": "x"}]
    turns, pairs = split(rs)
    assert len(turns) == 7 and pairs == []
    (s,) = turn_summary(turns)
    assert s["n"] == 6 and s["null"] == 1 and s["counts"] == {"fail": 2, "pass": 1, "excellent": 3}
    assert s["shares"]["excellent"] == 0.5
    assert [t["turn"] for t in s["by_turn"]] == [1, 2, 3, 4]
    assert s["by_turn"][0]["shares"]["excellent"] == 1.0 and s["by_turn"][1]["shares"]["fail"] == 0.5
    assert s["conversations"] == 2 and s["failed_within_3_turns"] == 1  # c2 fails only at turn 4
    assert s["failed_within_3_turns_unknown"] == 1  # ... but its turn 3 is unparsed: it may have failed there


def test_unparsed_ratings_count_as_unknown_never_as_passes(tmp_path):
    """Every rating unparsed: nobody knows whether a conversation failed early, so "0 of 2" would be a claim."""
    from lima_align.dialogue.report import report_section

    rs = [rating("m", c, t, None, judge="api:j") for c in ("c1", "c2") for t in (1, 2, 3)]
    (s,) = turn_summary(split(rs)[0])
    assert s["failed_within_3_turns"] == 0 and s["failed_within_3_turns_unknown"] == 2
    page = report_section(rs, tmp_path)
    assert "0 of 0 rated, 2 unknown (unparsed ratings)" in page and "0 of 2<" not in page
    # people: one of two raters unparsed can tip a turn either way; two fails of three cannot be outvoted
    people = [rating("m", "c1", 1, "fail"), rating("m", "c1", 1, None, judge="human:bo"),
              rating("m", "c2", 1, "fail"), rating("m", "c2", 1, "fail", judge="human:bo"),
              rating("m", "c2", 1, None, judge="human:cy"),
              rating("m", "c3", 1, "pass"), rating("m", "c3", 1, "pass", judge="human:bo"),
              rating("m", "c3", 1, None, judge="human:cy")]
    pooled = {r["judge"]: r for r in turn_summary(split(people)[0])}["people"]
    assert (pooled["failed_within_3_turns"], pooled["failed_within_3_turns_unknown"]) == (1, 1)  # c2; c1 open


def test_conversation_verdicts_are_oriented_consistently():
    base = {"type": "pairwise", "unit": "conversation", "judge": "j"}
    pairs = [{**base, "model_a": "x", "model_b": "y", "verdict": "a", "prompt_id": "1"},
             {**base, "model_a": "y", "model_b": "x", "verdict": "a", "prompt_id": "2"},
             {**base, "model_a": "x", "model_b": "y", "verdict": None, "prompt_id": "3"}]
    (w,) = conversation_summary(pairs)
    assert (w["model_a"], w["model_b"]) == ("x", "y") and w["counts"] == {"a": 1, "tie": 0, "b": 1, "null": 1}


def test_report_pages_render_with_escaped_conversations(tmp_path):
    plans = [Plan(f"d{i}", "scripted", [f"<script>alert({i})</script> first", f"topic {i} second"], 2)
             for i in range(3)]
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    converse(plans, Assistant("with-dialogues", "good"), a, progress=False)
    converse(plans, Assistant("single-turn", "forgetful"), b, progress=False)
    ca, cb = read_conversations_file(a), read_conversations_file(b)
    turns, convs = tmp_path / "turns.jsonl", tmp_path / "convs.jsonl"
    judge_turns(ca + cb, [RulesJudge()], turns, cache_path=tmp_path / "c.sqlite", progress=False)
    judge_conversations(ca, cb, [RulesJudge()], convs, cache_path=tmp_path / "c.sqlite", progress=False)

    page = build([turns, convs], tmp_path / "out", conversation_paths=[a, b])
    text = page.read_text()
    assert "Multi-turn dialogue (LIMA Figure 7)" in text and "Conversations side by side" in text
    assert "<script>alert(" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert (tmp_path / "out" / "charts" / "dialogue_by_turn.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "out" / "dialogue.json").read_text())
    by_model = {r["model"]: r for r in summary["turns"]}
    assert by_model["with-dialogues"]["shares"]["excellent"] == 1.0
    assert [t["shares"]["fail"] for t in by_model["single-turn"]["by_turn"]] == [0.0, 1.0]
    assert summary["conversations"][0]["counts"]["a"] == 3

    # `lima-align report` renders the same section beside its own tables
    main = build_report([turns, convs], tmp_path / "main", n_boot=50).read_text()
    assert "Multi-turn dialogue (LIMA Figure 7)" in main and "<script>alert(" not in main
    plain = tmp_path / "plain.jsonl"
    plain.write_text(json.dumps(rating("m", "p1", 1, "pass", with_fields=False) | {"prompt_id": "p1"}) + "\n")
    assert "Multi-turn dialogue" not in build_report([plain], tmp_path / "plain", n_boot=50).read_text()


def test_format_summary_counts_endings_and_user_lines_per_turn():
    from lima_align.dialogue.report import format_summary

    def conv(model, replies, finishes):
        msgs = []
        for r in replies:
            msgs += [{"role": "user", "content": "q"}, {"role": "assistant", "content": r}]
        return {"conversation_id": "c", "model": model, "messages": msgs, "finish_reasons": finishes}

    rows = format_summary([conv("m", ["a b", "c\nUser: more?"], ["eot", "length"]),
                           conv("m", ["d", "e f g h"], ["eot", "eot"])])
    (m,) = rows
    assert m["turns"] == 4 and m["ended_turn"] == 0.75 and m["hit_length_cap"] == 0.25
    t1, t2 = m["by_turn"]
    assert (t1["turn"], t1["ended_turn"], t1["spoke_for_user"], t1["mean_words"]) == (1, 1.0, 0.0, 1.5)
    assert (t2["ended_turn"], t2["spoke_for_user"]) == (0.5, 0.5)


def test_shares_carry_conversation_bootstrap_intervals_and_paired_differences():
    from lima_align.dialogue.report import turn_differences

    def rec(model: str, cid: str, turn: int, score: str, judge: str = "api:j") -> dict:
        return {"type": "absolute", "scale": "fail_pass_excellent", "model": model, "judge": judge,
                "conversation_id": cid, "turn": turn, "score": score, "prompt_id": f"{cid}#t{turn}"}

    turns = []
    for i in range(10):  # model b is excellent on every turn; model a on the first turn only
        for t in (1, 2, 3):
            turns.append(rec("b", f"c{i}", t, "excellent"))
            turns.append(rec("a", f"c{i}", t, "excellent" if t == 1 else "fail"))
    turns.append(rec("a", "only-a", 1, "fail"))  # not shared: left out of the paired difference
    rows = {r["model"]: r for r in turn_summary(turns)}
    # all excellent: the bootstrap cannot move, so Wilson with n = 10 conversations
    assert rows["b"]["ci"]["excellent"] == pytest.approx([0.7225, 1.0], abs=1e-4)
    lo, hi = rows["a"]["ci"]["excellent"]
    assert lo <= rows["a"]["shares"]["excellent"] <= hi and lo < hi
    (d,) = turn_differences(turns)
    assert (d["model_a"], d["model_b"], d["conversations"], d["turns"]) == ("a", "b", 10, [30, 30])
    assert abs(d["difference"]["excellent"]["value"] - 2 / 3) < 1e-9
    # every conversation has the same pattern, so resampling conversations cannot move the difference
    assert d["difference"]["excellent"]["ci"] == pytest.approx([2 / 3, 2 / 3])
    assert d["difference"]["fail"]["value"] == pytest.approx(-2 / 3)


def test_a_difference_between_two_floors_has_an_honest_interval():
    from lima_align.dialogue.report import turn_differences

    turns = [{"type": "absolute", "scale": "fail_pass_excellent", "model": m, "judge": "human:x",
              "conversation_id": f"c{i}", "turn": t, "score": "fail", "prompt_id": f"c{i}#t{t}"}
             for m in ("a", "b") for i in range(14) for t in (1, 2, 3)]
    (d,) = turn_differences(turns)
    lo, hi = d["difference"]["fail"]["ci"]
    assert d["difference"]["fail"]["value"] == 0.0 and lo < -0.2 and hi > 0.2  # not [0, 0]: 14 conversations


def test_format_shares_have_intervals_and_paired_differences(tmp_path):
    from lima_align.dialogue.report import format_differences, format_summary

    def conv(model, cid, finishes):
        msgs = []
        for f in finishes:
            msgs += [{"role": "user", "content": "q"}, {"role": "assistant", "content": "r"}]
        return {"conversation_id": cid, "model": model, "messages": msgs, "finish_reasons": finishes}

    convs = [conv("a", f"c{i}", ["eot", "length"]) for i in range(6)]        # ends half its turns
    convs += [conv("b", f"c{i}", ["eot", "eot"]) for i in range(6)]          # ends every turn
    convs += [conv("b", "only-b", ["length", "length"])]                     # not paired
    rows = {r["model"]: r for r in format_summary(convs)}
    assert rows["a"]["ci"]["ended_turn"] == pytest.approx([0.5, 0.5])  # every conversation the same
    assert rows["a"]["ci"]["spoke_for_user"] == pytest.approx([0.0, 0.39], abs=0.01)  # none: Wilson, n = 6
    (d,) = format_differences(convs)
    assert (d["model_a"], d["model_b"], d["conversations"]) == ("a", "b", 6)
    assert d["difference"]["ended_turn"]["value"] == pytest.approx(0.5)
    assert d["difference"]["hit_length_cap"]["value"] == pytest.approx(-0.5)


def test_people_differences_only_between_models_two_people_rated():
    from lima_align.dialogue.report import turn_differences

    def rec(judge: str, model: str, score: str) -> dict:
        return {"type": "absolute", "scale": "fail_pass_excellent", "model": model, "judge": judge,
                "conversation_id": "c1", "turn": 1, "score": score, "prompt_id": "c1#t1"}

    one_each = [rec("human:a", "m1", "fail"), rec("human:b", "m2", "pass")]
    assert [d["judge"] for d in turn_differences(one_each)] == []  # no person rated both, nobody pooled
    both = one_each + [rec("human:b", "m1", "fail"), rec("human:a", "m2", "pass")]
    assert sorted(d["judge"] for d in turn_differences(both)) == ["human:a", "human:b", "people"]
