"""The `lima-align` command: the parser assembled from every stage's own commands, key=value overrides
after flags, and one error handler for all of them (errors.py's LimaError: exit 2; anything else: crash.py)."""

from __future__ import annotations

import argparse
import sys

from . import crash, generate_cli, judgments_cli, setup_cli, train_cli
from .analyze import cli as analyze_cli
from .annotate import cli as annotate_cli
from .answer_checks import add_commands as add_answers
from .curate import cli as curate_cli
from .dialogue import cli as dialogue_cli
from .errors import LimaError
from .export import add_commands as add_export


def make_parser() -> argparse.ArgumentParser:
    """Every stage's commands, each added by its own module; the order here is the order of `--help`.
    (The stage modules import torch, transformers and the web and chart libraries only inside the commands
    that need them, so building the parser stays quick.)"""
    p = argparse.ArgumentParser(prog="lima-align", description="Align a pretrained LM with a small curated "
                                "dataset, the LIMA way: curate -> train -> generate -> judge -> report.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_cli.add_commands(sub)  # train
    generate_cli.add_commands(sub)  # generate, chat, serve
    judge = judgments_cli.add_judge_commands(sub)  # judge pairwise|absolute
    dialogue_cli.add_judge_commands(judge)  # judge turns|conversations (multi-turn dialogue)
    judgments_cli.add_commands(sub)  # stats, report, import
    setup_cli.add_commands(sub)  # quickstart, config, data, models
    curate_cli.add_commands(sub)
    annotate_cli.add_commands(sub)
    analyze_cli.add_commands(sub)
    add_answers(sub)  # answers: judge-free figures of generations files
    dialogue_cli.add_commands(sub)  # converse, dialogue train|eval|report
    add_export(sub)  # export: a checkpoint as a standalone model
    return p


def main(argv: list[str] | None = None) -> int:
    sys_argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may come after flags (argparse stops filling the positional list at a flag)
    stray = [x for x in extra if x.startswith("-") or "=" not in x or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = list(args.overrides or []) + extra
    try:
        status = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, inside the handlers, not in Python's flush at exit
        return status
    except LimaError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError as e:
        return crash.end_quietly() if crash.stdout_reader_gone() else crash.report_unexpected(e, sys_argv)
    except Exception as e:  # a bug or the machine's failure: one line and a log, never a bare traceback
        return crash.report_unexpected(e, sys_argv)


if __name__ == "__main__":
    sys.exit(main())
