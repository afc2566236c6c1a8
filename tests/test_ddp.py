"""Two CPU processes (gloo) under torchrun: training runs and both ranks end with the same weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_examples


def test_two_process_training_keeps_ranks_in_sync(tiny_llama, tmp_path):
    data = write_examples(tmp_path / "train.jsonl", n=10)
    worker = Path(__file__).with_name("ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                           "--master_port", "29517", str(worker), str(tiny_llama), str(data), str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["processes"] == 2
    a, b = (tmp_path / "rank0.sha256").read_text(), (tmp_path / "rank1.sha256").read_text()
    assert a == b
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5, 6]
    assert sum(m["examples"] for m in metrics) == 20  # every example, once per epoch, across both ranks
    assert (tmp_path / "run" / "checkpoints" / "epoch-02" / "model.safetensors").exists()

    # The loss is normalised over the whole step, so one process sees the same losses as two.
    from lima_align.config import load_recipe
    from lima_align.train import train

    single = train(load_recipe(None, [f"model.name={tiny_llama}", f"data.train=[{data}]",
                                      f"train.output_dir={tmp_path}/single", "train.batch_size=4", "train.epochs=2",
                                      "train.lr=3e-3", "train.save_from_epoch=2", "train.save_to_epoch=2",
                                      "train.precision=fp32", "train.residual_dropout_top=0.0"]))
    one = [json.loads(x)["loss"] for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert one == pytest.approx([m["loss"] for m in metrics], rel=1e-4)
