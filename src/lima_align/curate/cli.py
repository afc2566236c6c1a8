"""Subcommands of the curate stage, registered on the main parser by cli.make_parser."""

from __future__ import annotations

import argparse

from ..config import load_recipe
from .select_cli import add_select_commands


def cmd_curate_run(args: argparse.Namespace) -> int:
    # the curation recipe and pipeline bring every source's parsers (about 70 ms): loaded when curation runs
    from .config import CurateRecipe
    from .pipeline import run_curate

    extra = [f"output_dir={args.output_dir}"] if args.output_dir else []
    recipe = load_recipe(args.recipe, extra + list(args.overrides or []), cls=CurateRecipe)
    out = run_curate(recipe, restart=args.restart, candidates_only=args.candidates_only)
    print(f"curation folder: {out}")
    for name in ("selected.jsonl", "candidates.jsonl", "eval_prompts.jsonl", "manifest.json", "report.html"):
        if (out / name).exists():
            print(f"  {name}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add this stage's subcommands (imports of heavy libraries stay inside the command functions)."""
    c = sub.add_parser("curate", help="turn raw dumps (StackExchange, wikiHow, Reddit) and datasets into a "
                       "small, diverse training set").add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    r = c.add_parser("run", help="sources -> LIMA's rules -> dedup -> selection -> outputs (resumable)",
                     description="Run a curation recipe (a YAML file or a shipped name such as curate-lima). "
                     "Writes candidates.jsonl, selected.jsonl, manifest.json and report.html into output_dir; "
                     "a rerun with the same recipe reuses finished stages.")
    r.add_argument("recipe", help="curation recipe file or shipped recipe name")
    r.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. stackexchange.paths=[dumps/] select.quotas={wikihow: 50}")
    r.add_argument("--output-dir", help="output folder (sets output_dir)")
    r.add_argument("--restart", action="store_true", help="replace a run of another config in the output folder")
    r.add_argument("--candidates-only", action="store_true",
                   help="stop after candidates.jsonl (then compare strategies with `curate select`)")
    r.set_defaults(func=cmd_curate_run)
    # `curate select`, `curate review` and `curate apply-review` live beside the selection strategies.
    add_select_commands(c)
