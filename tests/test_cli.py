"""The command line end to end on a tiny model: train, show-mask, generate; errors are clean."""

from __future__ import annotations

import json

from lima_align.cli import main


def test_train_then_generate_through_the_cli(tiny_llama, examples_file, tmp_path, capsys):
    run = tmp_path / "run"
    rc = main(["train", "lima", "--data", str(examples_file), f"model.name={tiny_llama}", f"train.output_dir={run}",
               "train.epochs=1", "train.batch_size=4", "train.save_from_epoch=1", "train.save_to_epoch=1",
               "train.precision=fp32"])
    assert rc == 0
    saved = (run / "recipe.yaml").read_text()
    assert "epochs: 1" in saved and str(examples_file) in saved  # the resolved config sits in the run folder
    ckpt = run / "checkpoints" / "epoch-01"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"id": "q1", "messages": [{"role": "user", "content": "Hi?"}]}) + "\n")
    out = tmp_path / "gens.jsonl"
    rc = main(["generate", "--model", str(ckpt), "--prompts", str(prompts), "--output", str(out),
               "generate.max_new_tokens=3"])
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["prompt_id"] == "q1" and rec["tokens"]["output"] <= 3


def test_show_mask_marks_assistant_tokens(tiny_llama, examples_file, capsys):
    assert main(["data", "show-mask", str(examples_file), "--model", str(tiny_llama), "--eot", "eos"]) == 0
    out = capsys.readouterr().out
    assert "[[Put it in boiling water for nine minutes, then cool it.<eos>]]" in out
    assert "trained" in out


def test_bad_recipe_key_is_reported_without_traceback(capsys):
    assert main(["train", "lima", "train.learning_rate=1e-4", "train.epochs=0"]) == 2
    err = capsys.readouterr().err
    assert "train.learning_rate" in err and "did you mean 'train.lr'" in err
    assert "train.epochs" in err and "Traceback" not in err


def test_help_on_every_subcommand(capsys):
    import pytest

    for argv in (["--help"], ["train", "--help"], ["generate", "--help"], ["chat", "--help"], ["quickstart", "--help"],
                 ["data", "convert", "--help"], ["data", "show-mask", "--help"], ["models", "prepare", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
    assert "usage" in capsys.readouterr().out


def _gens(path, model, outputs):
    with path.open("w") as f:
        for i, out in enumerate(outputs):
            f.write(json.dumps({"id": f"{model}:p{i}", "prompt_id": f"p{i}", "model": model,
                                "messages": [{"role": "user", "content": f"Question {i}?"}], "output": out,
                                "finish_reason": "eot", "tokens": None, "decoding": {}}) + "\n")
    return path


def test_judge_stats_report_pipeline_with_the_length_judge(tmp_path, capsys):
    a = _gens(tmp_path / "a.jsonl", "base", ["short", "a much longer answer", "same", "x"])
    b = _gens(tmp_path / "b.jsonl", "aligned", ["a longer answer here", "tiny", "same", "yy"])
    out = tmp_path / "j.jsonl"
    assert main(["judge", "pairwise", str(a), str(b), "--judge", "longest", "--output", str(out),
                 "--cache", str(tmp_path / "cache.sqlite")]) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert {r["prompt_id"]: r["verdict"] for r in recs} == {"p0": "b", "p1": "a", "p2": "tie", "p3": "b"}
    assert all(len(r["votes"]) == 2 for r in recs)
    capsys.readouterr()
    assert main(["stats", str(out), "--json", "--n-boot", "200"]) == 0
    comp = json.loads(capsys.readouterr().out)["pairwise"][0]
    assert comp["counts"] == {"a": 1, "tie": 1, "b": 2, "null": 0} and comp["label"] == "base vs aligned (longest)"
    assert main(["report", str(out), "--output", str(tmp_path / "rep"), "--n-boot", "200"]) == 0
    assert (tmp_path / "rep" / "report.html").read_text().count("base vs aligned") >= 1


def test_missing_prompts_are_reported_before_judging(tmp_path, capsys):
    a = _gens(tmp_path / "a.jsonl", "base", ["one", "two", "three"])
    b = _gens(tmp_path / "b.jsonl", "aligned", ["one", "two"])
    rc = main(["judge", "pairwise", str(a), str(b), "--judge", "longest", "--output", str(tmp_path / "j.jsonl"),
               "--cache", str(tmp_path / "c.sqlite")])
    assert rc == 2 and "p2" in capsys.readouterr().err
    assert not (tmp_path / "j.jsonl").exists() or (tmp_path / "j.jsonl").read_text() == ""


def test_import_alpaca_eval_outputs(tmp_path):
    src = tmp_path / "outputs.json"
    src.write_text(json.dumps([{"instruction": "Name a colour.", "output": "Blue.", "generator": "davinci",
                                "dataset": "x"}]))
    assert main(["import", "alpaca_eval", str(src), "--output", str(tmp_path / "g.jsonl")]) == 0
    rec = json.loads((tmp_path / "g.jsonl").read_text())
    assert rec["model"] == "davinci" and rec["prompt_id"].startswith("ae-") and rec["output"] == "Blue."
