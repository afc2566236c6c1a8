"""Run by tests/test_ddp.py under `torchrun --nproc_per_node 2`: train, then record each rank's weights."""

import hashlib
import sys
from pathlib import Path

import lima_align.train as train_mod
from lima_align.config import load_recipe

model_dir, data, out = sys.argv[1:4]
real_save = train_mod.save_checkpoint


def save_and_fingerprint(acc, wrapped, *args, **kwargs):
    # Every rank hashes the weights it holds; DDP must have kept them identical.
    h = hashlib.sha256()
    for name, t in sorted(acc.unwrap_model(wrapped).state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().numpy().tobytes())
    Path(out, f"rank{acc.process_index}.sha256").write_text(h.hexdigest())
    return real_save(acc, wrapped, *args, **kwargs)


train_mod.save_checkpoint = save_and_fingerprint
recipe = load_recipe(None, [f"model.name={model_dir}", f"data.train=[{data}]", f"train.output_dir={out}/run",
                            "train.batch_size=4", "train.epochs=2", "train.lr=3e-3", "train.save_from_epoch=2",
                            "train.save_to_epoch=2", "train.precision=fp32", "train.residual_dropout_top=0.0"])
train_mod.train(recipe)
