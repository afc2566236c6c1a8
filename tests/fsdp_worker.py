"""Run by tests/test_scale_fsdp.py under `torchrun --nproc_per_node 2`: the FSDP2 path on CPU/gloo.

argv: model_dir data out stop_after_step. The run is interrupted right after the resumable
state of that step is written, as a killed job would be, then started again in the same
processes (one torchrun start instead of two), where it resumes from the sharded state.
"""

import json
import sys
from pathlib import Path

import accelerate

import lima_align.train as train_mod
from lima_align.config import load_recipe
from lima_align.distributed import force_fsdp_on_cpu

model_dir, data, out, stop_after = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


class CpuFsdpAccelerator(accelerate.Accelerator):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        force_fsdp_on_cpu(self)


class Interrupted(Exception):
    pass


real_save_state = train_mod._save_state


def save_state_then_maybe_stop(acc, state_dir, step):
    real_save_state(acc, state_dir, step)
    if acc.is_main_process:  # what the sharded state looks like on disk, for the test to check
        files = sorted(str(p.relative_to(state_dir)) for p in Path(state_dir).rglob("*") if p.is_file())
        Path(out, "state_files.json").write_text(json.dumps(files))
    if step == stop_after:
        raise Interrupted()


def save_and_record(acc, wrapped, *args, **kwargs):
    # The model is sharded: each rank holds a part of every sharded parameter.
    from torch.distributed.tensor import DTensor

    lm = acc.unwrap_model(wrapped).lm
    sharded = [n for n, p in lm.named_parameters() if isinstance(p, DTensor)]
    Path(out, f"rank{acc.process_index}.sharded.json").write_text(json.dumps(
        {"distributed_type": str(acc.distributed_type), "sharded": len(sharded),
         "params": len(list(lm.parameters()))}))
    return real_checkpoint(acc, wrapped, *args, **kwargs)


real_checkpoint = train_mod.save_checkpoint
train_mod.save_checkpoint = save_and_record
train_mod._save_state = save_state_then_maybe_stop
accelerate.Accelerator = CpuFsdpAccelerator  # train() imports it by name when called

recipe = load_recipe(None, [f"model.name={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}/run",
                            "train.batch_size=4", "train.epochs=2", "train.lr=3e-3", "train.save_from_epoch=2",
                            "train.save_to_epoch=2", "train.precision=fp32", "train.residual_dropout_top=0.0",
                            "train.state_every_steps=2"])
try:
    train_mod.train(recipe)
except Interrupted:
    pass
Path(out, "after_interrupt.json").write_text(json.dumps({
    "done": Path(out, "run", "done.json").exists(),
    "progress": json.loads(Path(out, "run", "state", "progress.json").read_text())}))
stop_after = -1
train_mod.train(recipe)
