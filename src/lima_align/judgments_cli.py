"""Command-line parts for published judgments and pooled agreement: `import mt_bench_judgments|alpaca_eval_annotations`
and the grouping / output options of `stats` and `report` (cli.py wires them in)."""

from __future__ import annotations

import argparse
from typing import Any

from .errors import LimaError

SOURCES = ("mt_bench_judgments", "alpaca_eval_annotations")


def add_summary_options(p: argparse.ArgumentParser, *, text: bool) -> None:
    p.add_argument("--group", action="append", default=[], metavar="PREFIX=NAME",
                   help="pool judges whose name starts with PREFIX as NAME for agreement (repeatable; first match "
                        "wins; default: people (human:*) together, each model judge alone), e.g. "
                        "--group human:expert_=experts")
    if text:
        p.add_argument("--by-pair", action="store_true", help="also print agreement per judge pair and model pair")
        p.add_argument("--full", action="store_true", help="print every single person's rows, not only pooled ones")


def add_import_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--people", action="append", metavar="PREFIX",
                   help="judge names starting with PREFIX are people, imported as human:NAME (repeatable; default: "
                        "expert_ and author_ for MT-Bench, human for AlpacaEval)")
    p.add_argument("--judge", help="annotator name for AlpacaEval annotations that carry none")


def import_judgments(args: Any) -> int:
    from .jsonl import check_output, write_jsonl_atomic
    from .judgment_import import (
        ALPACA_EVAL_PEOPLE,
        MT_BENCH_PEOPLE,
        describe_repeats,
        import_alpaca_eval_annotations,
        import_mt_bench_judgments,
    )

    if args.questions:
        raise LimaError("--questions is for fastchat answers", where="--questions", fix="leave it out")
    check_output(args.output)
    if args.source == "mt_bench_judgments":
        if args.judge:
            raise LimaError("--judge names AlpacaEval annotators", where="--judge",
                            fix="leave it out: MT-Bench votes name their judge")
        records, repeats = import_mt_bench_judgments(args.input, people=args.people or MT_BENCH_PEOPLE)
    else:
        records, repeats = import_alpaca_eval_annotations(args.input, people=args.people or ALPACA_EVAL_PEOPLE,
                                                          judge=args.judge)
    write_jsonl_atomic(args.output, records)
    judges = {r["judge"] for r in records}
    people = sum(j.startswith("human:") for j in judges)
    for line in describe_repeats(repeats):
        print(line)
    print(f"imported {len(records)} judgments by {people} people and {len(judges) - people} other judges "
          f"into {args.output}")
    return 0
