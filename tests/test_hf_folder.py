"""Checkpoints and exported models work in plain transformers (issue 19): the chat template gives exactly
lima-align's prompt ids, generation_config.json stops at the end of turn, greedy answers are lima-align's.

What transformers makes of a folder is checked in a separate Python process that never imports
lima_align (CHECK below), so nothing of ours can make it pass; lima-align's side runs here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open

from conftest import build_model, write_examples
from lima_align.cli import main
from lima_align.config import GenerateConfig, ModelConfig, TurnsConfig, load_recipe
from lima_align.errors import LimaError
from lima_align.export import export
from lima_align.generate import generate_file, load_for_generation
from lima_align.records import Message
from lima_align.train import train

CHECK = r'''
import json, sys
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
spec = json.loads(sys.argv[1])
out = []
for case in spec:
    tok = AutoTokenizer.from_pretrained(case["folder"])
    def ids(conv, gen):
        x = tok.apply_chat_template(conv, add_generation_prompt=gen, tokenize=True, return_dict=True)
        return list(x["input_ids"])
    model = AutoModelForCausalLM.from_pretrained(case["folder"], dtype=torch.float32)
    gc = GenerationConfig.from_pretrained(case["folder"])
    stops = gc.eos_token_id if isinstance(gc.eos_token_id, list) else [gc.eos_token_id]
    answers = []
    for conv in case["prompts"]:
        inputs = tok.apply_chat_template(conv, add_generation_prompt=True, return_dict=True, return_tensors="pt")
        extra = {"stop_strings": ["\nUser:"], "tokenizer": tok} if case["plain"] else {}
        # greedy, and the prompt left unpenalised (lima-align penalises generated tokens only)
        res = model.generate(**inputs, do_sample=False, repetition_penalty=1.0, max_new_tokens=case["max_new"],
                             **extra)
        new = res[0, inputs["input_ids"].shape[1]:].tolist()
        cut = next((i for i, t in enumerate(new) if t in stops), None)
        text = tok.decode(new[:cut] if cut is not None else new, skip_special_tokens=True)
        if case["plain"] and "\nUser:" in "\n" + text:
            text = ("\n" + text).split("\nUser:")[0][1:]
        answers.append({"text": text.strip(), "eot": cut is not None})
    out.append({"prompt_ids": [ids(c, True) for c in case["prompts"]],
                "full_ids": [ids(c, False) for c in case["full"]],
                "answers": answers, "stops": stops, "temperature": gc.temperature, "top_p": gc.top_p,
                "repetition_penalty": gc.repetition_penalty})
assert "lima_align" not in sys.modules
print(json.dumps(out))
'''

TRAIN = ["train.batch_size=8", "train.lr=3e-2", "train.lr_final=3e-3", "train.residual_dropout_top=0.0",
         "train.precision=fp32", "train.state_every_steps=100"]

# Several turns, with and without a system message, as transformers users send them.
PROMPTS = [
    [{"role": "user", "content": "How do I boil an egg?"}],
    [{"role": "user", "content": "Write a poem about the sea."},
     {"role": "assistant", "content": "Waves fold and unfold under a grey sky."},
     {"role": "user", "content": "What is the capital of Italy?"}],
    [{"role": "system", "content": "Answer in one line."}, {"role": "user", "content": "Explain gravity to a child."}],
]
FULL = [p + [{"role": "assistant", "content": "Rome is the capital of Italy."}] for p in PROMPTS]


def run_training(model: Path, data: Path, out: Path, epochs: int, *extra: str) -> Path:
    recipe = load_recipe(None, [f"model.name={model}", f"data.train=[{data}]", f"train.output_dir={out}",
                                f"train.epochs={epochs}", f"train.save_from_epoch={epochs}",
                                f"train.save_to_epoch={epochs}", *TRAIN, *extra])
    run = train(recipe, log=lambda *a: None)
    return run / "checkpoints" / f"epoch-{epochs:02d}"


def with_chatml(folder: Path) -> Path:
    """A tiny model whose tokenizer has its own chat template (ChatML-like), for turns.format=template."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.resize_token_embeddings(len(tok))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def lima_side(folder: Path, tmp: Path, max_new: int) -> dict:
    """What lima-align makes of the same conversations: prompt ids, and `generate` at temperature 0."""
    lm, fmt = load_for_generation(ModelConfig(name=str(folder), dtype="float32"), TurnsConfig())
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"id": f"p{i}", "messages": p}) + "\n" for i, p in enumerate(PROMPTS)))
    out = generate_file(ModelConfig(name=str(folder), dtype="float32"), TurnsConfig(),
                        GenerateConfig(prompts=str(prompts), output=str(tmp / "gens.jsonl"), temperature=0,
                                       repetition_penalty=1.0, max_new_tokens=max_new, batch_size=1),
                        lm_fmt=(lm, fmt), log=lambda *a: None)
    gens = {r["prompt_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    msgs = [[Message(m["role"], m["content"]) for m in p] for p in PROMPTS]
    full = [[Message(m["role"], m["content"]) for m in p] for p in FULL]
    return {"prompt_ids": [fmt.encode_prompt(m) for m in msgs], "full_ids": [fmt.encode(m).input_ids for m in full],
            "answers": [{"text": gens[f"p{i}"]["output"], "eot": gens[f"p{i}"]["finish_reason"] == "eot"}
                        for i in range(len(PROMPTS))],
            "stops": fmt.stop_ids, "plain": fmt.kind == "plain",
            "prompt_texts": [fmt.tok.decode(fmt.encode_prompt(m)) for m in msgs]}


def transformers_side(cases: list[tuple[Path, bool]], max_new: int) -> list[dict]:
    spec = [{"folder": str(f), "plain": plain, "prompts": PROMPTS, "full": FULL, "max_new": max_new}
            for f, plain in cases]
    res = subprocess.run([sys.executable, "-c", CHECK, json.dumps(spec)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """Checkpoints of four short runs on tiny models, and the LoRA one exported."""
    d = tmp_path_factory.mktemp("hf-folders")
    data = write_examples(d / "train.jsonl")
    gemma = build_model(d / "gemma", "gemma3")  # ties its output layer to the embeddings
    llama = build_model(d / "llama", "llama")
    chatml = with_chatml(build_model(d / "chatml", "llama", seed=1))
    # Long enough for the model to learn to end its turn, so stopping there is checked too.
    out = {"plain-new-eot": run_training(gemma, data, d / "full", 30),
           "plain-eos-system": run_training(llama, data, d / "eos", 2, "turns.eot=eos", "turns.system=Be brief."),
           "template-system": run_training(chatml, data, d / "tmpl", 2, "turns.system=Be brief."),
           "lora": run_training(gemma, data, d / "lora", 4, "train.method=lora", "train.lr=1e-1")}
    out["lora-exported"] = export(out["lora"], d / "exported", log=lambda *a: None)
    return out


def test_checkpoint_folders_prompt_and_answer_in_plain_transformers_as_in_lima_align(folders, tmp_path):
    names = ["plain-new-eot", "plain-eos-system", "template-system", "lora-exported"]
    ours = {}
    for n in names:
        (tmp_path / n).mkdir()
        ours[n] = lima_side(folders[n], tmp_path / n, 24)
    theirs = dict(zip(names, transformers_side([(folders[n], ours[n]["plain"]) for n in names], 24)))
    for n in names:
        assert theirs[n]["prompt_ids"] == ours[n]["prompt_ids"], n
        assert theirs[n]["full_ids"] == ours[n]["full_ids"], n
        assert sorted(theirs[n]["stops"]) == sorted(ours[n]["stops"]), n
        assert theirs[n]["answers"] == ours[n]["answers"], n
        assert (theirs[n]["temperature"], theirs[n]["top_p"], theirs[n]["repetition_penalty"]) == (0.7, 0.9, 1.2)
    # The longer run learned to end its turn on a training question: transformers stopped at the end-of-turn
    # token there, as lima-align did (the answers are equal above), not at the token limit.
    first = theirs["plain-new-eot"]["answers"][0]
    assert first["eot"] and first["text"].startswith("Put it in boiling water"), first
    # The system text a run was trained with comes first when a conversation brings none.
    for n in ("plain-eos-system", "template-system"):
        texts = ours[n]["prompt_texts"]
        assert "Be brief." in texts[0] and "Be brief." in texts[1], n
        assert "Be brief." not in texts[2] and "Answer in one line." in texts[2], n
    assert "<|im_start|>system" in ours["template-system"]["prompt_texts"][0]
    assert len(ours["plain-new-eot"]["stops"]) == 2  # its own end-of-turn token and EOS


def test_exported_lora_answers_like_the_lora_checkpoint_and_stays_tied(folders, tmp_path):
    lora, exported = folders["lora"], folders["lora-exported"]
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    assert lima_side(lora, tmp_path / "a", 24)["answers"] == lima_side(exported, tmp_path / "b", 24)["answers"]
    assert not (exported / "adapter_config.json").exists()
    config = json.loads((exported / "config.json").read_text())
    assert config.get("tie_word_embeddings", True) is True
    with safe_open(str(exported / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.embed_tokens.weight" in keys and "lm_head.weight" not in keys


def test_model_card_names_base_data_hashes_recipe_and_prompting(folders):
    import hashlib

    ckpt = folders["plain-new-eot"]
    card = (ckpt / "README.md").read_text()
    data = ckpt.parent.parent.parent / "train.jsonl"
    assert hashlib.sha256(data.read_bytes()).hexdigest() in card
    assert str(ckpt.parent.parent.parent / "gemma") in card and "method: full" in card
    assert "apply_chat_template" in card and "<|eot|>" in card and "repetition penalty" in card
    assert "gives exactly the token ids" in card
    lora_card = (folders["lora"] / "README.md").read_text()
    assert "library_name: peft" in lora_card and "GenerationConfig.from_pretrained" in lora_card
    assert "library_name: transformers" in (folders["lora-exported"] / "README.md").read_text()
    # The export keeps the hashes taken when the checkpoint was saved.
    assert hashlib.sha256(data.read_bytes()).hexdigest() in (folders["lora-exported"] / "README.md").read_text()


def test_export_command_writes_bfloat16_and_refuses_a_used_folder(folders, tmp_path, capsys):
    out = tmp_path / "bf16"
    assert main(["export", str(folders["plain-new-eot"]), "--output", str(out), "--dtype", "bfloat16"]) == 0
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert (out / "chat_template.jinja").exists() and (out / "generation_config.json").exists()
    assert main(["export", str(folders["plain-new-eot"]), "--output", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err
    (tmp_path / "a-file").write_text("x")
    assert main(["export", str(folders["plain-new-eot"]), "--output", str(tmp_path / "a-file" / "m")]) == 2
    assert "is a file" in capsys.readouterr().err
    with pytest.raises(LimaError, match="not a lima-align checkpoint"):
        export(tmp_path, tmp_path / "x")


def test_an_output_layer_that_differs_from_the_embeddings_is_saved_untied_and_kept(tiny_gemma, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from lima_align.export import keep_tied

    model = AutoModelForCausalLM.from_pretrained(tiny_gemma)
    emb = model.get_input_embeddings().weight
    model.lm_head.weight = torch.nn.Parameter(emb.detach().clone())  # equal values, two tensors: tied again
    assert keep_tied(model) and model.lm_head.weight is emb
    model.lm_head.weight = torch.nn.Parameter(emb.detach().clone() + 0.01)  # a merge changed one of them
    assert not keep_tied(model)
    model.save_pretrained(tmp_path / "m")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert torch.equal(back.lm_head.weight, model.lm_head.weight)
    assert torch.equal(back.get_input_embeddings().weight, emb)


def test_model_card_says_what_a_prepared_base_is(tmp_path):
    from lima_align.model_card import base_note

    (tmp_path / "lima_align_model.json").write_text(json.dumps({"note": "pretrained Gemma 3 270M",
                                                                "source": "PyPI pkg", "gguf_sha256": "ab12"}))
    assert base_note(str(tmp_path)) == " (pretrained Gemma 3 270M; PyPI pkg; GGUF sha256 `ab12`)"
    assert base_note(str(tmp_path / "nope")) == "" and base_note("org/model") == ""
