"""The judging and reporting stage's commands: `judge pairwise|absolute`, `stats`, `report` and `import` (answers
from AlpacaEval or FastChat, or published judgments: MT-Bench votes, AlpacaEval annotations), with the grouping
and output options of `stats` and `report`. cli.py adds them to the parser; `judge turns|conversations` are the
dialogue stage's (dialogue/cli.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .cli_options import at_least, judge_options, judges_from_args
from .errors import LimaError
from .importers import import_alpaca_eval, import_fastchat_answers
from .jsonl import check_output, check_output_folder, write_jsonl_atomic
from .judgment_import import (
    ALPACA_EVAL_PEOPLE,
    MT_BENCH_PEOPLE,
    describe_repeats,
    import_alpaca_eval_annotations,
    import_mt_bench_judgments,
)
from .records import read_generations
from .verdicts import SCALES

SOURCES = ("mt_bench_judgments", "alpaca_eval_annotations")


def cmd_judge_pairwise(args: argparse.Namespace) -> int:
    from .judge import judge_pairwise  # here: the runner loads asyncio and SQLite, which `--help` need not

    summary = judge_pairwise(read_generations(args.a), read_generations(args.b), judges_from_args(args), args.output,
                             instructions_path=args.instructions, cache_path=args.cache,
                             max_concurrency=args.concurrency, allow_partial=args.partial, sources=(args.a, args.b))
    print(json.dumps(summary, indent=2))
    print(f"judgments: {args.output}")
    return 0


def cmd_judge_absolute(args: argparse.Namespace) -> int:
    from .judge import judge_absolute

    summary = judge_absolute(read_generations(args.generations), judges_from_args(args), args.output, scale=args.scale,
                             instructions_path=args.instructions, cache_path=args.cache,
                             max_concurrency=args.concurrency)
    print(json.dumps(summary, indent=2))
    print(f"judgments: {args.output}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    at_least(args.n_boot, 0, "--n-boot", "use 2000 (default), or 0 for no intervals")
    # numpy comes with these: loaded by the command, not by `lima-align --help`
    from . import stats
    from .agreement import parse_groups
    from .stats_text import format_summary

    s = stats.summarize_files(args.files, n_boot=args.n_boot, seed=args.seed, groups=parse_groups(args.group))
    print(json.dumps(s, indent=2) if args.json else format_summary(s, full=args.full, by_pair=args.by_pair))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    # the page's modules (Jinja2 templates, matplotlib charts) load only when a report is written
    from .agreement import parse_groups
    from .report import build_report

    at_least(args.n_boot, 0, "--n-boot", "use 2000 (default), or 0 for no intervals")
    check_output_folder(args.output)
    page = build_report([Path(p) for p in args.files], Path(args.output), title=args.title, n_boot=args.n_boot,
                        seed=args.seed, groups=parse_groups(args.group))
    print(f"report: {page}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    if args.source in SOURCES:
        return import_judgments(args)
    if len(args.input) > 1:
        raise LimaError(f"{args.source} takes one outputs file", where="input", fix="import each file on its own")
    if args.source == "alpaca_eval":
        records = import_alpaca_eval(args.input[0])
    else:
        records = import_fastchat_answers(args.input[0], args.questions)
    write_jsonl_atomic(args.output, records)
    print(f"imported {len(records)} answers into {args.output}")
    return 0


def import_judgments(args: Any) -> int:
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


def add_judge_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> Any:
    """`judge pairwise` and `judge absolute`; returns the `judge` group for the dialogue stage's judge commands."""
    jd = sub.add_parser("judge", help="pairwise or absolute judging by LLM judges or the length baseline") \
        .add_subparsers(dest="sub", required=True)
    jp = jd.add_parser("pairwise", help="A better / B better / neither, both orders, for two generation files",
                       description="LIMA's three-way preference for every prompt both files answered, judged in "
                       "both orders; missing or extra prompts are reported before anything is spent.")
    jp.add_argument("a", help="generations JSONL of model A")
    jp.add_argument("b", help="generations JSONL of model B")
    jp.add_argument("--partial", action="store_true", help="judge only the prompts both files answered")
    judge_options(jp)
    jp.set_defaults(func=cmd_judge_pairwise)
    ja = jd.add_parser("absolute", help="Fail / Pass / Excellent, or a 1-6 helpfulness score, per answer")
    ja.add_argument("generations", help="generations JSONL")
    ja.add_argument("--scale", default="fail_pass_excellent", choices=list(SCALES))
    judge_options(ja, compares=False)
    ja.set_defaults(func=cmd_judge_absolute)
    return jd


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`stats`, `report` and `import`."""
    for name, func, helptext in (("stats", cmd_stats, "win/tie/loss with CIs, agreement, biases, power"),
                                 ("report", cmd_report, "one HTML page and a JSON file with every number")):
        x = sub.add_parser(name, help=helptext, description=helptext + ", from judgments files.")
        also = "; also `analyze` summaries, and run folders (their loss and learning-rate chart)"
        x.add_argument("files", nargs="+", help="judgments JSONL files" + (also if name == "report" else ""))
        x.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")
        x.add_argument("--seed", type=int, default=0)
        add_summary_options(x, text=name == "stats")
        if name == "stats":
            x.add_argument("--json", action="store_true", help="print JSON")
        else:
            x.add_argument("--output", required=True, help="folder for report.html, report.json and charts/")
            x.add_argument("--title", default="lima-align evaluation report")
        x.set_defaults(func=func)

    im = sub.add_parser("import", help="import existing answers (AlpacaEval, FastChat) or published judgments",
                        description="Turn published model outputs into our generations format, so they can be "
                        "judged against your models: AlpacaEval's JSON list, or FastChat llm_judge answer JSONL; "
                        "or published pairwise judgments (MT-Bench's human and GPT-4 votes, AlpacaEval's "
                        "annotations) into our judgments format, for `stats` and `report`.")
    im.add_argument("source", choices=["alpaca_eval", "fastchat", *SOURCES])
    im.add_argument("input", nargs="+", help="the outputs file (judgments: one or more files)")
    im.add_argument("--output", required=True, help="generations (judgments) JSONL to write")
    add_import_options(im)
    im.add_argument("--questions", help="FastChat question.jsonl (default: question.jsonl beside the answers' folder)")
    im.set_defaults(func=cmd_import)
