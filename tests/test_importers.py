"""Importers: AlpacaEval outputs and FastChat answers become generations records with matching prompt ids."""

from __future__ import annotations

import hashlib
import json

import pytest

from lima_align.errors import LimaError
from lima_align.generate import read_generations
from lima_align.importers import (
    alpaca_eval_id, import_alpaca_eval, import_fastchat_answers, prompts_from_alpaca_eval, read_fastchat_questions,
)
from lima_align.jsonl import write_jsonl_atomic

INSTRUCTIONS = ["What is the capital of Italy?", "Write a haiku about rain.", "How do I boil an egg?"]


def alpaca_file(path, generator, outputs, datasets=("vicuna", "oasst", "koala")):
    items = [{"dataset": d, "instruction": i, "output": o, "generator": generator}
             for i, o, d in zip(INSTRUCTIONS, outputs, datasets)]
    path.write_text(json.dumps(items))
    return path


def test_alpaca_eval_records_and_ids_match_across_models(tmp_path):
    a = import_alpaca_eval(alpaca_file(tmp_path / "a.json", "model_a", ["Rome.", "Drops fall.", ""]))
    b = import_alpaca_eval(alpaca_file(tmp_path / "b.json", "model_b", ["It is Rome.", "Rain.", "Boil it."]))
    assert [r["prompt_id"] for r in a] == [r["prompt_id"] for r in b]
    r = a[0]
    expected = "ae-" + hashlib.sha256(INSTRUCTIONS[0].encode()).hexdigest()[:12]
    assert r["prompt_id"] == expected == alpaca_eval_id(INSTRUCTIONS[0])
    assert r["model"] == "model_a" and r["output"] == "Rome." and r["id"] == f"model_a:{expected}"
    assert r["messages"] == [{"role": "user", "content": INSTRUCTIONS[0]}]
    assert r["meta"]["dataset"] == "vicuna" and r["meta"]["generator"] == "model_a"
    assert r["tokens"] is None and r["finish_reason"] is None
    assert a[2]["output"] == ""  # an empty answer is what the model said; it is kept

    out = write_jsonl_atomic(tmp_path / "a.jsonl", a)  # what `generate import` writes reads back
    assert [g["prompt_id"] for g in read_generations(out)] == [g["prompt_id"] for g in a]


def test_prompts_from_alpaca_eval_use_the_same_ids(tmp_path):
    path = alpaca_file(tmp_path / "a.json", "model_a", ["x", "y", "z"])
    convs = prompts_from_alpaca_eval(path)
    assert [c.id for c in convs] == [r["prompt_id"] for r in import_alpaca_eval(path)]
    assert [(m.role, m.content) for m in convs[1].messages] == [("user", INSTRUCTIONS[1])]
    assert convs[1].meta == {"dataset": "oasst"}


def test_alpaca_eval_errors_name_file_index_and_field(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([
        {"instruction": "fine", "output": "ok", "generator": "g"},
        {"instruction": "no output", "generator": "g"},
        {"instruction": 3, "output": "x", "generator": "g"},
        {"instruction": "fine", "output": "again", "generator": "g"},
    ]))
    with pytest.raises(LimaError) as e:
        import_alpaca_eval(path)
    msg = str(e.value)
    assert f"{path}[1] output" in msg and "missing" in msg
    assert f"{path}[2] instruction" in msg
    assert f"{path}[3] instruction" in msg and f"{path}[0]" in msg  # the duplicate names the first one
    (tmp_path / "obj.json").write_text('{"instruction": "x"}')
    with pytest.raises(LimaError, match="JSON list"):
        import_alpaca_eval(tmp_path / "obj.json")


QUESTIONS = [
    {"question_id": 81, "category": "writing",
     "turns": ["Write a blog post about Hawaii.", "Now rewrite it in A-words."]},
    {"question_id": 82, "category": "math", "turns": ["What is 2+2?", "And 3+3?"]},
]


def fastchat_files(tmp_path, answers):
    bench = tmp_path / "mt_bench"
    (bench / "model_answer").mkdir(parents=True)
    (bench / "question.jsonl").write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS))
    ans = bench / "model_answer" / "m.jsonl"
    ans.write_text("".join(json.dumps(a) + "\n" for a in answers))
    return ans, bench / "question.jsonl"


def answer(qid, turns, model="m"):
    return {"question_id": qid, "answer_id": f"a{qid}", "model_id": model, "choices": [{"index": 0, "turns": turns}]}


def test_fastchat_multi_turn_becomes_the_last_turn(tmp_path):
    ans, q = fastchat_files(tmp_path, [answer(81, ["Aloha! Hawaii...", "A lovely island..."]), answer(82, ["4"])])
    recs = import_fastchat_answers(ans, q)
    two, one = recs
    assert two["prompt_id"] == "81-turn2" and two["model"] == "m" and two["output"] == "A lovely island..."
    assert two["messages"] == [{"role": "user", "content": QUESTIONS[0]["turns"][0]},
                               {"role": "assistant", "content": "Aloha! Hawaii..."},
                               {"role": "user", "content": QUESTIONS[0]["turns"][1]}]
    assert two["meta"]["turn"] == 2 and two["meta"]["category"] == "writing" and two["meta"]["question_id"] == "81"
    assert one["prompt_id"] == "82" and one["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    assert one["output"] == "4"
    # FastChat's layout (<bench>/model_answer/x.jsonl next to <bench>/question.jsonl) is found by itself
    def timeless(rs):
        return [{k: v for k, v in r.items() if k != "created"} for r in rs]
    assert timeless(import_fastchat_answers(ans)) == timeless(recs)


def test_fastchat_without_question_file_says_how_to_fix(tmp_path):
    ans = tmp_path / "answers.jsonl"
    ans.write_text(json.dumps(answer(81, ["x"])) + "\n")
    with pytest.raises(LimaError, match="pass the question file"):
        import_fastchat_answers(ans)


def test_fastchat_errors_name_file_line_and_field(tmp_path):
    ans, q = fastchat_files(tmp_path, [
        answer(81, ["fine"]),
        {"question_id": 82, "model_id": "m", "choices": []},
        answer(99, ["unknown question"]),
        answer(82, ["a", "b", "c"]),
        {"question_id": 81, "choices": [{"turns": ["no model"]}]},
        answer(81, ["twice"]),
        answer(82, ["x", 5]),
    ])
    with pytest.raises(LimaError) as e:
        import_fastchat_answers(ans, q)
    msg = str(e.value)
    assert f"{ans}:2 choices" in msg
    assert f"{ans}:3 question_id" in msg and "question 99" in msg
    assert f"{ans}:4 choices[0].turns" in msg and "3 answers" in msg
    assert f"{ans}:5 model_id" in msg
    assert f"{ans}:6 question_id" in msg and f"{ans}:1" in msg
    assert f"{ans}:7 choices[0].turns[1]" in msg


def test_question_file_errors(tmp_path):
    q = tmp_path / "question.jsonl"
    q.write_text('{"question_id": 1, "turns": ["a"]}\n{"turns": ["b"]}\n{"question_id": 1, "turns": ["c"]}\n')
    with pytest.raises(LimaError) as e:
        read_fastchat_questions(q)
    assert f"{q}:2 question_id" in str(e.value) and f"{q}:3 question_id" in str(e.value)
