"""Conversation records: readers for our format, LIMA, Alpaca and ShareGPT; validation; conversion; CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lima_align.cli import main
from lima_align.errors import LimaError
from lima_align.records import Conversation, Message, detect_format, read_conversations, stats, to_format


def jl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def ours(rid: str, *turns: tuple[str, str], source: str = "t", meta: dict | None = None) -> dict:
    return {"id": rid, "source": source, "messages": [{"role": r, "content": c} for r, c in turns],
            "meta": meta or {}}


def roles(conv: Conversation) -> list[str]:
    return [m.role for m in conv.messages]


SINGLE = ours("a", ("user", "How do I boil an egg?"), ("assistant", "Nine minutes in boiling water."),
              meta={"domain": "cooking", "kind": "single"})
MULTI = ours("b", ("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"),
             ("assistant", "Goodbye."))


# ------------------------------------------------------------------ readers


def test_read_our_format(tmp_path):
    convs = read_conversations(jl(tmp_path / "d.jsonl", [SINGLE, MULTI]), purpose="train")
    assert [c.id for c in convs] == ["a", "b"]
    assert convs[0].source == "t" and convs[0].meta == {"domain": "cooking", "kind": "single"}
    assert convs[0].prompt == "How do I boil an egg?"
    assert roles(convs[1]) == ["system", "user", "assistant", "user", "assistant"]
    assert convs[1].messages[-1] == Message("assistant", "Goodbye.")


def test_read_lima_format(tmp_path):
    p = jl(tmp_path / "lima.jsonl", [{"conversations": ["Q1", "A1", "Q2", "A2"], "source": "stackexchange"},
                                     {"conversations": ["Q", "A"], "source": "wikihow"}])
    convs = read_conversations(p, purpose="train")
    assert len(convs) == 2
    assert roles(convs[0]) == ["user", "assistant", "user", "assistant"]
    assert [m.content for m in convs[0].messages] == ["Q1", "A1", "Q2", "A2"]
    assert convs[0].source == "stackexchange" and convs[1].source == "wikihow"
    # LIMA records carry no id: ids are made from the file stem and line, and are unique
    assert convs[0].id != convs[1].id and convs[0].id.startswith("lima-")


def test_read_alpaca_format(tmp_path):
    p = jl(tmp_path / "alp.jsonl", [
        {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
        {"instruction": "Name a colour.", "input": "", "output": "Blue"},
    ])
    convs = read_conversations(p, purpose="train")
    assert convs[0].messages == [Message("user", "Translate to French.\n\nGood morning"),
                                 Message("assistant", "Bonjour")]
    assert convs[1].messages == [Message("user", "Name a colour."), Message("assistant", "Blue")]


def test_alpaca_empty_output_is_a_prompt(tmp_path):
    p = jl(tmp_path / "alp.jsonl", [{"instruction": "Name a colour.", "output": ""}])
    convs = read_conversations(p, purpose="prompt")
    assert roles(convs[0]) == ["user"]


def test_read_sharegpt_format(tmp_path):
    p = jl(tmp_path / "sg.jsonl", [{"id": "sg1", "conversations": [
        {"from": "system", "value": "Sys"}, {"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"},
        {"from": "user", "value": "More"}, {"from": "chatgpt", "value": "Sure"}]}])
    (c,) = read_conversations(p, purpose="train")
    assert c.id == "sg1"
    assert roles(c) == ["system", "user", "assistant", "user", "assistant"]
    assert [m.content for m in c.messages] == ["Sys", "Hi", "Hello", "More", "Sure"]


def test_sharegpt_unknown_from_names_the_turn(tmp_path):
    p = jl(tmp_path / "sg.jsonl", [{"conversations": [{"from": "human", "value": "Hi"},
                                                      {"from": "robot", "value": "Hello"}]}])
    with pytest.raises(LimaError) as e:
        read_conversations(p)
    assert f"{p}:1 conversations[1]" in str(e.value)


def test_read_json_list_file(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([SINGLE, {"conversations": ["Q", "A"], "source": "x"},
                             {"instruction": "I", "output": "O"}]))
    convs = read_conversations(p, purpose="train")
    assert len(convs) == 3
    assert [c.messages[0].content for c in convs] == ["How do I boil an egg?", "Q", "I"]


def test_json_list_problems_are_named_by_index(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps([SINGLE, ours("x", ("user", "only a question"))]))
    with pytest.raises(LimaError) as e:
        read_conversations(p, purpose="train")
    assert f"{p}[1] messages[0]" in str(e.value)


def test_json_syntax_error_names_the_line(tmp_path):
    p = tmp_path / "d.json"
    p.write_text('[\n  {"messages": []},\n  {"messages": [}\n]\n')
    with pytest.raises(LimaError) as e:
        read_conversations(p)
    assert f"{p}:3" in str(e.value)


def test_json_file_must_hold_a_list(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps(SINGLE))
    with pytest.raises(LimaError, match="list"):
        read_conversations(p)


@pytest.mark.parametrize("obj, fmt", [
    (SINGLE, "ours"),
    ({"conversations": ["a", "b"]}, "lima"),
    ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
    ({"conversations": [{"from": "human", "value": "a"}]}, "sharegpt"),
    ({"prompt": "a", "completion": "b"}, "unknown"),
])
def test_detect_format(obj, fmt):
    assert detect_format(obj) == fmt


def test_auto_detection_mixes_formats_in_one_file(tmp_path):
    p = jl(tmp_path / "mixed.jsonl", [SINGLE, {"conversations": ["Q", "A"]},
                                      {"instruction": "I", "output": "O"},
                                      {"conversations": [{"from": "human", "value": "H"}, {"from": "gpt", "value": "G"}]}])
    convs = read_conversations(p, purpose="train")
    assert [c.messages[0].content for c in convs] == ["How do I boil an egg?", "Q", "I", "H"]
    assert all(roles(c) == ["user", "assistant"] for c in convs)


def test_unrecognised_record_lists_the_formats(tmp_path):
    p = jl(tmp_path / "d.jsonl", [SINGLE, {"prompt": "a", "completion": "b"}])
    with pytest.raises(LimaError) as e:
        read_conversations(p)
    msg = str(e.value)
    assert f"{p}:2" in msg and "unrecognised record" in msg and "completion" in msg and "fix:" in msg


def test_explicit_format_is_enforced(tmp_path):
    p = jl(tmp_path / "d.jsonl", [SINGLE])
    with pytest.raises(LimaError, match="LIMA format needs a list of strings"):
        read_conversations(p, fmt="lima")
    with pytest.raises(LimaError, match="unknown format"):
        read_conversations(p, fmt="csv")


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("turns, purpose, field, words", [
    ([("user", "q"), ("user", "q2"), ("assistant", "a")], "train", "messages[1].role", "expected 'assistant'"),
    ([("assistant", "a")], "any", "messages[0].role", "expected 'user'"),
    ([("user", "q"), ("assistant", "  ")], "train", "messages[1].content", "empty assistant turn"),
    ([("user", "q"), ("system", "s"), ("assistant", "a")], "any", "messages[1].role", "system message may only come first"),
    ([("user", "q"), ("assistant", "a"), ("user", "q2")], "train", "messages[2]", "must end with an assistant turn"),
    ([("user", "q"), ("assistant", "a")], "prompt", "messages[1]", "must end with a user turn"),
    ([("user", "q"), ("bot", "a")], "any", "messages[1].role", "unknown role 'bot'"),
    ([("system", "s")], "any", "messages", "only a system message"),
    ([], "any", "messages", "no messages"),
])
def test_validation_names_file_line_field_and_fix(tmp_path, turns, purpose, field, words):
    p = jl(tmp_path / "d.jsonl", [SINGLE, ours("bad", *turns)])
    with pytest.raises(LimaError) as e:
        read_conversations(p, purpose=purpose)
    msg = str(e.value)
    assert f"{p}:2 {field}" in msg, msg
    assert words in msg
    assert "fix:" in msg


def test_valid_records_pass_each_purpose(tmp_path):
    train = jl(tmp_path / "t.jsonl", [SINGLE, MULTI])
    prompts = jl(tmp_path / "p.jsonl", [ours("p", ("system", "s"), ("user", "q")), ours("q", ("user", "q"))])
    assert len(read_conversations(train, purpose="train")) == 2
    assert len(read_conversations(prompts, purpose="prompt")) == 2
    assert len(read_conversations(train, purpose="any")) == 2
    with pytest.raises(LimaError):
        read_conversations(prompts, purpose="train")


def test_malformed_messages_field(tmp_path):
    p = jl(tmp_path / "d.jsonl", [{"id": "x", "messages": "hi"},
                                  {"id": "y", "messages": [{"role": "user", "text": "hi"}]},
                                  {"id": "z", "messages": [{"role": "user", "content": "q"}], "meta": [1]}])
    with pytest.raises(LimaError) as e:
        read_conversations(p)
    msg = str(e.value)
    assert f"{p}:1 messages: expected a list, got str" in msg
    assert f"{p}:2 messages[0]" in msg and "'role' and 'content'" in msg
    assert f"{p}:3 meta" in msg


def test_several_problems_are_reported_at_once(tmp_path):
    p = jl(tmp_path / "d.jsonl", [
        SINGLE,
        ours("b1", ("user", "q"), ("user", "q2")),          # line 2: role + does not end with assistant
        ours("ok", ("user", "q"), ("assistant", "a")),
        ours("b2", ("user", ""), ("assistant", "a")),       # line 4: empty user turn
        {"nothing": 1},                                      # line 5: unrecognised
    ])
    with pytest.raises(LimaError) as e:
        read_conversations(p, purpose="train")
    err = e.value
    assert len(err.problems) == 4
    wheres = [pr.where for pr in err.problems]
    assert f"{p}:2 messages[1].role" in wheres
    assert f"{p}:2 messages[1]" in wheres
    assert f"{p}:4 messages[0].content" in wheres
    assert f"{p}:5" in wheres
    assert str(err).startswith("4 problems:")


def test_problems_are_capped(tmp_path):
    p = jl(tmp_path / "d.jsonl", [ours(f"x{i}", ("user", "q")) for i in range(20)])
    with pytest.raises(LimaError) as e:
        read_conversations(p, purpose="train", max_problems=5)
    assert len(e.value.problems) == 6
    assert "stopped after 5 problems" in str(e.value)


def test_duplicate_ids(tmp_path):
    p = jl(tmp_path / "d.jsonl", [SINGLE, ours("x", ("user", "q"), ("assistant", "a")), SINGLE])
    with pytest.raises(LimaError) as e:
        read_conversations(p, purpose="train")
    assert len(e.value.problems) == 1
    msg = str(e.value)
    assert f"{p}:3 id" in msg and "duplicate id 'a'" in msg and f"first at {p}:1" in msg
    assert "make ids unique" in msg


def test_third_duplicate_points_at_the_first(tmp_path):
    p = jl(tmp_path / "d.jsonl", [SINGLE, SINGLE, SINGLE])
    with pytest.raises(LimaError) as e:
        read_conversations(p, purpose="train")
    assert [str(pr).count(f"first at {p}:1") for pr in e.value.problems] == [1, 1]


# ------------------------------------------------------------------ conversion


def _roundtrip(tmp_path: Path, convs: list[Conversation], fmt: str) -> list[Conversation]:
    p = jl(tmp_path / f"{fmt}.jsonl", [to_format(c, fmt) for c in convs])
    return read_conversations(p, fmt=fmt, purpose="train")


def _convs(tmp_path: Path, records: list[dict]) -> list[Conversation]:
    return read_conversations(jl(tmp_path / "src.jsonl", records), purpose="train")


MULTI_NO_SYS = ours("m", ("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"), ("assistant", "Goodbye."),
                    source="chat")


def test_roundtrip_ours_lima_ours(tmp_path):
    orig = _convs(tmp_path, [SINGLE, MULTI_NO_SYS])
    back = _roundtrip(tmp_path, orig, "lima")
    assert [c.messages for c in back] == [c.messages for c in orig]
    assert [c.source for c in back] == [c.source for c in orig]
    assert to_format(orig[1], "lima") == {"conversations": ["Hi", "Hello!", "Bye", "Goodbye."], "source": "chat"}


def test_roundtrip_ours_sharegpt_ours(tmp_path):
    orig = _convs(tmp_path, [SINGLE, MULTI, MULTI_NO_SYS])
    back = _roundtrip(tmp_path, orig, "sharegpt")
    assert [c.messages for c in back] == [c.messages for c in orig]
    assert [c.id for c in back] == [c.id for c in orig]
    assert to_format(orig[0], "sharegpt")["conversations"][0] == {"from": "human", "value": "How do I boil an egg?"}


def test_roundtrip_ours_alpaca_ours_single_turn(tmp_path):
    orig = _convs(tmp_path, [SINGLE, ours("c", ("user", "Two\n\nparagraphs"), ("assistant", "Yes"))])
    back = _roundtrip(tmp_path, orig, "alpaca")
    assert [c.messages for c in back] == [c.messages for c in orig]
    assert to_format(orig[0], "alpaca") == {"instruction": "How do I boil an egg?", "input": "",
                                            "output": "Nine minutes in boiling water."}


def test_roundtrip_ours_ours(tmp_path):
    orig = _convs(tmp_path, [SINGLE, MULTI])
    back = _roundtrip(tmp_path, orig, "ours")
    assert [c.to_dict() for c in back] == [c.to_dict() for c in orig]


def test_multi_turn_to_alpaca_raises(tmp_path):
    (conv,) = _convs(tmp_path, [MULTI_NO_SYS])
    with pytest.raises(LimaError, match="multi-turn") as e:
        to_format(conv, "alpaca")
    assert "'m'" in str(e.value) and "fix:" in str(e.value)


def test_system_message_cannot_go_to_lima_or_alpaca(tmp_path):
    sys_single = ours("s", ("system", "Be kind."), ("user", "q"), ("assistant", "a"))
    (conv,) = _convs(tmp_path, [sys_single])
    with pytest.raises(LimaError, match="system message"):
        to_format(conv, "lima")
    with pytest.raises(LimaError):
        to_format(conv, "alpaca")
    with pytest.raises(LimaError, match="unknown output format"):
        to_format(conv, "xml")


# ------------------------------------------------------------------ stats


def test_stats_counts(tmp_path):
    long = " ".join(["word"] * 450)
    medium = " ".join(["word"] * 100)
    convs = _convs(tmp_path, [
        SINGLE,
        ours("m", ("user", "q"), ("assistant", medium), meta={"domain": "cooking", "kind": "format"}),
        ours("l", ("user", "q"), ("assistant", long), ("user", "q2"), ("assistant", "ok"), source="other"),
    ])
    s = stats(convs)
    assert s["records"] == 3
    assert s["by_domain"] == {"cooking": 2, "(none)": 1}
    assert s["by_kind"] == {"single": 1, "format": 1, "(none)": 1}
    assert s["by_source"] == {"t": 2, "other": 1}
    assert s["by_length"] == {"short (<60 words)": 1, "medium (60-400)": 1, "long (>400)": 1}
    assert s["user_turns"] == {1: 2, 2: 1}
    assert s["answer_words"]["max"] == 451


# ------------------------------------------------------------------ CLI


def test_cli_convert_validate_stats(tmp_path, capsys):
    src = jl(tmp_path / "in.jsonl", [SINGLE, MULTI_NO_SYS])
    assert main(["data", "validate", str(src)]) == 0
    assert "2 records, all valid for purpose 'train'" in capsys.readouterr().out

    lima = tmp_path / "out" / "lima.jsonl"
    assert main(["data", "convert", str(src), str(lima), "--to", "lima"]) == 0
    rows = [json.loads(x) for x in lima.read_text().splitlines()]
    assert rows[1] == {"conversations": ["Hi", "Hello!", "Bye", "Goodbye."], "source": "chat"}
    assert not list(lima.parent.glob("*.tmp"))

    sg = tmp_path / "sg.json"
    assert main(["data", "convert", str(lima), str(sg), "--to", "sharegpt", "--input-format", "lima"]) == 0
    data = json.loads(sg.read_text())
    assert isinstance(data, list) and len(data) == 2
    assert [t["from"] for t in data[1]["conversations"]] == ["human", "gpt", "human", "gpt"]

    back = tmp_path / "back.jsonl"
    assert main(["data", "convert", str(sg), str(back)]) == 0
    assert [c.messages for c in read_conversations(back)] == [c.messages for c in read_conversations(src)]
    capsys.readouterr()

    assert main(["data", "stats", str(src), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["records"] == 2 and s["user_turns"] == {"1": 1, "2": 1}

    assert main(["data", "stats", str(src)]) == 0
    table = " ".join(capsys.readouterr().out.split())  # rich wraps long paths at the console width
    assert "2 records" in table and "cooking" in table


def test_cli_validate_prompt_purpose(tmp_path, capsys):
    prompts = jl(tmp_path / "p.jsonl", [ours("p", ("user", "q"))])
    assert main(["data", "validate", str(prompts), "--purpose", "prompt"]) == 0
    assert main(["data", "validate", str(prompts)]) == 2
    assert "must end with an assistant turn" in capsys.readouterr().err


def test_cli_bad_file_returns_2_with_line_number(tmp_path, capsys):
    src = jl(tmp_path / "bad.jsonl", [SINGLE, SINGLE | {"id": "z"}, ours("q", ("user", "q"), ("user", "q"))])
    assert main(["data", "validate", str(src)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:")
    assert f"{src}:3 messages[1].role" in err
    assert "Traceback" not in err


def test_cli_convert_multi_turn_to_alpaca_fails_cleanly(tmp_path, capsys):
    src = jl(tmp_path / "in.jsonl", [SINGLE, MULTI_NO_SYS])
    out = tmp_path / "alp.jsonl"
    assert main(["data", "convert", str(src), str(out), "--to", "alpaca"]) == 2
    assert "multi-turn" in capsys.readouterr().err
    assert not out.exists()


def test_cli_broken_json_line(tmp_path, capsys):
    src = tmp_path / "broken.jsonl"
    src.write_text(json.dumps(SINGLE) + "\n{not json\n" + json.dumps(MULTI) + "\n")
    assert main(["data", "stats", str(src)]) == 2
    assert f"{src}:2" in capsys.readouterr().err


def test_cli_missing_file(tmp_path, capsys):
    assert main(["data", "validate", str(tmp_path / "nope.jsonl")]) == 2
    assert "file not found" in capsys.readouterr().err


def test_cli_convert_to_json_in_a_new_folder(tmp_path):
    src = jl(tmp_path / "in.jsonl", [SINGLE])
    out = tmp_path / "new" / "out.json"
    assert main(["data", "convert", str(src), str(out)]) == 0
    assert len(json.loads(out.read_text())) == 1
