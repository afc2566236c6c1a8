"""Dataset specs: what every command that reads a dataset accepts in place of a path, resolved here.

Wherever a dataset path is accepted, these names of the project's own seed dataset (shipped inside the
package) work too:
  seed            the single-turn training examples
  seed:dialogues  the 30 multi-turn dialogues
  seed:all        both
  seed:dev        50 prompts for choosing checkpoints
  seed:test       held-out prompts for evaluation
`alpaca_eval:FILE` reads the instructions of an AlpacaEval outputs file as prompts, and
`hf:ORG/NAME[:SPLIT]` or a `datasets.save_to_disk` folder is read through `datasets` (hf_data.py).
"""

from __future__ import annotations

from pathlib import Path

from .errors import LimaError
from .records import Conversation, Purpose, read_conversations

SEED_DIR = Path(__file__).parent / "data" / "seed"
SPLITS = {
    "seed": ["train.jsonl"],
    "seed:train": ["train.jsonl"],
    "seed:dialogues": ["dialogues.jsonl"],
    "seed:all": ["train.jsonl", "dialogues.jsonl"],
    "seed:dev": ["dev.jsonl"],
    "seed:test": ["test.jsonl"],
}


def is_seed(spec: str) -> bool:
    return spec.split(":")[0] == "seed" and not Path(spec).exists()


def spec_paths(spec: str) -> list[Path]:
    if not is_seed(spec):
        return [Path(spec)]
    if spec not in SPLITS:
        raise LimaError(f"unknown seed split {spec!r}", fix=f"use one of {', '.join(SPLITS)}")
    paths = [SEED_DIR / f for f in SPLITS[spec]]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise LimaError(f"seed files missing from the installed package: {', '.join(missing)}",
                        fix="reinstall lima-align")
    return paths


def load_dataset(spec: str, *, fmt: str = "auto", purpose: Purpose = "any") -> list[Conversation]:
    """Read a dataset spec (a path, a seed split, `alpaca_eval:FILE`, `hf:ORG/NAME[:SPLIT]` or a
    save_to_disk folder), validated for its purpose."""
    if spec.startswith("alpaca_eval:") and not Path(spec).exists():
        # AlpacaEval's instructions as prompts, with the ids its published outputs import under.
        from .importers import prompts_from_alpaca_eval

        return prompts_from_alpaca_eval(spec.split(":", 1)[1])
    from .hf_data import is_hf_spec, load_hf

    if is_hf_spec(spec):  # hf:ORG/NAME[:SPLIT] or a datasets.save_to_disk folder
        return load_hf(spec, fmt=fmt, purpose=purpose)
    out: list[Conversation] = []
    for p in spec_paths(spec):
        out += read_conversations(p, fmt="auto" if is_seed(spec) else fmt, purpose=purpose)
    return out
