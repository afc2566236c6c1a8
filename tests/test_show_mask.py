"""`lima-align data show-mask` with a recipe: the mask exactly as that recipe's training builds it."""

from __future__ import annotations

import json
import re
import shutil

from lima_align import checkpoint as ck
from lima_align.cli import main
from lima_align.config import TurnsConfig

FIRST_ANSWER = "Put it in boiling water for nine minutes, then cool it."


def show(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["data", "show-mask", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_a_lora_recipe_ends_turns_with_eos(tiny_llama, examples_file, capsys):
    rc, out, _ = show(capsys, str(examples_file), "--recipe", "quickstart", f"model.name={tiny_llama}",
                      "train.method=lora")
    assert rc == 0
    assert "train.method=lora" in out and "data.max_seq_len=512" in out
    assert f"[[{FIRST_ANSWER}<eos>]]" in out and "<|eot|>" not in out


def test_frozen_embeddings_end_turns_with_eos(tiny_llama, examples_file, capsys):
    rc, out, _ = show(capsys, str(examples_file), "--recipe", "quickstart", f"model.name={tiny_llama}")
    assert rc == 0 and "train.method=full" in out
    assert f"[[{FIRST_ANSWER}<eos>]]" in out and "<|eot|>" not in out and "freeze_embeddings" in out


def test_without_a_recipe_full_fine_tuning_adds_a_new_end_of_turn(tiny_llama, examples_file, capsys):
    rc, out, _ = show(capsys, str(examples_file), "--model", str(tiny_llama))
    assert rc == 0 and "train.method=full" in out
    assert f"[[{FIRST_ANSWER}<|eot|>]]" in out


def test_flags_and_overrides_change_the_recipe(tiny_llama, examples_file, capsys):
    # --method full beats the recipe's lora; a key=value after the flags is an override too
    rc, out, _ = show(capsys, str(examples_file), "--recipe", "quickstart", "--method", "full",
                      f"model.name={tiny_llama}", "--index", "1", "data.loss_on=all", "train.freeze_embeddings=false")
    assert rc == 0 and "train.method=full" in out and "data.loss_on=all" in out
    body = out.split("context only\n\n")[1]
    assert "<|eot|>" in body and body.startswith("[[<bos>User:") and body.count("[[") == 1  # every token trained


def test_trimmed_to_the_recipes_max_seq_len(tiny_llama, examples_file, capsys):
    rc, out, _ = show(capsys, str(examples_file), "--recipe", "quickstart", f"model.name={tiny_llama}",
                      "data.max_seq_len=30")
    assert rc == 0
    n = int(re.search(r"# (\d+) tokens, \d+ trained", out).group(1))
    assert n == 30 and "trimmed from" in out and "data.max_seq_len (30)" in out
    assert "[[Put it" in out and FIRST_ANSWER not in out  # the answer's end is cut off, as training cuts it
    # trimmed so short that nothing trained is left: training drops it, and the page says so
    rc, out, _ = show(capsys, str(examples_file), "--recipe", "quickstart", f"model.name={tiny_llama}",
                      "data.max_seq_len=12")
    assert rc == 0 and "training drops this example: no trained token within data.max_seq_len (12)" in out


def test_an_example_the_recipe_drops_says_so(tiny_llama, examples_file, capsys):
    rc, out, _ = show(capsys, str(examples_file), "--recipe", "quickstart", f"model.name={tiny_llama}",
                      "data.max_example_tokens=5")
    assert rc == 0 and "training drops this example" in out and "data.max_example_tokens (5)" in out


def test_no_input_shows_the_recipes_own_training_set(tiny_llama, examples_file, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {{name: {tiny_llama}}}\ntrain: {{method: lora}}\n"
                      f"data: {{train: [{examples_file}], max_seq_len: 256}}\n")
    rc, out, _ = show(capsys, "--recipe", str(recipe), "--index", "3")
    assert rc == 0 and "[[Rome is the capital of Italy.<eos>]]" in out and "data.max_seq_len=256" in out
    # only overrides, no input: the first positional is an override, not a file
    rc, out, _ = show(capsys, "--recipe", str(recipe), "data.loss_on=last_assistant")
    assert rc == 0 and "data.loss_on=last_assistant" in out and f"[[{FIRST_ANSWER}<eos>]]" in out


def test_bad_index_and_bad_override_are_clean_errors(tiny_llama, examples_file, capsys):
    rc, _, err = show(capsys, str(examples_file), "--model", str(tiny_llama), "--index", "99")
    assert rc == 2 and "out of range" in err and "Traceback" not in err
    rc, _, err = show(capsys, str(examples_file), "--recipe", "quickstart", "data.max_seq_length=5")
    assert rc == 2 and "data.max_seq_len" in err and "Traceback" not in err


def test_a_plain_format_checkpoint_keeps_plain_turns_under_auto(tiny_llama, examples_file, capsys, tmp_path):
    # Checkpoints now save a chat template written from their plain format (hf_folder.py); going on training
    # from one with turns.format=auto must keep the plain format it was trained in, not switch to the template.
    folder = tmp_path / "ckpt"
    shutil.copytree(tiny_llama, folder)
    config = folder / "tokenizer_config.json"
    cfg = json.loads(config.read_text())
    cfg["chat_template"] = "{% for m in messages %}<<{{ m['role'] }}>>{{ m['content'] }}{% endfor %}"
    config.write_text(json.dumps(cfg))
    ck.write_meta(folder, ck.CheckpointMeta(TurnsConfig(format="plain", eot="<eos>"), base_model=str(tiny_llama),
                                            method="full", epoch=1, step=1, loss=1.0))
    rc, out, _ = show(capsys, str(examples_file), "--model", str(folder))
    assert rc == 0
    assert "<<assistant>>" not in out and "User:" in out
