"""Run by tests/test_ddp.py under `torchrun --nproc_per_node 2`: train, and record what each rank did.

argv: out, then the recipe overrides. Each rank writes rank<N>.sha256 (its weights when the checkpoint
is saved) and rank<N>.json: per step the examples of the step and the rows this rank ran, and the
collated rows of step 1 (token ids, positions, targets), so the test can compute step 1's loss itself.
"""

import hashlib
import json
import sys
from pathlib import Path

import lima_align.train as train_mod
from lima_align.config import load_recipe

out, overrides = sys.argv[1], sys.argv[2:]
real_save, real_rows, real_collate = train_mod.save_checkpoint, train_mod.rows_for_rank, train_mod.collate
steps: list[dict] = []
first_step_rows: list[dict] = []
rank = {"index": None}


def save_and_fingerprint(acc, wrapped, *args, **kwargs):
    # Every rank hashes the weights it holds; DDP must have kept them identical.
    h = hashlib.sha256()
    for name, t in sorted(acc.unwrap_model(wrapped).state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().numpy().tobytes())
    Path(out, f"rank{acc.process_index}.sha256").write_text(h.hexdigest())
    return real_save(acc, wrapped, *args, **kwargs)


def rows_spy(step, lengths, capacity, world_size, rank_index):
    rows = real_rows(step, lengths, capacity, world_size, rank_index)
    rank["index"] = rank_index
    steps.append({"examples": list(step), "rows": [r.examples for r in rows if not r.filler],
                  "fillers": sum(r.filler for r in rows)})
    return rows


def collate_spy(row, encoded, filler):
    cols = real_collate(row, encoded, filler)
    if len(steps) == 1 and not row.filler:
        first_step_rows.append(cols)
    return cols


train_mod.save_checkpoint = save_and_fingerprint
train_mod.rows_for_rank = rows_spy
train_mod.collate = collate_spy
train_mod.train(load_recipe(None, [f"train.output_dir={out}/run", *overrides]))
Path(out, f"rank{rank['index']}.json").write_text(json.dumps({"steps": steps, "first_step_rows": first_step_rows}))
