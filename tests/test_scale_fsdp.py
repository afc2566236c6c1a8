"""The FSDP2 sharded path on CPU: two gloo processes under torchrun, interrupted, resumed, compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_examples


def _torchrun(worker: Path, args: list[str], port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(worker.parent)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", str(port), str(worker), *args],
                          check=False, capture_output=True, text=True, timeout=300, env=env)


def test_fsdp_two_processes_save_sharded_state_resume_and_match_one_process(tiny_gemma, tmp_path):
    model = tiny_gemma  # tied input/output embeddings and a sliding window: the harder case for sharding
    data = write_examples(tmp_path / "train.jsonl", n=10)
    worker = Path(__file__).with_name("fsdp_worker.py")
    args = [str(model), str(data), str(tmp_path)]

    # Interrupted right after the state of step 4 (of 6) is written, then started again.
    proc = _torchrun(worker, args + ["4"], 29531)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "after_interrupt.json").read_text()) == {"done": False, "progress": {"step": 4}}
    state = json.loads((tmp_path / "state_files.json").read_text())
    # Each rank wrote its own shard of the weights and of the optimizer (torch.distributed.checkpoint).
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):
        assert {f"accelerate/{part}/__0_0.distcp", f"accelerate/{part}/__1_0.distcp"} <= set(state)
    # The second start resumed from the sharded state and finished.
    assert "resuming after step 4 of 6" in proc.stdout + proc.stderr
    for rank in (0, 1):
        info = json.loads((tmp_path / f"rank{rank}.sharded.json").read_text())
        assert info["distributed_type"] == "DistributedType.FSDP"
        assert info["sharded"] == info["params"] > 0  # every parameter was a DTensor shard
    run = tmp_path / "run"
    assert (run / "done.json").exists() and not (run / "state").exists()
    metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]

    # The final checkpoint is a normal HF folder with the full (gathered) weights.
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    ckpt = run / "checkpoints" / "epoch-02"
    full = load_file(ckpt / "model.safetensors")
    base = AutoModelForCausalLM.from_pretrained(model)
    want = {k: tuple(v.shape) for k, v in base.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in full.items()}
    assert set(got) == set(want)
    emb = "model.embed_tokens.weight"
    assert got[emb][0] == want[emb][0] + 1  # the new end-of-turn row, and every row gathered
    assert AutoModelForCausalLM.from_pretrained(ckpt) is not None

    # Two sharded processes, interrupted and resumed, train exactly as one process does.
    from lima_align.config import load_recipe
    from lima_align.train import train

    single = train(load_recipe(None, [f"model.name={model}", f"data.train=[{data}]",
                                      f"train.output_dir={tmp_path}/single", "train.batch_size=4", "train.epochs=2",
                                      "train.lr=3e-3", "train.save_from_epoch=2", "train.save_to_epoch=2",
                                      "train.precision=fp32", "train.residual_dropout_top=0.0"]), log=lambda *_: None)
    one = [json.loads(x)["loss"] for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert one == pytest.approx([m["loss"] for m in metrics], rel=1e-4)
    w_single = load_file(single / "checkpoints" / "epoch-02" / "model.safetensors")
    for k in w_single:
        assert (full[k] - w_single[k]).abs().max().item() < 1e-4, k
    if "lm_head.weight" in full:  # still tied after sharding: one matrix, saved under both names
        assert (full["lm_head.weight"] == full[emb]).all()
