"""Conversations: scripts and scenarios, local and API models, trimming with a notice, resume after a kill."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

from lima_align.api import ChatClient
from lima_align.config import TurnsConfig
from lima_align.dialogue.conversations import (
    ApiAssistant,
    LocalAssistant,
    Plan,
    SimulatedUser,
    Turn,
    converse,
    load_scenarios,
    load_scripts,
    read_conversations_file,
)
from lima_align.errors import LimaError
from lima_align.generate import Decoding, Generator
from lima_align.models import load_tokenizer
from lima_align.records import Conversation, Message
from lima_align.turns import IGNORE, TurnFormat

MT_BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "mt_bench"


def write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def plans(n: int, turns: int = 3) -> list[Plan]:
    return [Plan(f"c{i}", "scripted", [f"question {i}.{t}" for t in range(turns)], turns) for i in range(n)]


class FakeAssistant:
    """Answers 'reply to <last user turn>'; raises KeyboardInterrupt on call number `die_at` (a kill)."""

    label, decoding = "fake-model", {"temperature": 0.0}

    def __init__(self, die_at: int | None = None):
        self.calls, self.die_at = 0, die_at

    async def reply_many(self, histories, seed_key):
        self.calls += 1
        if self.calls == self.die_at:
            raise KeyboardInterrupt
        return [Turn(f"reply to {h[-1].content}", "eot") for h in histories]


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ----------------------------------------------------------------- inputs


def test_packaged_dialogue_set_has_multi_turn_scripts():
    ps = load_scripts("dialogue_eval")
    assert 10 <= len(ps) <= 20 and len({p.id for p in ps}) == len(ps)
    assert all(3 <= p.n_turns <= 4 and p.mode == "scripted" for p in ps)
    assert len(load_scenarios("dialogue_eval", 3)) >= 5


def test_script_file_problems_are_listed_with_file_and_line(tmp_path):
    f = write(tmp_path / "s.jsonl", [{"id": "a", "turns": ["hi", ""]}, {"turns": ["x"]}, {"id": "a", "turns": ["y"]},
                                     {"id": "b", "messages": [{"role": "user", "content": "u1"},
                                                              {"role": "assistant", "content": "a1"},
                                                              {"role": "user", "content": "u2"}]}])
    with pytest.raises(LimaError) as e:
        load_scripts(str(f))
    text = str(e.value)
    assert f"{f}:1 turns" in text and f"{f}:2 id" in text and "appears twice" not in text  # line 1 was refused
    ok = load_scripts(str(write(tmp_path / "ok.jsonl", [{"id": "b", "messages": [
        {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"},
        {"role": "user", "content": "u2"}]}])))
    assert ok[0].turns == ["u1", "u2"]
    with pytest.raises(LimaError, match="script file not found"):
        load_scripts(str(tmp_path / "nope.jsonl"))


@pytest.mark.skipif(not (MT_BENCH / "question.jsonl").exists(), reason="../shared/data/mt_bench is absent")
def test_mt_bench_questions_become_two_turn_scripts():
    ps = load_scripts(f"mt_bench:{MT_BENCH}")
    assert len(ps) == 80 and all(p.n_turns == 2 for p in ps)
    assert ps[0].id.startswith("mt_bench-") and "category" in ps[0].meta


# ----------------------------------------------------------------- holding conversations


def test_scripted_conversations_with_a_local_model(tiny_gemma, tmp_path):
    from lima_align.config import ModelConfig
    from lima_align.generate import load_for_generation

    lm, fmt = load_for_generation(ModelConfig(name=str(tiny_gemma), dtype="float32"), TurnsConfig(format="plain"))
    gen = Generator(lm, fmt, Decoding(max_new_tokens=4, temperature=0))
    out = tmp_path / "conv.jsonl"
    ps = plans(3, 3)[:2] + [Plan("short", "scripted", ["only one turn"], 1, system="Be brief.")]
    summary = converse(ps, LocalAssistant(gen, "tiny"), out, batch_size=2, progress=False)
    assert summary == {"conversations": 3, "existing": 0, "failed": 0}
    rs = {r["conversation_id"]: r for r in records(out)}
    r = rs["c0"]
    assert r["mode"] == "scripted" and r["model"] == "tiny" and r["id"] == "tiny:c0"
    assert [m["role"] for m in r["messages"]] == ["user", "assistant"] * 3
    assert [m["content"] for m in r["messages"] if m["role"] == "user"] == [f"question 0.{t}" for t in range(3)]
    assert len(r["finish_reasons"]) == 3 and r["decoding"]["max_new_tokens"] == 4 and r["meta"]["trimmed"] == []
    assert [m["role"] for m in rs["short"]["messages"]] == ["system", "user", "assistant"]
    assert len(read_conversations_file(out)) == 3


def test_full_context_trims_the_oldest_turns_with_a_notice(tiny_gemma, tmp_path):
    from lima_align.config import ModelConfig
    from lima_align.generate import load_for_generation

    lm, fmt = load_for_generation(ModelConfig(name=str(tiny_gemma), dtype="float32"), TurnsConfig(format="plain"))
    gen = Generator(lm, fmt, Decoding(max_new_tokens=4, temperature=0))
    gen.context = 48  # a tiny window, so the third turn cannot see the whole history
    long = Plan("long", "scripted", ["Explain gravity to a child. " * 2, "Write a poem about the sea.",
                                     "What is the capital of Italy?"], 3)
    notes: list[str] = []
    converse([long], LocalAssistant(gen, "tiny"), tmp_path / "c.jsonl", progress=False, log=notes.append)
    r = records(tmp_path / "c.jsonl")[0]
    assert r["meta"]["trimmed"] and all(t["dropped_messages"] % 2 == 0 for t in r["meta"]["trimmed"])
    assert any("context is full" in n and "long turn" in n for n in notes)
    assert len([m for m in r["messages"] if m["role"] == "user"]) == 3  # the transcript itself is whole


def test_killed_run_resumes_without_duplicates_and_restarts_the_half_done_batch(tmp_path):
    out = tmp_path / "conv.jsonl"
    with pytest.raises(KeyboardInterrupt):
        # batch 1 (c0, c1) takes calls 1-3 and is written; the kill lands in batch 2's second turn
        converse(plans(5), FakeAssistant(die_at=5), out, batch_size=2, progress=False)
    first = records(out)
    assert [r["conversation_id"] for r in first] == ["c0", "c1"]
    with out.open("a") as f:
        f.write('{"id": "fake-model:c2", "conversation_id": "c2", "mess')  # a write cut off by the kill
    summary = converse(plans(5), FakeAssistant(), out, batch_size=2, progress=False)
    assert summary == {"conversations": 3, "existing": 2, "failed": 0}
    ids = [r["conversation_id"] for r in records(out)]
    assert sorted(ids) == ["c0", "c1", "c2", "c3", "c4"]
    assert all(len(r["messages"]) == 6 for r in records(out))
    assert converse(plans(5), FakeAssistant(), out, progress=False, log=lambda *_: None)["conversations"] == 0


def test_one_output_file_holds_one_model(tmp_path):
    out = tmp_path / "conv.jsonl"
    converse(plans(1), FakeAssistant(), out, progress=False)
    other = FakeAssistant()
    other.label = "another-model"
    with pytest.raises(LimaError, match="its own --output"):
        converse(plans(2), other, out, progress=False)


def _fake_sides(request: dict) -> str:
    msgs = request["messages"]
    if msgs[0]["role"] == "system" and "role-playing" in msgs[0]["content"]:
        n = sum(m["role"] == "assistant" for m in msgs)  # the user model's own earlier turns
        return f'User: "simulated turn {n + 1}"'
    return f"assistant answer to: {msgs[-1]['content']}"


def test_simulated_user_and_api_assistant(tmp_path):
    with FakeOpenAI(respond=_fake_sides) as server:
        user = SimulatedUser(ChatClient(server.base_url, "user-sim", max_retries=0))
        assistant = ApiAssistant(ChatClient(server.base_url, "model-x", max_retries=0),
                                 Decoding(max_new_tokens=32), "model-x")
        scen = write(tmp_path / "scen.jsonl", [{"id": "s1", "scenario": "A cook who wants a soup recipe."},
                                               {"id": "s2", "scenario": "A student.", "opening": "Hi there!"}])
        out = tmp_path / "sim.jsonl"
        converse(load_scenarios(scen, 3), assistant, out, user=user, progress=False)
        rs = {r["conversation_id"]: r for r in records(out)}
        users = lambda r: [m["content"] for m in r["messages"] if m["role"] == "user"]
        assert users(rs["s1"]) == ["simulated turn 1", "simulated turn 2", "simulated turn 3"]
        assert users(rs["s2"]) == ["Hi there!", "simulated turn 2", "simulated turn 3"]
        assert rs["s1"]["messages"][1]["content"] == "assistant answer to: simulated turn 1"
        assert rs["s1"]["mode"] == "simulated" and rs["s1"]["meta"]["user_model"].startswith("user-sim@")
        assert rs["s1"]["decoding"]["repetition_penalty"] is None and rs["s1"]["finish_reasons"] == ["eot"] * 3
        # the user model sees the scenario, and the assistant's answers as the other side of its chat
        sim_requests = [r for r in server.log if r["model"] == "user-sim"]
        assert "A cook who wants a soup recipe." in sim_requests[0]["messages"][0]["content"]
        assert any(m["role"] == "user" and m["content"].startswith("assistant answer")
                   for m in sim_requests[-1]["messages"])


def test_simulated_conversations_need_a_user_model(tmp_path):
    scen = write(tmp_path / "scen.jsonl", [{"id": "s1", "scenario": "Someone."}])
    with pytest.raises(LimaError, match="need a user model"):
        converse(load_scenarios(scen, 2), FakeAssistant(), tmp_path / "o.jsonl", progress=False)


# ----------------------------------------------------------------- training on dialogues


def test_three_turn_dialogue_trains_exactly_the_assistant_turns(tiny_gemma):
    tok = load_tokenizer(str(tiny_gemma))
    fmt = TurnFormat(tok, TurnsConfig(format="plain", eot="eos"), method="lora")
    answers = ["Nine minutes.", "Six minutes.", "Rome is the capital."]
    conv = Conversation("d", [Message("user", "How do I boil an egg?"), Message("assistant", answers[0]),
                              Message("user", "And soft?"), Message("assistant", answers[1]),
                              Message("user", "What is the capital of Italy?"), Message("assistant", answers[2])])
    enc = fmt.encode(conv, "assistant")
    # Expected labels built from the pieces: each assistant body + EOT trained, everything else not.
    expected = [IGNORE] * len(fmt._bos())
    for i, m in enumerate(conv.messages):
        head = fmt._header(m.role, i == 0)
        body = fmt._seg(m.content) + [fmt.eot_id]
        expected += [IGNORE] * len(head) + (body if m.role == "assistant" else [IGNORE] * len(body))
    assert enc.labels == expected
    runs, cur = [], []
    for t, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE:
            cur.append(t)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    runs += [tok.decode(cur)] if cur else []
    assert runs == [a + "<eos>" for a in answers]  # three separate trained spans, one per assistant turn
    last_only = fmt.encode(conv, "last_assistant")
    assert sum(lab != IGNORE for lab in last_only.labels) < sum(lab != IGNORE for lab in enc.labels)


@pytest.mark.slow
def test_embedded_gemma_holds_a_packaged_conversation(tmp_path):
    """The real path: the embedded base model answers every turn of one packaged script (few tokens each)."""
    from lima_align.cli import main

    out = tmp_path / "gemma.jsonl"
    assert main(["converse", "--model", "embedded", "--script", "dialogue_eval", "--limit", "1", "--output", str(out),
                 "--label", "gemma-base", "turns.format=plain", "generate.max_new_tokens=8"]) == 0
    (r,) = records(out)
    assert r["conversation_id"] == "de-01" and len(r["finish_reasons"]) == 4
    assert [m["role"] for m in r["messages"]] == ["user", "assistant"] * 4


def test_the_progress_bar_counts_turns_as_they_finish(tmp_path, monkeypatch):
    import tqdm.auto

    seen: list[int] = []

    class Bar:
        def __init__(self, total: int, initial: int, **_):
            self.total, self.n = total, initial
            seen.append(initial)

        def update(self, k: int) -> None:
            self.n += k
            seen.append(self.n)

        def close(self) -> None:
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    out = tmp_path / "conv.jsonl"
    converse(plans(2), FakeAssistant(), out, batch_size=2)  # 2 conversations x 3 turns held in lockstep
    assert seen == [0, 2, 4, 6, 6]  # moves every turn, not once per batch
    seen.clear()
    converse(plans(3), FakeAssistant(), out, batch_size=2)  # resumes: the first two are already held
    assert seen == [6, 7, 8, 9, 9]
