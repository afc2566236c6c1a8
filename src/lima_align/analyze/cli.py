"""Subcommands of the analyze stage, registered on the main parser by cli.make_parser."""

from __future__ import annotations

import argparse
import json

from ..cli_options import in_recipe_range
from ..config import GenerateConfig
from .grid_cli import add_grid_commands


def cmd_shift(args: argparse.Namespace) -> int:
    in_recipe_range("generate", GenerateConfig, {
        "--temperature": ("temperature", args.temperature), "--repetition-penalty": ("repetition_penalty",
                                                                                     args.repetition_penalty),
        "--max-new-tokens": ("max_new_tokens", args.max_new_tokens), "--limit": ("limit", args.limit)})
    from .shift import analyze_shift

    out = analyze_shift(args.base, args.output, generations=args.aligned, aligned_model=args.aligned_model,
                        prompts=args.prompts, limit=args.limit, max_new_tokens=args.max_new_tokens,
                        temperature=args.temperature, repetition_penalty=args.repetition_penalty,
                        turns_format=args.format, eot=args.eot, dtype=args.dtype, batch_tokens=args.batch_tokens,
                        n_boot=args.n_boot)
    s = json.loads(out.read_text())
    shares = ", ".join(f"{c} {100 * s['shares'][c]['value']:.1f}%" for c in ("unshifted", "marginal", "shifted")
                       if s["shares"][c]["value"] is not None)
    print(f"{s['answers']} answers, {s['tokens']} tokens: {shares}")
    print(f"summary: {out}\nper-answer records: {s['records']}")
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from .retention import analyze_retention

    out = analyze_retention(args.base, args.aligned, args.output, texts=args.texts, mcq=args.mcq, dtype=args.dtype,
                            window=args.window, batch_tokens=args.batch_tokens, n_boot=args.n_boot)
    s = json.loads(out.read_text())
    for m in s["models"]:
        acc = m["mcq"]["accuracy"]["value"] if m.get("mcq") else None
        ppl = m["perplexity"]["value"] if m.get("perplexity") else None
        print(f"{m['role']:8} perplexity {ppl if ppl is None else f'{ppl:.2f}'}  "
              f"accuracy {acc if acc is None else f'{100 * acc:.1f}%'}  ({m['model']})")
    print(f"summary: {out}")
    return 0


def add_commands(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    """Add this stage's subcommands (imports of heavy libraries stay inside the command functions)."""
    an = sub.add_parser("analyze", help="what alignment changed: token shift, knowledge retention") \
        .add_subparsers(dest="sub", required=True)

    def common(x: argparse.ArgumentParser) -> None:
        x.add_argument("--base", required=True, help="the base model: 'embedded', a folder, or a hub id")
        x.add_argument("--output", required=True, help="summary JSON to write (`lima-align report` draws it)")
        x.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                       help="weights dtype (float32 keeps near-ties apart)")
        x.add_argument("--batch-tokens", type=int, default=1024,
                       help="tokens per forward pass (lower it if memory is short)")
        x.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples for the 95%% intervals")

    s = an.add_parser("shift", help="rank each aligned answer token under the base model (Lin et al. 2023)",
                      description="For each aligned answer, the base model's rank of every token given the same "
                      "context: shares unshifted (rank 1), marginal (2-3) and shifted (>3), where in the answer "
                      "shifts happen, and which tokens shift most. Resumable: per-answer records are appended beside "
                      "the summary (shift.json -> shift.records.jsonl).")
    common(s)
    s.add_argument("--aligned", metavar="GENERATIONS", help="aligned answers (a generations JSONL)")
    s.add_argument("--aligned-model", help="the aligned model: supplies the tokenizer and turn format, and "
                   "answers --prompts when --aligned is not given")
    s.add_argument("--prompts", default="seed:test", help="prompts for --aligned-model to answer")
    s.add_argument("--limit", type=int, help="answer only the first N prompts")
    s.add_argument("--max-new-tokens", type=int, default=512)
    s.add_argument("--temperature", type=float, default=0.0,
                   help="for answers generated here: 0 = greedy, so every token is the aligned model's first choice")
    s.add_argument("--repetition-penalty", type=float, default=1.0, help="for answers generated here")
    s.add_argument("--format", default="plain", choices=["plain", "template"],
                   help="turn format of the answers when no --aligned-model is given")
    s.add_argument("--eot", default="eos", help="end-of-turn token when no --aligned-model is given")
    s.set_defaults(func=cmd_shift)

    r = an.add_parser("retention", help="perplexity and multiple-choice knowledge, base vs aligned",
                      description="Did alignment make the model forget? Perplexity on held-out plain text and "
                      "multiple-choice accuracy scored by log-likelihood, base vs aligned (shipped sets by default).")
    common(r)
    r.add_argument("--aligned", required=True, help="the aligned model (a run checkpoint or folder)")
    r.add_argument("--texts", help="plain-text passages: JSONL with 'text' (and 'id', 'subject'), or a .txt file "
                   "with passages separated by blank lines (default: the shipped set)")
    r.add_argument("--mcq", help="multiple-choice JSONL {id, question, choices, answer, subject} "
                   "(default: the shipped set)")
    r.add_argument("--window", type=int, default=1024, help="sliding-window length for long texts")
    r.set_defaults(func=cmd_retention)

    add_grid_commands(sub)  # grid: ablate, select
