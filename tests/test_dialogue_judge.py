"""Turn-level ratings and whole-conversation comparisons, with fake judges and the fake OpenAI server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from lima_align.api import ChatClient
from lima_align.dialogue.conversations import Plan, Turn, converse, read_conversations_file
from lima_align.dialogue.judging import judge_conversations, judge_turns, turn_of
from lima_align.errors import LimaError
from lima_align.judges import ApiJudge, LongestJudge, Rating, Vote
from lima_align.stats import read_judgments


class Assistant:
    def __init__(self, label: str, style: str):
        self.label, self.style, self.decoding = label, style, {"temperature": 0.0}

    async def reply_many(self, histories, seed_key):
        # "good" answers every turn at length; "forgetful" loses the thread after the first turn.
        out = []
        for h in histories:
            n = sum(m.role == "user" for m in h)
            good = self.style == "good" or n == 1
            text = f"A careful answer to {h[-1].content!r}." if good else "Hello! How can I help?"
            out.append(Turn(text, "eot"))
        return out


class RulesJudge:
    """Rates a turn excellent when it refers to the latest user turn, else fail; pairwise: longer wins."""

    name, price = "rules", None

    def __init__(self):
        self.rated: list[tuple[list, str]] = []

    async def rate(self, prompt_messages, text, scale, instructions):
        self.rated.append((prompt_messages, text))
        ok = prompt_messages[-1]["content"] in text
        return Rating(f"reasoning\nRating: {'excellent' if ok else 'fail'}", scale, 10, 2)

    async def judge_pair(self, prompt_messages, shown_a, shown_b, instructions):
        return Vote("Verdict: " + ("A" if len(shown_a) > len(shown_b) else "B"))


def scripts(n: int = 3) -> list[Plan]:
    return [Plan(f"d{i}", "scripted", [f"topic {i} first", f"topic {i} second", f"topic {i} third"], 3)
            for i in range(n)]


@pytest.fixture
def conv_files(tmp_path) -> tuple[Path, Path]:
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    converse(scripts(), Assistant("with-dialogues", "good"), a, progress=False)
    converse(scripts(), Assistant("single-turn", "forgetful"), b, progress=False)
    return a, b


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_assistant_turn_is_rated_in_context(conv_files, tmp_path):
    a, b = conv_files
    judge, out = RulesJudge(), tmp_path / "turns.jsonl"
    convs = read_conversations_file(a) + read_conversations_file(b)
    summary = judge_turns(convs, [judge], out, cache_path=tmp_path / "cache.sqlite", progress=False)
    assert summary["ratings"] == 18
    rs = records(out)
    assert len(rs) == 18 and {r["type"] for r in rs} == {"absolute"}
    r = next(r for r in rs if r["model"] == "single-turn" and r["conversation_id"] == "d1" and r["turn"] == 2)
    assert r["prompt_id"] == "d1#t2" and r["score"] == "fail" and r["scale"] == "fail_pass_excellent"
    assert [m["role"] for m in r["prompt"]] == ["user", "assistant", "user"]  # everything before the turn
    assert r["prompt"][-1]["content"] == "topic 1 second" and r["output"] == "Hello! How can I help?"
    assert r["instructions"]["name"] == "turn" and r["judge"] == "rules"
    good = [r["score"] for r in rs if r["model"] == "with-dialogues"]
    assert good == ["excellent"] * 9
    assert len(read_judgments(out)) == 18  # the shared reader (stats, report) accepts them


def test_rerun_resumes_and_records_without_fields_read_the_same(conv_files, tmp_path):
    a, _ = conv_files
    out, cache = tmp_path / "turns.jsonl", tmp_path / "cache.sqlite"
    judge_turns(read_conversations_file(a), [RulesJudge()], out, cache_path=cache, progress=False)
    before = out.read_text()
    again = RulesJudge()
    summary = judge_turns(read_conversations_file(a), [again], out, cache_path=cache, progress=False,
                          log=lambda *_: None)
    assert summary["ratings"] == 0 and summary["existing"] == 9 and again.rated == []
    assert out.read_text() == before
    bare = {k: v for k, v in records(out)[0].items() if k not in ("conversation_id", "turn")}
    assert turn_of(bare) == turn_of(records(out)[0]) == (records(out)[0]["conversation_id"], records(out)[0]["turn"])
    assert turn_of({"prompt_id": "mt_bench-81#t12"}) == ("mt_bench-81", 12)
    assert turn_of({"prompt_id": "plain-prompt"}) is None


def test_turn_judging_through_an_api_judge_sees_the_conversation(conv_files, tmp_path):
    a, _ = conv_files

    def respond(request):
        text = request["messages"][-1]["content"]
        return "Fine.\nRating: pass" if "topic 0 first" in text else "Rating: excellent"

    with FakeOpenAI(respond=respond) as server:
        judge = ApiJudge(ChatClient(server.base_url, "judge-model", max_retries=0))
        out = tmp_path / "api.jsonl"
        judge_turns(read_conversations_file(a), [judge], out, cache_path=tmp_path / "c.sqlite", progress=False)
        third = next(r["messages"][0]["content"] for r in server.log if "topic 2 third" in r["messages"][0]["content"])
    assert "## The conversation so far" in third and "topic 2 first" in third and "[Assistant]" in third
    rs = records(out)
    assert {r["score"] for r in rs if r["conversation_id"] == "d0"} == {"pass"}
    assert {r["score"] for r in rs if r["conversation_id"] != "d0"} == {"excellent"}


def test_whole_conversations_compared_in_both_orders(conv_files, tmp_path):
    a, b = conv_files
    out = tmp_path / "conv.jsonl"
    summary = judge_conversations(read_conversations_file(a), read_conversations_file(b),
                                  [RulesJudge(), LongestJudge()], out, cache_path=tmp_path / "c.sqlite", progress=False)
    assert summary["pairs"] == 6
    rs = records(out)
    assert {r["unit"] for r in rs} == {"conversation"} and {r["conversation_id"] for r in rs} == {"d0", "d1", "d2"}
    for r in rs:
        assert [v["order"] for v in r["votes"]] == ["ab", "ba"]
        assert r["verdict"] == "a" and r["consistent"] is True and r["model_a"] == "with-dialogues"
        assert "[User]\ntopic" in r["output_a"] and r["prompt"][0]["content"].endswith("first")
    assert {r["instructions"]["name"] for r in rs} == {"conversation"}
    assert len(read_judgments(out)) == 6


def test_conversations_with_different_scripts_are_refused(conv_files, tmp_path):
    a, _ = conv_files
    other = tmp_path / "other.jsonl"
    changed = [Plan(p.id, p.mode, [t.replace("second", "2nd") for t in p.turns], p.n_turns) for p in scripts()]
    converse(changed, Assistant("single-turn", "good"), other, progress=False)
    with pytest.raises(LimaError, match="user turns of 'd0' differ"):
        judge_conversations(read_conversations_file(a), read_conversations_file(other), [LongestJudge()],
                            tmp_path / "o.jsonl", cache_path=tmp_path / "c.sqlite", progress=False)


def test_length_judge_cannot_rate_turns(conv_files, tmp_path):
    a, _ = conv_files
    with pytest.raises(LimaError, match="cannot rate single answers"):
        judge_turns(read_conversations_file(a), [LongestJudge()], tmp_path / "t.jsonl", progress=False)


def test_a_generations_file_is_not_a_conversation_file(tmp_path):
    f = tmp_path / "gens.jsonl"
    f.write_text(json.dumps({"prompt_id": "p", "model": "m", "output": "x", "messages": []}) + "\n")
    with pytest.raises(LimaError, match="not a conversation record"):
        read_conversations_file(f)


def _simulated(path: Path, model: str, scenario: str, user_turn: str) -> Path:
    rec = {"id": f"{model}:s1", "conversation_id": "s1", "model": model, "mode": "simulated",
           "messages": [{"role": "user", "content": user_turn}, {"role": "assistant", "content": f"{model} says hi"}],
           "finish_reasons": ["eot"], "decoding": {}, "created": 0, "meta": {"scenario": scenario}}
    path.write_text(json.dumps(rec) + "\n")
    return path


def test_simulated_conversations_pair_by_scenario_not_by_user_turns(tmp_path):
    a = read_conversations_file(_simulated(tmp_path / "a.jsonl", "longer-model", "A cook.", "Hi, soup?"))
    b = read_conversations_file(_simulated(tmp_path / "b.jsonl", "m2", "A cook.", "Hello! I need soup ideas."))
    out = tmp_path / "o.jsonl"
    judge_conversations(a, b, [LongestJudge()], out, cache_path=tmp_path / "c.sqlite", progress=False)
    (r,) = records(out)
    assert r["prompt"] == [{"role": "system", "content": "Scenario the user was playing: A cook."}]
    c = read_conversations_file(_simulated(tmp_path / "c.jsonl", "m3", "A gardener.", "Hi"))
    with pytest.raises(LimaError, match="scenario of 's1' differs"):
        judge_conversations(a, c, [LongestJudge()], tmp_path / "o2.jsonl", cache_path=tmp_path / "c.sqlite",
                            progress=False)
