"""Launcher configs, memory estimates and train's speed options (attention kernel, compile, checkpointing)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_examples

from lima_align.cli import main
from lima_align.distributed import (
    CONFIGS_DIR,
    KINDS,
    SHIPPED,
    full_finetune_gib,
    write_shipped_configs,
)
from lima_align.errors import LimaError


def test_generated_configs_parse_with_accelerates_loader(tmp_path):
    from accelerate.commands.config.config_args import load_config_from_file

    expect = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}
    for kind in KINDS:
        for nodes in (1, 2):
            out = tmp_path / f"{kind}-{nodes}.yaml"
            assert main(["config", "accelerate", "--kind", kind, "--gpus", "4", "--nodes", str(nodes),
                         "--output", str(out)]) == 0
            cfg = load_config_from_file(str(out))
            assert str(cfg.distributed_type).endswith(expect[kind])
            assert (cfg.num_processes, cfg.num_machines) == (4 * nodes, nodes)
            if nodes > 1:
                assert cfg.main_process_ip and cfg.main_process_port
            if kind == "fsdp":
                assert cfg.fsdp_config["fsdp_version"] == 2
                assert cfg.fsdp_config["fsdp_state_dict_type"] == "SHARDED_STATE_DICT"
            if kind == "zero3":
                ds = json.loads(Path(cfg.deepspeed_config["deepspeed_config_file"]).read_text())
                assert ds["zero_optimization"]["stage"] == 3
                assert ds["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    off = tmp_path / "off.yaml"
    assert main(["config", "accelerate", "--kind", "fsdp", "--offload", "--output", str(off)]) == 0
    assert load_config_from_file(str(off)).fsdp_config["fsdp_offload_params"] is True


def test_ddp_cannot_offload(tmp_path, capsys):
    assert main(["config", "accelerate", "--kind", "ddp", "--offload", "--output", str(tmp_path / "x.yaml")]) == 2
    assert "--kind fsdp" in capsys.readouterr().err


def test_shipped_configs_are_current(tmp_path):
    written = write_shipped_configs(tmp_path)
    assert {p.name for p in written} >= {f"{n}.yaml" for n in SHIPPED}
    for p in written:
        assert p.read_text() == (CONFIGS_DIR / p.name).read_text(), p.name


def test_memory_estimate_says_65b_needs_two_nodes_of_80gb():
    shape = dict(hidden=8192, layers=80)  # LLaMA-65B
    one_node = full_finetune_gib(65, 8, **shape)["total"]
    two_nodes = full_finetune_gib(65, 16, **shape)["total"]
    assert one_node > 80 > two_nodes  # the lima-65b recipe's header: 16 x 80 GB, or 8 with offload
    assert full_finetune_gib(65, 8, offload=True, **shape)["total"] < 80
    assert full_finetune_gib(1, 1, hidden=2048, layers=16)["total"] < 80  # a 1B full fine-tune fits one GPU


def _memory(capsys, *args):
    assert main(["config", "memory", "--gpus", "1", "--nodes", "1", *args]) == 0
    out = capsys.readouterr().out
    return out.splitlines()[0], float(next(x for x in out.splitlines() if "activations" in x).split()[1])


def test_memory_estimate_takes_the_models_shape_and_says_what_it_assumed(tiny_gemma, capsys):
    """A 7B model's activations were computed with LLaMA-65B's hidden size and depth (~4x too many)."""
    from transformers import AutoConfig

    from lima_align.distributed import model_shape

    line, act7 = _memory(capsys, "--params-b", "7", "--tokens", "65536")
    assert "hidden size 4096, 32 layers" in line and "assumed LLaMA-7B's shape" in line
    _, act65 = _memory(capsys, "--params-b", "65", "--tokens", "65536")
    gib = 1024 ** 3
    assert act7 == pytest.approx(65536 * (2 * 4096 * 32 + 34 * 4096) / gib, abs=0.05)
    assert act65 / act7 > 3.5  # the two shapes differ about 4x in activations
    line, _ = _memory(capsys, "--params-b", "7", "--hidden", "3000", "--layers", "10")
    assert "hidden size 3000, 10 layers (--params-b, --hidden/--layers as given)" in line
    # from a model folder or its config.json: parameters counted, shape read
    cfg = AutoConfig.from_pretrained(tiny_gemma)
    for where in (tiny_gemma, tiny_gemma / "config.json"):
        s = model_shape(model=str(where))
        assert (s.hidden, s.layers) == (cfg.hidden_size, cfg.num_hidden_layers) == (32, 2)
        assert s.params_b * 1e9 == _tiny_params(tiny_gemma) and "config" in s.source
    line, _ = _memory(capsys, "--model", str(tiny_gemma), "--layers", "4")
    assert "hidden size 32, 4 layers" in line and "--layers as given" in line


def _tiny_params(path):
    from transformers import AutoModelForCausalLM

    return sum(p.numel() for p in AutoModelForCausalLM.from_pretrained(path).parameters())


@pytest.mark.parametrize("args, where, what", [
    (["--params-b", "1"], "--params-b", "no model shape known for 1B"),   # no LLaMA size near: not guessed
    ([], "--params-b", "size is unknown"),
    (["--params-b", "nan"], "--params-b", "positive number"),
    (["--params-b", "7", "--hidden", "0"], "--hidden", "positive number"),
    (["--model", "/no/such/model"], "--model", "does not exist"),
])
def test_memory_estimate_refuses_what_it_cannot_know(args, where, what, capsys):
    assert main(["config", "memory", *args]) == 2
    err = capsys.readouterr().err
    assert f"error: {where}: " in err and what in err and "fix:" in err


def _recipe(model, data, out, *extra):
    from lima_align.config import load_recipe

    return load_recipe(None, [f"model.name={model}", f"data.train=[{data}]", f"train.output_dir={out}",
                              "train.batch_size=4", "train.epochs=1", "train.lr=3e-3", "train.save_from_epoch=1",
                              "train.save_to_epoch=1", "train.precision=fp32", "train.residual_dropout_top=0.0",
                              *extra])


def test_flash_attention_without_cuda_fails_before_any_model_is_loaded(tmp_path):
    import importlib.util

    import torch

    from lima_align.train import train

    if torch.cuda.is_available() and importlib.util.find_spec("flash_attn"):
        pytest.skip("this machine can run flash_attention_2")

    with pytest.raises(LimaError) as e:
        train(_recipe(tmp_path / "no-such-model", tmp_path / "no-data.jsonl", tmp_path / "run",
                      "train.attn_implementation=flash_attention_2"))
    assert "train.attn_implementation" in str(e.value) and "sdpa" in str(e.value)


def test_eager_attention_with_checkpointing_trains_as_sdpa(tiny_gemma, tmp_path, monkeypatch):
    """Packed rows stay apart under either kernel, with and without recomputation: same losses."""
    from torch import nn

    from lima_align.train import train

    compiled = []
    # The compile switch is checked for wiring only: inductor on a shared 2-core CPU takes minutes.
    monkeypatch.setattr(nn.Module, "compile", lambda self, **kw: compiled.append((type(self).__name__, kw)))
    data = write_examples(tmp_path / "train.jsonl", n=8)
    quiet = {"log": lambda *_: None}
    a = train(_recipe(tiny_gemma, data, tmp_path / "a"), **quiet)
    assert compiled == []
    b = train(_recipe(tiny_gemma, data, tmp_path / "b", "train.attn_implementation=eager",
                      "train.gradient_checkpointing=true", "train.compile=true"), **quiet)
    losses = [[json.loads(x)["loss"] for x in (r / "metrics.jsonl").read_text().splitlines()] for r in (a, b)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    assert [c[0] for c in compiled] == ["Gemma3DecoderLayer"] * 2 and compiled[0][1] == {"dynamic": True}


def test_gradient_checkpointing_is_non_reentrant(tiny_llama):
    from lima_align.config import load_recipe
    from lima_align.models import load_model
    from lima_align.train import build_model
    from lima_align.turns import TurnFormat

    r = load_recipe(None, [f"model.name={tiny_llama}", "train.gradient_checkpointing=true",
                           "train.attn_implementation=eager"])
    base = load_model(str(tiny_llama))
    model = build_model(r, TurnFormat(base.tokenizer, r.turns), base)
    assert model.is_gradient_checkpointing
    layer = model.get_decoder().layers[0]
    assert layer._gradient_checkpointing_func.keywords["use_reentrant"] is False
    assert model.config._attn_implementation == "eager"


@pytest.mark.parametrize("name", ["lima-65b", "lima-1b-full", "lora-1gpu", "qlora-1gpu"])
def test_scale_recipes_load(name):
    from lima_align.config import load_recipe

    r = load_recipe(name)
    assert r.train.epochs == 15
    # LIMA: 32 examples a step and top dropout 0.3 at 65B, 64 and 0.2 for its smaller models.
    assert (r.train.batch_size, r.train.residual_dropout_top) == ((32, 0.3) if name == "lima-65b" else (64, 0.2))
    assert (r.train.quantization == "4bit") == (name == "qlora-1gpu")
    assert (r.train.method == "full") == name.startswith("lima-")


def test_qlora_is_checked_before_any_model_is_loaded(tmp_path):
    import torch

    from lima_align.train import train

    cases = [(["train.method=full"], "train.method=lora")]
    if not torch.cuda.is_available():
        cases.append((["train.method=lora"], "needs a CUDA GPU"))
    for extra, words in cases:
        with pytest.raises(LimaError) as e:
            train(_recipe(tmp_path / "no-such-model", tmp_path / "no-data.jsonl", tmp_path / "run",
                          "train.quantization=4bit", *extra))
        assert words in str(e.value)


def test_kernel_choices_do_not_change_a_runs_identity(tiny_llama):
    from lima_align.config import load_recipe
    from lima_align.train import _train_identity

    base = [f"model.name={tiny_llama}"]
    a = _train_identity(load_recipe(None, base))
    assert a == _train_identity(load_recipe(None, [*base, "train.compile=true", "train.attn_implementation=eager"]))
    assert a != _train_identity(load_recipe(None, [*base, "train.quantization=4bit"]))
