"""`lima-align data show-mask`: one training example with the tokens that carry loss marked, built the way
`train` builds it from a recipe (its model's tokenizer, turn format, end-of-turn choice for its train.method,
loss_on, and the max_seq_len / max_example_tokens rules), so what you see is what the run trains on."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .errors import LimaError

# flag -> the recipe key it sets (a flag overrides the recipe, as key=value overrides do)
FLAGS = {"model": "model.name", "format": "turns.format", "eot": "turns.eot", "method": "train.method",
         "loss_on": "data.loss_on"}


def cmd_show_mask(args: argparse.Namespace) -> int:
    from .checkpoint import turns_to_continue
    from .config import load_recipe
    from .dataset_specs import load_dataset
    from .models import load_tokenizer, resolve_model_path
    from .train import load_training_conversations, prepare_data
    from .turns import TurnFormat, training_method

    overrides = list(args.overrides or [])
    if args.input and "=" in args.input and not Path(args.input).exists():
        overrides, args.input = [args.input, *overrides], None  # only overrides were given
    flags = [f"{key}={getattr(args, f)}" for f, key in FLAGS.items() if getattr(args, f) is not None]
    r = load_recipe(args.recipe, flags + overrides)
    convs = (load_dataset(args.input, fmt=args.input_format, purpose="train") if args.input
             else load_training_conversations(r))  # no input: the recipe's own training set
    if not 0 <= args.index < len(convs):
        raise LimaError(f"--index {args.index} is out of range ({len(convs)} records)", where="--index",
                        fix=f"use 0..{len(convs) - 1}")
    folder = resolve_model_path(r.model.name, r.model.cache_dir)
    tok = load_tokenizer(folder, r.model.revision)
    fmt = TurnFormat(tok, turns_to_continue(folder, r.turns), method=training_method(r.train))  # as train() builds it
    d, conv = r.data, convs[args.index]
    full = fmt.encode(conv, d.loss_on)
    try:
        enc, note = prepare_data(r, fmt, [conv]).encoded[0], ""
    except LimaError:  # training drops this example: show it whole and say why
        enc = full
        too_long = d.max_example_tokens is not None and len(full.input_ids) > d.max_example_tokens
        note = ("training drops this example: " +
                (f"{len(full.input_ids)} tokens > data.max_example_tokens ({d.max_example_tokens})" if too_long
                 else f"no trained token within data.max_seq_len ({d.max_seq_len})"))
    if not note and len(full.input_ids) > len(enc.input_ids):
        note = f"trimmed from {len(full.input_ids)} to data.max_seq_len ({d.max_seq_len}) tokens, as training does"
    print(f"# recipe {args.recipe or '(built-in defaults)'}: train.method={r.train.method}, "
          f"data.loss_on={d.loss_on}, data.max_seq_len={d.max_seq_len}\n# {fmt.describe()}\n"
          "# trained tokens are shown [[like this]]; everything else is context only\n")
    print(fmt.render_mask(enc))
    print(f"\n# {len(enc.input_ids)} tokens, {enc.n_trained} trained" + (f"; {note}" if note else ""))
    return 0


def add_commands(data_sub: Any) -> None:
    """Register `show-mask` under `lima-align data`."""
    x = data_sub.add_parser(
        "show-mask", help="print an example with its trained tokens marked, as a recipe's training builds it",
        description="Print one training example with the tokens that carry loss marked, built exactly as `train` "
        "builds it from the recipe: its model's tokenizer, turn format, end-of-turn choice for its train.method, "
        "data.loss_on and data.max_seq_len trimming. Flags and key=value overrides change the recipe.")
    x.add_argument("input", nargs="?", help="dataset file or seed split (default: the recipe's training set)")
    x.add_argument("--input-format", default="auto", choices=["auto", "ours", "lima", "alpaca", "sharegpt"])
    x.add_argument("--recipe", help="recipe file or shipped name, e.g. quickstart (default: built-in defaults, "
                   "full fine-tuning)")
    x.add_argument("--index", type=int, default=0, help="which record (0-based)")
    x.add_argument("--model", help="whose tokenizer (sets model.name)")
    x.add_argument("--format", choices=["auto", "plain", "template"], help="sets turns.format")
    x.add_argument("--eot", help="end-of-turn choice (sets turns.eot)")
    x.add_argument("--method", choices=["full", "lora"], help="sets train.method, which decides the end of turn")
    x.add_argument("--loss-on", choices=["assistant", "last_assistant", "all"], help="sets data.loss_on")
    x.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. data.max_seq_len=256 turns.eot=eos")
    x.set_defaults(func=cmd_show_mask)
