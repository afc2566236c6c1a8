"""`lima-align train`: fine-tune a base model with a recipe (cli.py adds it to the parser)."""

from __future__ import annotations

import argparse

from .cli_options import add_overrides, recipe_from_args


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train  # torch: loaded when a run starts, so the rest of the CLI starts without it

    extra = [f"data.train=[{','.join(args.data)}]"] if args.data else []
    run = train(recipe_from_args(args, extra), restart=args.restart)
    print(f"run folder: {run}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    t = sub.add_parser("train", help="fine-tune a base model with a recipe",
                       description="Fine-tune with a recipe (a YAML file or a shipped name: lima, quickstart). "
                       "A killed run resumes when started again with the same recipe.")
    t.add_argument("recipe", help="recipe file or shipped recipe name")
    t.add_argument("--restart", action="store_true", help="discard an existing run in the output folder")
    t.add_argument("--data", action="append", metavar="SPEC",
                   help="training data (repeatable): a file or seed, seed:dialogues, seed:all (sets data.train)")
    add_overrides(t)
    t.set_defaults(func=cmd_train)
