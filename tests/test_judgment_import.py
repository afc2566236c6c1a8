"""Importing published judgments (MT-Bench votes, AlpacaEval annotations) on small files written here."""

from __future__ import annotations

import json

import pytest

from lima_align.errors import LimaError
from lima_align.importers import alpaca_eval_id
from lima_align.judgment_import import (
    describe_repeats,
    import_alpaca_eval_annotations,
    import_mt_bench_judgments,
    preference_verdict,
)
from lima_align.jsonl import write_jsonl_atomic
from lima_align.stats import load_judgments


def vote(judge, a, b, winner, qid=81, turn=1, **extra):
    return {"question_id": qid, "model_a": a, "model_b": b, "winner": winner, "judge": judge, "turn": turn, **extra}


def write_lines(path, objs):
    path.write_text("".join(json.dumps(o) + "\n" for o in objs))
    return path


def test_mt_bench_votes_keep_judge_turn_order_and_ties(tmp_path):
    f = write_lines(tmp_path / "human.jsonl", [
        vote("expert_3", "gpt-4", "llama-13b", "model_a"),
        vote("author_1", "llama-13b", "gpt-4", "model_a", turn=2),
        vote("expert_3", "claude-v1", "gpt-4", "tie", qid="82"),
    ])
    g = write_lines(tmp_path / "gpt4_pair.jsonl", [
        vote("gpt4_pair", "claude-v1", "gpt-4", "tie (inconsistent)", qid=82),
        vote("gpt4_pair", "gpt-4", "llama-13b", "model_b")])
    recs, repeats = import_mt_bench_judgments([f, g])
    assert repeats == []
    got = [(r["judge"], r["prompt_id"], r["turn"], r["model_a"], r["model_b"], r["verdict"], r.get("consistent"))
           for r in recs]
    assert got == [("human:expert_3", "81", 1, "gpt-4", "llama-13b", "a", None),
                   ("human:author_1", "81-turn2", 2, "llama-13b", "gpt-4", "a", None),
                   ("human:expert_3", "82", 1, "claude-v1", "gpt-4", "tie", None),
                   ("gpt4_pair", "82", 1, "claude-v1", "gpt-4", "tie", False),
                   ("gpt4_pair", "81", 1, "gpt-4", "llama-13b", "b", True)]
    assert recs[3]["meta"]["winner"] == "tie (inconsistent)" and recs[2]["meta"]["winner"] == "tie"
    assert recs[0]["output_a"] == "" and recs[0]["meta"]["outputs"] == "absent"
    out = tmp_path / "j.jsonl"
    write_jsonl_atomic(out, recs)
    assert len(load_judgments([out])) == 5  # stats reads them as they are
    from lima_align.report import build_report

    page = build_report([out], tmp_path / "report", n_boot=20).read_text()
    assert page.count("answer not in the imported file") == 3 * 2  # items 81, 81-turn2, 82: no answer either side


def test_mt_bench_conversations_become_outputs_of_the_judged_turn(tmp_path):
    conv = lambda tag: [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": f"{tag} one"},  # noqa: E731
                        {"role": "user", "content": "Q2"}, {"role": "assistant", "content": f"{tag} two"}]
    f = tmp_path / "human_judgments.json"  # the full release is one JSON list, GPT-4 named as a list
    f.write_text(json.dumps([vote(["gpt-4", "pair-v2"], "m1", "m2", "model_b", turn=2,
                                  conversation_a=conv("A"), conversation_b=conv("B"))]))
    (r,), _ = import_mt_bench_judgments([f])
    assert r["judge"] == "gpt-4/pair-v2" and r["prompt_id"] == "81-turn2"
    assert (r["output_a"], r["output_b"]) == ("A two", "B two")
    assert [m["content"] for m in r["prompt"]] == ["Q1", "A one", "Q2"]
    assert [m["content"] for m in r["meta"]["prompt_b"]] == ["Q1", "B one", "Q2"]  # b's own first answer
    assert r["meta"]["outputs"] == "conversation"


def test_mt_bench_repeated_vote_is_kept_once_and_reported(tmp_path):
    f = write_lines(tmp_path / "h.jsonl", [vote("author_0", "claude-v1", "gpt-3.5-turbo", "tie"),
                                           vote("expert_1", "claude-v1", "gpt-3.5-turbo", "model_a"),
                                           vote("author_0", "gpt-3.5-turbo", "claude-v1", "model_b"),
                                           vote("author_0", "claude-v1", "gpt-3.5-turbo", "model_a", turn=2)])
    recs, repeats = import_mt_bench_judgments([f])
    assert [(r["judge"], r["verdict"]) for r in recs] == [("human:author_0", "tie"), ("human:expert_1", "a"),
                                                          ("human:author_0", "a")]
    assert repeats == [{"judge": "human:author_0", "prompt_id": "81", "kept": f"{f}:1", "dropped": f"{f}:3",
                        "same_verdict": False}]
    assert "a DIFFERENT verdict" in "\n".join(describe_repeats(repeats))


def test_mt_bench_bad_votes_are_all_reported(tmp_path):
    f = write_lines(tmp_path / "h.jsonl", [vote("expert_1", "m1", "m2", "model_c"),
                                           vote("expert_1", "m1", "m1", "tie"),
                                           {**vote("expert_1", "m1", "m2", "tie"), "turn": 0}])
    with pytest.raises(LimaError) as e:
        import_mt_bench_judgments([f])
    text = str(e.value)
    assert f"{f}:1 winner" in text and f"{f}:2 model_b" in text and f"{f}:3 turn" in text


def annotation(pref, annotator="weighted_alpaca_eval_gpt4_turbo", **kw):
    return {"instruction": "Name a colour.", "output_1": "Red.", "output_2": "Blue is a colour.",
            "generator_1": "gpt4_1106_preview", "generator_2": "my-model", "annotator": annotator,
            "preference": pref, **kw}


def test_alpaca_eval_annotations_keep_order_ties_and_our_prompt_ids(tmp_path):
    f = tmp_path / "annotations.json"
    f.write_text(json.dumps([annotation(1), annotation(2.0, "human_2", instruction="Say hi."),
                             annotation(1.5, "human_3", instruction="Say hi."), annotation(0, "h", instruction="X"),
                             annotation(1.9731, "w", instruction="Y"), annotation(None, "w", instruction="Z")]))
    recs, repeats = import_alpaca_eval_annotations([f])
    assert repeats == []
    assert [(r["judge"], r["verdict"]) for r in recs] == [
        ("weighted_alpaca_eval_gpt4_turbo", "a"), ("human:human_2", "b"), ("human:human_3", "tie"), ("h", "tie"),
        ("w", "b"), ("w", None)]
    r = recs[0]
    assert r["prompt_id"] == alpaca_eval_id("Name a colour.")
    assert (r["model_a"], r["model_b"], r["output_a"], r["output_b"]) == ("gpt4_1106_preview", "my-model", "Red.",
                                                                          "Blue is a colour.")
    assert recs[4]["meta"]["preference"] == 1.9731
    out = tmp_path / "j.jsonl"
    write_jsonl_atomic(out, recs)
    assert len(load_judgments([out])) == 6


def test_alpaca_eval_repeats_and_bad_preferences(tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps([annotation(1), annotation(2, generator_1="my-model", generator_2="gpt4_1106_preview",
                                                        output_1="Blue is a colour.", output_2="Red.")]))
    recs, repeats = import_alpaca_eval_annotations([f])
    assert len(recs) == 1 and repeats[0]["same_verdict"] is True  # the same preference, written the other way
    g = tmp_path / "b.json"
    g.write_text(json.dumps([annotation(3), annotation(True), {**annotation(1), "annotator": None}]))
    with pytest.raises(LimaError) as e:
        import_alpaca_eval_annotations([g])
    assert f"{g}[0] preference" in str(e.value) and f"{g}[1] preference" in str(e.value)
    assert f"{g}[2] annotator" in str(e.value)
    h = tmp_path / "c.json"
    h.write_text(json.dumps([{k: v for k, v in annotation(1).items() if k != "annotator"},
                             annotation(2, "w", instruction="Y")]))
    recs, _ = import_alpaca_eval_annotations([h], judge="gpt4")
    assert [r["judge"] for r in recs] == ["gpt4", "w"]  # --judge only names annotations that carry no annotator


@pytest.mark.parametrize(("pref", "verdict"), [(1, "a"), (2, "b"), (1.5, "tie"), (0, "tie"), (1.2, "a"),
                                               (1.51, "b"), (None, None), (float("nan"), None), (2.5, False),
                                               ("1", False), (False, False)])
def test_preference_verdict(pref, verdict):
    assert preference_verdict(pref) is verdict or preference_verdict(pref) == verdict


def test_cli_import_then_stats_prints_pooled_agreement_per_turn(tmp_path, capsys):
    from lima_align.cli import main

    votes = [vote(j, "m1", "m2", w, qid=q, turn=t) for t in (1, 2) for q in (81, 82)
             for j, w in (("expert_1", "model_a"), ("expert_2", "model_a"), ("author_1", "tie"))]
    votes += [vote("gpt4_pair", "m2", "m1", "model_b", qid=q, turn=t) for t in (1, 2) for q in (81, 82)]
    f = write_lines(tmp_path / "votes.jsonl", votes)
    out = tmp_path / "j.jsonl"
    assert main(["import", "mt_bench_judgments", str(f), "--output", str(out)]) == 0
    assert "imported 16 judgments by 3 people and 1 other judges" in capsys.readouterr().out
    assert main(["stats", str(out), "--n-boot", "50", "--group", "human:expert_=experts"]) == 0
    text = capsys.readouterr().out
    # per turn: experts agree with GPT-4 on both items (2 votes each), 4/4; among themselves 2/2; the author's
    # ties are its own default group "people"
    assert "experts (2) ~ gpt4_pair (1)" in text and "4/4 100.0%" in text and "2/2 100.0%" in text
    assert [line.split()[0] for line in text.splitlines() if "experts (2) ~ gpt4_pair" in line] == ["1", "2"]
    assert main(["import", "fastchat", str(f), str(f), "--output", str(out)]) == 2
    assert "takes one outputs file" in capsys.readouterr().err


def test_a_file_of_another_kind_is_one_clear_error(tmp_path):
    votes = write_lines(tmp_path / "human.jsonl", [vote("expert_1", "m1", "m2", "model_a")])
    with pytest.raises(LimaError) as e:
        import_alpaca_eval_annotations([votes])
    assert len(e.value.problems) == 1 and "looks like MT-Bench votes" in str(e.value)
    assert "import mt_bench_judgments" in e.value.problems[0].fix
    ours = tmp_path / "j.jsonl"
    write_jsonl_atomic(ours, import_mt_bench_judgments([votes])[0])
    with pytest.raises(LimaError, match="looks like a lima-align judgments file"):
        import_mt_bench_judgments([ours])
