"""`lima-align generate`, `chat` and `serve`: answers from a local model or an OpenAI-compatible API, in a file,
the terminal or over HTTP (cli.py adds them to the parser)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .cli_options import add_overrides, at_least, recipe_from_args
from .decoding import Decoding
from .errors import LimaError
from .jsonl import check_output
from .dataset_specs import load_dataset


def _model_overrides(args: argparse.Namespace) -> list[str]:
    extra = []
    if getattr(args, "model", None):
        extra.append(f"model.name={args.model}")
    for flag, key in (("prompts", "generate.prompts"), ("output", "generate.output"), ("backend", "generate.backend")):
        if getattr(args, flag, None):
            extra.append(f"{key}={getattr(args, flag)}")
    return extra


def cmd_generate(args: argparse.Namespace) -> int:
    if args.api_base or args.api_model:
        return _generate_from_api(args)
    # torch: loaded when a local model answers, so the rest of the CLI starts without it
    from .generate import generate_file

    r = recipe_from_args(args, _model_overrides(args))
    check_output(r.generate.output)  # before the model loads
    if args.method == "icl":  # the base model with in-context examples, no training (analyze/icl.py)
        from .analyze.icl import generate_icl_file  # torch, as above

        out = generate_icl_file(r.model, r.generate, examples=args.icl_examples)
        print(f"generations: {out}")
        return 0
    out = generate_file(r.model, r.turns, r.generate)
    print(f"generations: {out}")
    return 0


def _generate_from_api(args: argparse.Namespace) -> int:
    if not (args.api_base and args.api_model):
        raise LimaError("--api-base and --api-model go together", fix="give both, e.g. --api-base "
                        "http://127.0.0.1:8000/v1 --api-model my-model")
    at_least(args.concurrency, 1, "--concurrency", "use 1 or more requests in flight (default 8)")
    # httpx: loaded when answers are asked of an API, so the rest of the CLI starts without it
    from .api import ChatClient, generate_from_api

    g = recipe_from_args(args, _model_overrides(args)).generate
    check_output(g.output)
    prompts = load_dataset(g.prompts, purpose="prompt")[: g.limit]
    client = ChatClient(args.api_base, args.api_model, api_key_env=args.api_key_env, max_concurrency=args.concurrency)
    out = generate_from_api(client, prompts, Path(g.output), Decoding.from_config(g), g.model_label or args.api_model)
    print(f"generations: {out}")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    from .generate import chat  # torch: loaded when a chat starts

    r = recipe_from_args(args, _model_overrides(args))
    chat(r.model, r.turns, r.generate)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .serve import serve  # FastAPI, transformers and torch: loaded when a server starts

    if not 0 <= args.port <= 65535:
        raise LimaError(f"must be a TCP port from 0 to 65535, got {args.port}", where="--port",
                        fix="use e.g. 8000 (default), or 0 for any free port")
    r = recipe_from_args(args, _model_overrides(args))
    serve(r.model, r.turns, r.generate, host=args.host, port=args.port, max_body_mib=args.max_body_mib)
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
