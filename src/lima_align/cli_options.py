"""Command-line pieces several command modules share: recipe overrides and the recipe they give, range
checks on numeric flags (`in_recipe_range` for flags that stand for recipe settings), and the judge flags with the
judges they build (judgments_cli.py's `judge` commands, dialogue/cli.py's `judge turns|conversations` and
`dialogue eval`)."""

from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any

from .config import load_recipe
from .errors import LimaError, ProblemList
from .judge_kinds import KINDS, JudgeSpec, kind_names, kinds_help, make_judges, unmet
from .judges import Price
from .recipe_loading import range_of
from .jsonl import check_output


def add_overrides(p: argparse.ArgumentParser) -> None:
    """The trailing key=value recipe overrides every recipe-reading command takes."""
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="recipe overrides, e.g. train.epochs=3 train.lr=2e-5 data.train=[my.jsonl]")


def recipe_from_args(args: argparse.Namespace, extra: list[str] | None = None) -> Any:
    """The recipe a command's --recipe (or recipe argument) names, with `extra` overrides (what its flags stand
    for) before the key=value overrides typed after it."""
    return load_recipe(getattr(args, "recipe", None), list(extra or []) + list(getattr(args, "overrides", []) or []))


def at_least(value: float, minimum: float, flag: str, fix: str) -> None:
    """A numeric flag in range (NaN fails too); argparse only checks the type."""
    if not value >= minimum:
        raise LimaError(f"must be at least {minimum}, got {value}", where=flag, fix=fix)


def in_recipe_range(section: str, cls: type, flags: dict[str, tuple[str, Any]]) -> None:
    """Flags that stand for recipe settings, checked against the recipe's own ranges (NaN and infinity
    fail too), so a flag accepts what the setting accepts. flags: flag -> (field of cls, value);
    a value of None (flag not given) is skipped."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems = ProblemList()
    for flag, (name, value) in flags.items():
        if value is None:
            continue
        rng = range_of(fields[name])
        if not (math.isfinite(value) and (rng is None or value in rng)):
            allowed = f"a number {rng}" if rng else "a finite number"
            problems.add(flag, f"must be {allowed}, got {value}",
                         f"use {allowed}, the range of the recipe's {section}.{name}")
    problems.raise_if_any()


def judges_from_args(args: argparse.Namespace) -> list[Any]:
    """The judges the judge flags ask for, every flag checked before any request is made."""
    at_least(args.concurrency, 1, "--concurrency", "use 1 or more requests in flight (default 8)")
    at_least(args.max_tokens, 1, "--max-tokens", "use a positive cap, e.g. 1024 (default)")
    for flag, price in (("--price-in", args.price_in), ("--price-out", args.price_out)):
        if price is not None:
            at_least(price, 0, flag, "give USD per 1M tokens as a number, e.g. 2.5")
    if getattr(args, "output", None):
        check_output(args.output)  # before any request is paid for
    if getattr(args, "cache", None):
        check_output(args.cache)
    spec = JudgeSpec(kinds=tuple(args.judge or ["api"]), api_base=args.api_base, api_models=tuple(args.api_model or ()),
                     api_key_env=args.api_key_env, concurrency=args.concurrency, max_tokens=args.max_tokens,
                     price=Price(args.price_in, args.price_out) if args.price_in is not None else None)
    offered = kind_names(rates=not getattr(args, "judge_compares", True))
    for _, what, fix in unmet(spec, {"api_base": "--api-base", "api_models": "--api-model"}, " "):
        others = [k for k in offered if k not in spec.kinds and not KINDS[k].needs]
        raise LimaError(what, fix=fix + "".join(f", or use --judge {k} ({KINDS[k].help})" for k in others))
    return make_judges(spec)


def judge_options(x: argparse.ArgumentParser, *, one_task: bool = True, compares: bool = True) -> None:
    """The judge flags `judges_from_args` reads; shared by `judge pairwise/absolute/turns/conversations` and
    `dialogue eval`.
    `one_task` adds --instructions and --output, which `dialogue eval` (two tasks, one output folder) lacks.
    `compares` False (a task that rates single answers) leaves out 'longest', which can only compare two."""
    kinds = kind_names(rates=not compares)
    x.add_argument("--judge", action="append", choices=kinds,
                   help=f"judge kind, repeatable (default: api): {kinds_help(kinds)}"
                   + ("" if compares else "; the others only compare two answers, so they cannot rate one"))
    x.set_defaults(judge_compares=compares)
    x.add_argument("--api-base", help="OpenAI-compatible base URL (a hosted API, or `lima-align serve`)")
    x.add_argument("--api-model", action="append", help="judge model name; repeat for several judges")
    x.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
    x.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
    x.add_argument("--cache", help="SQLite judgment cache (default: $LIMA_ALIGN_CACHE/judge_cache.sqlite)")
    x.add_argument("--max-tokens", type=int, default=1024, help="cap on each judge reply (a small local "
                   "judge on CPU wants a low cap)")
    x.add_argument("--price-in", type=float, help="USD per 1M prompt tokens, for cost accounting")
    x.add_argument("--price-out", type=float, help="USD per 1M completion tokens")
    if one_task:
        x.add_argument("--instructions", help="judge instructions file (default: the shipped one for this task)")
        x.add_argument("--output", required=True, help="judgments JSONL to append to (a rerun resumes)")
