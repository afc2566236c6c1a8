"""Judge-free figures of generations files: the list/steps heuristic, repetition, per-model shares with
Wilson intervals, `lima-align answers` and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lima_align import answer_checks as ac
from lima_align.cli import main
from lima_align.errors import LimaError
from lima_align.stats import wilson

SEED_TEST = Path(ac.__file__).parent / "data" / "seed" / "test.jsonl"


def gen(pid: str, prompt: str, output: str, finish: str | None = "eot", tokens: int | None = 10,
        model: str = "m") -> dict:
    return {"id": f"{model}:{pid}", "prompt_id": pid, "model": model,
            "messages": [{"role": "user", "content": prompt}], "output": output, "finish_reason": finish,
            "tokens": None if tokens is None else {"prompt": 5, "output": tokens}, "decoding": {}}


def write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("prompt", [
    "Numbered steps only, no introduction: how to jump-start a car.",
    "Give me exactly 4 bullet points covering what I should check.",
    "Explain it step-by-step.",
    "Brainstorm 15 ways a small library could attract teenagers.",
    "Give me a two-line TL;DR, then the three most practical tips from it.",
    "What are some options?",
    "Any gift ideas that aren't just more stuff?",
    "Outline the argument.",
    "Make me a shopping list for a week of dinners.",
    "List the planets in order.",
])
def test_list_requests_are_recognised(prompt):
    assert ac.asks_for_list(prompt)


@pytest.mark.parametrize("prompt", [
    "How do noise-cancelling headphones actually cancel noise?",
    "Give me a bash command that finds every big file and lists them biggest first.",
    "Write a Python function that takes a list of time intervals and merges them.",
    "Give me a packing list. Output only JSON with the keys clothing and gear.",  # a list inside JSON
    'Put this in plain English: "The assessment examined temperatures across 42 monitoring points in the borough '
    'during the summer months."',  # the number is in the pasted text, not in the request
    "Why does my risotto come out gluey?",
])
def test_other_prompts_are_not_list_requests(prompt):
    assert not ac.asks_for_list(prompt)


def test_heuristic_on_the_seed_test_prompts():
    prompts = {json.loads(line)["id"]: json.loads(line)["messages"][-1]["content"]
               for line in SEED_TEST.read_text().splitlines()}
    matched = sorted(pid for pid, p in prompts.items() if ac.asks_for_list(p))
    # the format prompts that ask for steps or bullets, and the brainstorming ones
    assert {"test-0021", "test-0039", "test-0073", "test-0077", "test-0101"} <= set(matched)
    # JSON, tables and plain questions are not list requests
    assert not {"test-0001", "test-0010", "test-0012", "test-0044", "test-0057", "test-0071"} & set(matched)
    assert len(matched) < 20  # conservative: a small share of 110


def test_repeated_4gram_share():
    assert ac.repeated_ngram_share("one two three four five") == 0.0
    assert ac.repeated_ngram_share("too short") == 0.0
    # "a b c d a b c d": 5 four-grams, of which "a b c d" repeats once -> 1/5
    assert ac.repeated_ngram_share("a b c d a b c d") == pytest.approx(1 / 5)
    looping = " ".join(["the cat sat"] * 20)
    assert ac.repeated_ngram_share(looping) > 0.9
    assert ac.repeated_ngram_share("The Cat sat on. the cat, sat on") == pytest.approx(1 / 5)  # case, punctuation


def test_summarize_gives_wilson_shares_and_means():
    records = [gen("p1", "List three fruits.", "- apple\n- pear\n- fig", "eot", 8),
               gen("p2", "Give me 5 tips for sleep.", "Sleep more sleep more sleep more sleep more", "length", 20),
               gen("p3", "Why is the sky blue?", "Rayleigh scattering.", "eot", 4),
               gen("p4", "Why is grass green?", "Chlorophyll.", "stop", 2)]
    s = ac.summarize(records)
    assert s["answers"] == 4 and s["model"] == "m"
    assert s["ended_turn"] == {"k": 2, "n": 4, **wilson(2, 4)}
    assert s["hit_length_cap"]["k"] == 1
    assert s["list_prompts_with_line_breaks"]["k"] == 1 and s["list_prompts_with_line_breaks"]["n"] == 2
    assert s["mean_output_tokens"] == 8.5
    assert 0 < s["repeated_4gram_share"] < 1


def test_imported_answers_without_finish_reason_or_tokens():
    s = ac.summarize([gen("p1", "Hi?", "Hello.", finish=None, tokens=None)])
    assert s["ended_turn"]["n"] == 0 and s["ended_turn"]["value"] is None and s["mean_output_tokens"] is None
    assert ac.fmt_share(s["ended_turn"]) == "n/a"


def test_answers_command_prints_a_table_and_writes_json(tmp_path, capsys):
    base = write(tmp_path / "base.jsonl", [gen("p1", "List three fruits.", "apple pear fig and more", "length",
                                              160, "base"),
                                          gen("p2", "Why?", "Because because because because", "length", 160,
                                              "base")])
    aligned = write(tmp_path / "aligned.jsonl", [gen("p1", "List three fruits.", "- apple\n- pear\n- fig", "eot",
                                                     9, "aligned"),
                                                 gen("p2", "Why?", "Because.", "eot", 2, "aligned")])
    out = tmp_path / "figs.json"
    assert main(["answers", str(base), str(aligned), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "ended its turn" in text and "line breaks" in text and "base" in text and "aligned" in text
    assert "0/2" in text and "2/2" in text  # ended its turn: base none, aligned both
    rows = json.loads(out.read_text())
    assert [r["model"] for r in rows] == ["base", "aligned"]
    assert rows[1]["list_prompts_with_line_breaks"]["k"] == 1 and rows[0]["list_prompts_with_line_breaks"]["k"] == 0


@pytest.mark.parametrize("content, what", [
    (None, "file not found"),
    ("{not json\n", "not valid JSON"),
    (json.dumps({"prompt_id": "p1", "messages": []}) + "\n", "output"),
    (json.dumps({"prompt_id": "p1", "output": "x", "messages": "hi"}) + "\n", "messages"),
    ("", "no generation records"),
])
def test_missing_or_malformed_file_is_a_clear_error(tmp_path, capsys, content, what):
    path = tmp_path / "gens.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(LimaError, match=what):
        ac.read_answers(path)
    assert main(["answers", str(path)]) == 2
    err = capsys.readouterr().err
    assert what in err and str(path) in err and "fix:" in err and "Traceback" not in err
