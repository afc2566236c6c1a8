"""The GPU benchmarks exit 0 with a clear message where there is no CUDA device."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("name", ["gpu_train", "gpu_generate"])
def test_gpu_benchmark_skips_cleanly_without_cuda(name, monkeypatch, capsys, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    mod = _load(name)
    out = tmp_path / "result.json"
    assert mod.main(["--model", str(tmp_path / "no-model"), "--json-out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == "no CUDA device; skipped"
    assert not out.exists()


def test_flop_count_of_a_tiny_model(tiny_llama):
    from transformers import AutoModelForCausalLM

    mod = _load("gpu_train")
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    fc = mod.FlopCounter(model)
    emb = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    assert fc.body == sum(p.numel() for p in model.parameters()) - emb - head  # untied: both left out
    cfg = model.config
    want = 6 * fc.body * 10 + 6 * cfg.vocab_size * cfg.hidden_size * 4 + 6 * cfg.num_hidden_layers * 2 * 16 * 100
    assert fc.example(10, 4) == want
