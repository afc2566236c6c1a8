"""The dialogue commands end to end through `lima_align.cli.main`, on tiny models and the fake API."""

from __future__ import annotations

import json
from pathlib import Path

from fake_openai import FakeOpenAI

from lima_align.cli import main


def script(path: Path, n: int = 2) -> Path:
    path.write_text("".join(json.dumps({"id": f"s{i}", "turns": [f"How do I boil an egg? ({i})", "And soft?",
                                                                  "Thanks, anything else?"]}) + "\n"
                            for i in range(n)))
    return path


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_converse_then_judge_turns_and_report(tiny_gemma, tmp_path, capsys):
    conv = tmp_path / "conv.jsonl"
    rc = main(["converse", "--model", str(tiny_gemma), "--script", str(script(tmp_path / "s.jsonl")),
               "--output", str(conv), "--label", "tiny", "turns.format=plain", "generate.max_new_tokens=3",
               "generate.temperature=0"])
    assert rc == 0
    rs = lines(conv)
    assert [r["conversation_id"] for r in rs] == ["s0", "s1"] and all(len(r["finish_reasons"]) == 3 for r in rs)
    with FakeOpenAI(respond=lambda req: "Looks fine.\nRating: pass") as server:
        rc = main(["judge", "turns", str(conv), "--api-base", server.base_url, "--api-model", "judge",
                   "--output", str(tmp_path / "turns.jsonl"), "--cache", str(tmp_path / "c.sqlite")])
    assert rc == 0
    ratings = lines(tmp_path / "turns.jsonl")
    assert len(ratings) == 6 and {r["score"] for r in ratings} == {"pass"}
    assert sorted((r["conversation_id"], r["turn"]) for r in ratings)[:2] == [("s0", 1), ("s0", 2)]
    assert main(["dialogue", "report", str(tmp_path / "turns.jsonl"), "--conversations", str(conv),
                 "--output", str(tmp_path / "rep")]) == 0
    assert "Multi-turn dialogue" in (tmp_path / "rep" / "dialogue.html").read_text()
    assert main(["report", str(tmp_path / "turns.jsonl"), "--output", str(tmp_path / "main"), "--n-boot", "20"]) == 0
    assert "Multi-turn dialogue" in (tmp_path / "main" / "report.html").read_text()


def test_dialogue_eval_compares_two_models_with_the_length_baseline(tiny_gemma, tiny_llama, tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["dialogue", "eval", "--models", str(tiny_gemma), str(tiny_llama), "--labels", "single", "dialogues",
               "--script", str(script(tmp_path / "s.jsonl")), "--output", str(out), "--judge", "longest",
               "--cache", str(tmp_path / "c.sqlite"), "turns.format=plain", "generate.max_new_tokens=3"])
    assert rc == 0
    assert [len(lines(out / f"conversations-{x}.jsonl")) for x in ("single", "dialogues")] == [2, 2]
    verdicts = lines(out / "conversation-verdicts.jsonl")
    assert len(verdicts) == 2 and {v["unit"] for v in verdicts} == {"conversation"}
    assert {v["model_a"] for v in verdicts} == {"dialogues"}
    said = capsys.readouterr().out
    assert "no judge here can rate single turns" in said and "--kind turns --conversations" in said
    assert (out / "report" / "dialogue.html").exists() and not (out / "turn-ratings.jsonl").exists()
    # the judge-free turn format needs no judgment file at all
    convs = [str(out / f"conversations-{x}.jsonl") for x in ("single", "dialogues")]
    assert main(["dialogue", "report", "--conversations", *convs, "--output", str(tmp_path / "fmt")]) == 0
    summary = json.loads((tmp_path / "fmt" / "dialogue.json").read_text())
    assert {r["model"] for r in summary["format"]} == {"single", "dialogues"} and summary["turns"] == []
    assert len(summary["format_differences"]) == 1
    assert main(["dialogue", "report", "--output", str(tmp_path / "none")]) == 2
    assert "nothing to report" in capsys.readouterr().err


def test_user_errors_exit_2_with_a_fix(tmp_path, capsys):
    assert main(["converse", "--simulate", "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "--simulate needs --scenarios" in capsys.readouterr().err
    assert main(["converse", "--simulate", "--scenarios", "dialogue_eval", "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "--user-api-base" in capsys.readouterr().err
    assert main(["dialogue", "eval", "--runs", str(tmp_path / "none"), "--output", str(tmp_path / "e")]) == 2
    assert "no finished single-turn run" in capsys.readouterr().err
    assert main(["dialogue", "train", "train.output_dir=x"]) == 2
    assert "cannot be overridden" in capsys.readouterr().err


def test_dialogue_train_trains_both_variants_and_records_their_mixtures(tiny_gemma, tmp_path, capsys):
    rc = main(["dialogue", "train", "--runs", str(tmp_path / "runs"), f"model.name={tiny_gemma}",
               "data.max_seq_len=128", "train.micro_batch_tokens=512", "train.epochs=1", "train.save_from_epoch=1",
               "train.save_to_epoch=1", "train.batch_size=16", "train.precision=fp32"])
    assert rc == 0
    # the same train.epochs=1 for both: 3 steps against 5, so the comparison is no longer matched
    assert "3 steps (single-turn) and 5 steps (with-dialogues)" in capsys.readouterr().err
    mix = {v: json.loads((tmp_path / "runs" / v / "run.json").read_text())["data"]["mixture"]
           for v in ("single-turn", "with-dialogues")}
    # (at this tiny max_seq_len some long prompts leave no answer token to train, so they are dropped)
    assert set(mix["single-turn"]) == {"seed"} and mix["single-turn"]["seed"]["drawn"] == 40
    assert mix["with-dialogues"]["seed"] == mix["single-turn"]["seed"]  # the same single-turn examples
    assert mix["with-dialogues"]["seed:dialogues"]["drawn"] == 30
    assert 0 < mix["with-dialogues"]["seed:dialogues"]["trained"] <= 30
    assert all((tmp_path / "runs" / v / "done.json").exists() for v in mix)


def test_converse_through_an_api_model_and_the_model_flags_conflict(tmp_path, capsys):
    s = str(script(tmp_path / "s.jsonl", n=1))
    assert main(["converse", "--model", "x", "--api-base", "http://127.0.0.1:9/v1", "--api-model", "m",
                 "--script", s, "--output", str(tmp_path / "o.jsonl")]) == 2
    assert "either local" in capsys.readouterr().err
    with FakeOpenAI() as server:
        assert main(["converse", "--api-base", server.base_url, "--api-model", "served", "--script", s,
                     "--output", str(tmp_path / "api.jsonl"), "generate.max_new_tokens=16"]) == 0
        assert server.log[0]["max_tokens"] == 16
    (r,) = lines(tmp_path / "api.jsonl")
    assert r["model"] == "served" and r["messages"][-1]["content"] == "echo: Thanks, anything else?"


def test_a_local_model_plays_the_user(tiny_gemma, tmp_path):
    scen = tmp_path / "scen.jsonl"
    scen.write_text(json.dumps({"id": "s1", "scenario": "A cook who wants soup.", "opening": "Soup ideas?"}) + "\n")
    out = tmp_path / "sim.jsonl"
    assert main(["converse", "--model", str(tiny_gemma), "--simulate", "--scenarios", str(scen), "--turns", "2",
                 "--user-model", str(tiny_gemma), "--output", str(out), "turns.format=plain",
                 "generate.max_new_tokens=3"]) == 0
    (r,) = lines(out)
    assert r["mode"] == "simulated" and [m["role"] for m in r["messages"]] == ["user", "assistant"] * 2
    assert r["messages"][0]["content"] == "Soup ideas?" and r["messages"][2]["content"]  # written by the user model
    assert r["meta"]["user_model"] == f"{tiny_gemma}@local"


def test_the_two_variants_take_about_as_many_optimizer_steps():
    """The comparison is about dialogues, not training length (10 vs 18 steps measured a length effect)."""
    import math

    from lima_align.config import load_recipe

    steps = {}
    for v in ("single-turn", "with-dialogues"):
        r = load_recipe(v)
        n = sum(m.count for m in r.data.mix)
        steps[v] = r.train.epochs * math.ceil(n / r.train.batch_size)
        assert r.train.save_to_epoch == r.train.epochs  # the final checkpoint is the last epoch's
    assert steps == {"single-turn": 20, "with-dialogues": 18}
    from lima_align.dialogue.cli import planned_steps

    assert {v: planned_steps(load_recipe(v)) for v in steps} == steps  # what `dialogue train` checks
