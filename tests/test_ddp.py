"""Two CPU processes (gloo) under torchrun: both ranks train, the loss is normalised over the whole step's
trained tokens (checked against a computation of our own), and both ranks end with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_examples


def recipe(model, data) -> list[str]:
    # Rows of at most 50 tokens hold one example each (the examples are 30-49 tokens), so a step of 2-4
    # examples makes 2-4 rows and each rank gets at least one: both do work in every step. EOS ends a
    # turn, so the model is the saved one (no new token row) and step 1 can be recomputed from it.
    return [f"model.name={model}", f"data.train=[{data}]", "data.max_seq_len=50", "train.micro_batch_tokens=50",
            "turns.eot=eos", "train.batch_size=4", "train.epochs=2", "train.lr=3e-3", "train.save_from_epoch=2",
            "train.save_to_epoch=2", "train.precision=fp32", "train.residual_dropout_top=0.0"]


def step_one_reference(model_dir, rows) -> tuple[float, int]:
    """Sum of token cross-entropies over a rank's rows with the initial weights, and its trained tokens."""
    from transformers import AutoModelForCausalLM

    from lima_align.turns import IGNORE

    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for r in rows:
            logits = model(input_ids=torch.tensor([r["input_ids"]]),
                           position_ids=torch.tensor([r["position_ids"]])).logits[0]
            tgt = torch.tensor(r["targets"])
            keep = tgt != IGNORE
            total += torch.nn.functional.cross_entropy(logits[keep], tgt[keep], reduction="sum").item()
            tokens += int(keep.sum())
    return total, tokens


def test_two_process_training_normalises_the_loss_over_both_ranks(tiny_llama, tmp_path):
    data = write_examples(tmp_path / "train.jsonl", n=10)
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", str(worker), str(tmp_path), *recipe(tiny_llama, data)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["processes"] == 2
    assert (tmp_path / "rank0.sha256").read_text() == (tmp_path / "rank1.sha256").read_text()
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert sum(m["examples"] for m in metrics) == 20  # every example, once per epoch, across both ranks
    assert (tmp_path / "run" / "checkpoints" / "epoch-02" / "model.safetensors").exists()

    # Both ranks worked in every step, on disjoint rows that together are the step's examples.
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]["steps"]) == len(ranks[1]["steps"]) == 6
    for s0, s1 in zip(ranks[0]["steps"], ranks[1]["steps"], strict=True):
        assert s0["examples"] == s1["examples"] and s0["rows"] and s1["rows"]
        assert sorted(i for r in s0["rows"] + s1["rows"] for i in r) == sorted(s0["examples"])

    # Step 1 by hand: (sum of token losses on both ranks) / (trained tokens of the whole step).
    (sum0, tok0), (sum1, tok1) = (step_one_reference(tiny_llama, r["first_step_rows"]) for r in ranks)
    assert tok0 > 0 and tok1 > 0 and metrics[0]["trained_tokens"] == tok0 + tok1
    want = (sum0 + sum1) / (tok0 + tok1)
    assert metrics[0]["loss"] == pytest.approx(want, abs=2e-5)
    # ... which tells the right normalisation from the plausible wrong ones
    for wrong in ((sum0 / tok0 + sum1 / tok1) / 2, sum0 / tok0, sum1 / tok1, (sum0 + sum1) / 2 / (tok0 + tok1)):
        assert abs(wrong - want) > 1e-3

    # Gradients too: one process trains to the same losses as two.
    from lima_align.config import load_recipe
    from lima_align.train import train

    single = train(load_recipe(None, [*recipe(tiny_llama, data), f"train.output_dir={tmp_path}/single"]))
    one = [json.loads(x)["loss"] for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert one == pytest.approx([m["loss"] for m in metrics], rel=1e-4)
